"""Checks of notebook 01's submission part: what the MSA demands before MAIL, and whose senders it takes.

Both are predictions, judged once (`first_answer`), against what the lab's real submission server
answers to a session the check opens itself; a wrong prediction is told how to find out, never the reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..i18n import N_, _, ngettext
from ..net.replies import Reply
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank, is_placeholder

__all__ = ["check_starttls_prediction", "check_sender_prediction", "SENDER_CANDIDATES"]

PREDICT_530 = N_("Exercise 3 · predict the reply")
SENDERS = N_("Exercise 4 · predict the MSA's sender check")

MSA_HOST = "smtp.example.org"
ALICE = "alice@example.org"
# The envelope senders of exercise 4, tried after logging in as Alice: her own address, her address with the
# domain in capitals (RFC 5321 §2.4: domain names are case-insensitive), another name at her own domain, Bob's
# address at another provider, and the null sender that only bounces use (RFC 5321 §4.5.5).
SENDER_CANDIDATES = ("alice@example.org", "alice@EXAMPLE.ORG", "carol@example.org", "bob@example.net", "<>")
# English and Spanish words (the Spanish edition's learners may answer in Spanish).
_ACCEPT = {"accept", "accepted", "250", "yes", "ok", "acepta", "aceptado", "aceptar", "aceptada", "sí", "si"}
_REFUSE = {"refuse", "refused", "reject", "rejected", "no", "5xx", "553", "rechaza", "rechazado", "rechazar",
           "rechazada"}



def _said(reply: Reply | None) -> str:
    if reply is None:
        return "nothing"
    first = reply.lines[0] if reply.lines else ""
    return " ".join(str(part) for part in (reply.code, reply.enhanced, first) if part)


# --- exercise 3: MAIL FROM before STARTTLS and AUTH ---

_WRONG_GUESSES = {
    250: N_("250 would mean the sender was accepted. Would a provider start a transaction for a client that has "
         "not said who it is, on a connection anyone can read?"),
    220: N_("220 is the greeting, and the answer to STARTTLS ('go ahead'); a MAIL command never gets it."),
    354: N_("354 is the server's 'go ahead, send the message', and only DATA gets it."),
    535: N_("535 answers a login with wrong credentials, but you have not tried to log in at all."),
}
_BY_CLASS = {
    "2": N_("a success code: would the server accept a sender here, before encryption and login?"),
    "3": N_("a 'go on' code, but MAIL asks for nothing more to be sent."),
    "4": N_("a temporary failure ('try again later'): would waiting change anything here?"),
    "5": N_("a permanent refusal: does its meaning (smtplab.explain(code)) fit a connection that lacks "
         "encryption and a login?"),
}


def _submission_host(lab: Any) -> Any:
    hosts = [h for h in lab.hosts.values() if "submission" in h.ports]
    return next((h for h in hosts if h.name == MSA_HOST), hosts[0])


def _submission_reply(lab: Any) -> Reply:
    host = _submission_host(lab)
    sender = next((u.address for u in lab.users.values() if u.domain == host.domain), ALICE)
    session = lab.session(host.name, "submission")
    try:
        session.ehlo("student.local")
        reply = session.send(f"MAIL FROM:<{sender}>")
        assert reply is not None
        session.send("QUIT")
        return reply
    finally:
        session.close()


def check_starttls_prediction(answer: Any, lab: Any) -> Feedback:
    """Compare the predicted reply code with what the submission server really says to MAIL before STARTTLS.

    The first well-formed prediction counts; a wrong one is told how to find out, never the code.
    """
    if is_placeholder(answer):
        return unanswered(_("Write the three-digit reply code you expect, as a number."), _(PREDICT_530))
    match = re.match(r"\s*([2-5]\d\d)\b", str(answer)) if not isinstance(answer, bool) else None
    if match is None:
        return failed(_("{answer!r} is not a reply code: answer with three digits, from 200 to 599.").format(answer=answer), _(PREDICT_530))
    given = int(match.group(1))
    guess = first_answer(PREDICT_530, given)
    note = changed_answer_note(guess, given)
    reply = _submission_reply(lab)
    if guess == reply.code:
        return passed(_("{note}Right. The server said: {said}. {code} means: {meaning}. A "
                      "submission server takes no transaction from a client that has not logged in (RFC 6409 "
                      "section 4.3), and this one also wants TLS first (RFC 3207 section 4 words the reply): the "
                      "client says STARTTLS, EHLO again, then AUTH.").format(note=note, said=_said(reply), code=reply.code, meaning=reply.meaning), _(PREDICT_530))
    wrong = _WRONG_GUESSES.get(guess)
    why = _(wrong) if wrong else _("{guess} is {meaning}").format(guess=guess, meaning=_(_BY_CLASS[str(guess)[0]]))
    return failed(_("{note}Not what the server answered. {why} Find out: the next section opens the same "
                  "connection by hand, and lab.session('smtp.example.org') lets you send the line yourself.").format(note=note, why=why),
                  _(PREDICT_530))


# --- exercise 4: which envelope senders does the MSA take from Alice's login? ---

def _verdict(value: Any) -> str | None:
    word = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if word in _ACCEPT:
        return "accept"
    if word in _REFUSE:
        return "refuse"
    return None


def _sender_replies(lab: Any) -> dict[str, Reply]:
    """Log in to the MSA as Alice (STARTTLS, AUTH) and try every candidate in MAIL FROM; RSET between them."""
    user = lab.users[ALICE]
    session = lab.session(MSA_HOST, "submission")
    replies: dict[str, Reply] = {}
    try:
        session.ehlo("student.local")
        session.starttls()
        session.ehlo("student.local")
        session.auth_plain(user.address, user.password)
        for candidate in SENDER_CANDIDATES:
            path = candidate if candidate == "<>" else f"<{candidate}>"
            reply = session.send(f"MAIL FROM:{path}")
            assert reply is not None
            replies[candidate] = reply
            session.send("RSET")
        session.send("QUIT")
    finally:
        session.close()
    return replies


def check_sender_prediction(predictions: Any, lab: Any) -> Feedback:
    """`predictions` maps each of SENDER_CANDIDATES to "accept" or "refuse": what will the MSA answer MAIL FROM
    after Alice has logged in? Judged once, against a session the check opens as Alice on the real MSA."""
    hint = (_("Fill in predictions: for each address, \"accept\" or \"refuse\" (what smtp.example.org answers "
            "MAIL FROM with it, after Alice has logged in)."))
    if is_blank(predictions) or (isinstance(predictions, Mapping) and all(is_blank(v) for v in predictions.values())):
        return unanswered(hint, _(SENDERS))
    if not isinstance(predictions, Mapping):
        return failed(_("predictions must be a dict from address to \"accept\" or \"refuse\", not a "
                      "{type}.").format(type=type(predictions).__name__), _(SENDERS))
    missing = [c for c in SENDER_CANDIDATES if is_blank(predictions.get(c))]
    if missing:
        return unanswered(_("Predict every address: {value} still has no answer.").format(value=', '.join(missing)), _(SENDERS))
    unreadable = {c: predictions[c] for c in SENDER_CANDIDATES if _verdict(predictions[c]) is None}
    if unreadable:
        address, value = next(iter(unreadable.items()))
        return failed(_("the prediction for {address} is {value!r}: write \"accept\" or \"refuse\".").format(address=address, value=value), _(SENDERS))
    given = tuple(_verdict(predictions[c]) for c in SENDER_CANDIDATES)
    committed = first_answer(SENDERS, given)
    note = (_("(You changed your predictions, but the first ones checked are the ones that count: a prediction "
            "is judged once. The verdict below is about them.) ") if committed != given else "")
    try:
        replies = _sender_replies(lab)
    except Exception as exc:  # the check must never crash a Run-All
        return failed(_("the check could not log in to {MSA_HOST} as Alice: {exc}. Is the lab running?").format(MSA_HOST=MSA_HOST, exc=exc), _(SENDERS))
    truth = tuple("accept" if replies[c].code == 250 else "refuse" for c in SENDER_CANDIDATES)
    if committed == truth:
        evidence = "; ".join(f"MAIL FROM:{c if c == '<>' else '<' + c + '>'} -> {_said(replies[c])}"
                             for c in SENDER_CANDIDATES)
        return passed(_("{note}Right, all five. Logged in as {ALICE}, {MSA_HOST} answered: {evidence}. An MSA knows "
                      "who logged in, so it can check that the envelope sender is an address that login may use "
                      "(RFC 6409 section 6.1 allows the refusal; it names 550 5.7.1, and this lab answers 553 5.7.1 "
                      "as Postfix does). The domain alone is not enough, and the domain's case does not matter (RFC "
                      "5321 section 2.4). The null sender <> is for notifications such as bounces (RFC 5321 section "
                      "4.5.5); refusing it from a user is this MSA's policy, not a rule of RFC 6409. The check makes "
                      "the sender of submitted mail accountable: a stolen password cannot send in anyone's name.").format(note=note, ALICE=ALICE, MSA_HOST=MSA_HOST, evidence=evidence),
                      _(SENDERS))
    wrong = sum(1 for mine, real in zip(committed, truth, strict=True) if mine != real)
    count = ngettext("{wrong} of your five predictions is not what {MSA_HOST} answered",
                     "{wrong} of your five predictions are not what {MSA_HOST} answered", wrong)
    return failed(note + count.format(wrong=wrong, MSA_HOST=MSA_HOST) + _(
        " (your first predictions are the ones that count). Ask yourself, for each address: after AUTH, which "
        "addresses may this login use? Is the same domain enough? Does the case of a domain name matter (RFC 5321 "
        "section 2.4)? Who sends mail with the null sender (RFC 5321 section 4.5.5)? Then run the next cell: it logs "
        "in as Alice and sends each MAIL FROM, so you can read the server's replies."), _(SENDERS))
