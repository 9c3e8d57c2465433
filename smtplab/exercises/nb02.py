"""Checks for notebook 02, the MX lookup: which MX first, preferences in a custom lab, the Null MX.

The checks ask the lab's DNS (and, for the custom lab, send a real message and read its Received
headers), so the feedback quotes what the lab really answered.
"""

from __future__ import annotations

from typing import Any

from ..errors import SmtpLabError
from ..i18n import N_, _
from ..mail.hops import received_hops
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_placeholder

__all__ = ["check_first_mx", "check_mx2_first", "check_null_mx", "NULL_MX_CHOICES"]

FIRST_MX = N_("Exercise 1 · predict the first MX")
NULL_MX = N_("Exercise 2 · mail for a Null MX domain")
MX2_FIRST = N_("Exercise 3 · make mx2 the first choice")

DOMAIN = "example.net"
_NULL_MX_TRUTH = "d"

# The choices as the notebook prints them (translate with _() where shown).
NULL_MX_CHOICES = {
    "a": N_("It connects to the host called \".\", fails, and tries again later."),
    "b": N_("It keeps the message in its queue and retries for days, as when a server is down."),
    "c": N_("It ignores the MX record and delivers to the domain's own address (the implicit MX)."),
    "d": N_("It gives up at once and sends Alice a bounce (status 5.1.10)."),
}


def _records_text(records: list[Any]) -> str:
    return ", ".join(f"{r.preference} {r.exchange}" for r in records) or _("no MX records")


# --- exercise 1: predict -------------------------------------------------------------------------


def check_first_mx(answer: Any, lab: Any) -> Feedback:
    """Check the predicted first MX for example.net against the lab's DNS.

    The first well-formed prediction counts; a wrong one hears why that host is not it and how to find
    out (the records and RFC 5321 section 5.1), never the name of the host.
    """
    if is_placeholder(answer):
        return unanswered(_("Write a host name in quotes, one of lab.hosts."), _(FIRST_MX))
    if not isinstance(answer, str):
        return failed(_("answer with a host name in quotes, e.g. \"smtp.example.net\", not {answer!r}.").format(
            answer=answer), _(FIRST_MX))
    records = lab.lookup_mx(DOMAIN)
    given = answer.strip().lower().rstrip(".")
    if given and given in {h.split(".", 1)[0] for h in lab.hosts}:
        try:
            given = lab.host(given).name
        except SmtpLabError:
            pass
    name = first_answer(FIRST_MX, given)
    note = changed_answer_note(name, given)
    best = min(r.preference for r in records)
    firsts = [r.exchange for r in records if r.preference == best]
    by_name = {r.exchange: r for r in records}
    how = " " + _("Find out: read the MX records printed above, and RFC 5321 section 5.1 on what the preference "
                  "number means; the next cell shows the relay's own choice.")
    if name in firsts:
        listed = _records_text(records)
        tie = "" if len(firsts) == 1 else " " + _("(tied with {others}: a relay picks at random)").format(
            others=", ".join(f for f in firsts if f != name))
        return passed(note + _("Right: {name} has preference {best}, the lowest of example.net's MX records "
                               "({listed}){tie}. A relay tries the lowest number first; the others are backups "
                               "(RFC 5321 section 5.1).").format(name=name, best=best, listed=listed, tie=tie),
                      _(FIRST_MX))
    if name in by_name:
        return failed(note + _("{name} is one of example.net's MX hosts, with preference {preference}. Is a "
                               "preference a score (higher is better) or a rank (1st, 2nd choice)?").format(
            name=name, preference=by_name[name].preference) + how, _(FIRST_MX))
    if name == DOMAIN:
        return failed(note + _("example.net is the domain, not a server. A relay uses the domain's own address only "
                               "when the domain has no MX record at all (the implicit MX).") + how, _(FIRST_MX))
    if name == f"smtp.{DOMAIN}":
        return failed(note + _("smtp.example.net is Bob's submission server, where Bob sends his own mail with a "
                               "password; other providers deliver to the hosts in example.net's MX records.") + how,
                      _(FIRST_MX))
    if name.startswith("imap."):
        return failed(note + _("{name} only lets users read their mailboxes (IMAP); mail arrives by SMTP at the "
                               "hosts in the MX records.").format(name=name) + how, _(FIRST_MX))
    if name == "smtp.example.org":
        return failed(note + _("smtp.example.org is Alice's own server: it is the relay that asks DNS the "
                               "question.") + how, _(FIRST_MX))
    if name == getattr(getattr(lab, "dns", None), "name", "dns.lab"):
        return failed(note + _("{name} answers the question (it is the DNS server) but receives no mail.").format(
            name=name) + how, _(FIRST_MX))
    return failed(note + _("{answer!r} is not one of example.net's MX hosts.").format(answer=answer) + how,
                  _(FIRST_MX))


# --- exercise 3: do -------------------------------------------------------------------------


def check_mx2_first(my_lab: Any) -> Feedback:
    """Check a learner's lab: mx2 must be example.net's preferred MX, with mx1 kept as backup, and really used."""
    title = _(MX2_FIRST)
    if is_placeholder(my_lab):
        return unanswered(_("Change the preferences in my_scenario, then start it: "
                            "my_lab = smtplab.start(scenario=my_scenario)."), title)
    if isinstance(my_lab, dict) or type(my_lab).__name__ == "Scenario":
        return failed(_("that is the scenario, not a running lab: start it with "
                        "my_lab = smtplab.start(scenario=my_scenario) and check my_lab."), title)
    if not hasattr(my_lab, "lookup_mx") or not hasattr(my_lab, "send"):
        return failed(_("expected the lab returned by smtplab.start(...), got a {kind}.").format(
            kind=type(my_lab).__name__), title)
    if not getattr(my_lab, "running", False):
        return failed(_("this lab is stopped (starting another lab stops the previous one): run the cell that "
                        "starts my_lab again, then this check."), title)
    try:
        records = my_lab.lookup_mx(DOMAIN)
    except SmtpLabError as exc:
        return failed(_("the lab's DNS gives no MX for example.net: {error}").format(error=exc), title)
    listed = _records_text(records)
    by_name = {r.exchange: r.preference for r in records}
    mx1, mx2 = by_name.get(f"mx1.{DOMAIN}"), by_name.get(f"mx2.{DOMAIN}")
    if mx2 is None:
        return failed(_("example.net has no MX record for mx2.example.net any more ({listed}): keep both records "
                        "and change only their preference numbers.").format(listed=listed), title)
    if mx1 is None:
        return failed(_("mx2 comes first now, but only because mx1's record is gone ({listed}). Keep mx1 as the "
                        "backup: give it a higher number than mx2.").format(listed=listed), title)
    if mx2 == mx1:
        return failed(_("mx1 and mx2 both have preference {preference}: a relay shuffles equal preferences, so mx2 "
                        "would come first only about half the time. Give mx2 the lower number.").format(
            preference=mx1), title)
    if mx2 > mx1:
        return failed(_("the lab's DNS still says {listed}: mx1 has the lower number, so it is tried first. "
                        "The lowest preference wins: give mx2 a smaller number than mx1.").format(listed=listed),
                      title)
    lower = [r.exchange for r in records if r.preference < mx2]
    if lower:
        return failed(_("mx2 beats mx1, but {hosts} has an even lower preference ({listed}).").format(
            hosts=", ".join(lower), listed=listed), title)
    if not my_lab.host(f"mx2.{DOMAIN}").is_up:
        return failed(_("mx2.example.net is down in your lab, so the relay would fall back to mx1: bring it up with "
                        "my_lab.host('mx2').up()."), title)
    try:
        result = my_lab.send("alice@example.org", "bob@example.net", "Which MX?", "Sent by the exercise check.\n")
    except SmtpLabError as exc:
        return failed(_("the DNS looks right ({listed}), but the test message from alice@example.org to "
                        "bob@example.net could not be sent: {error}. Keep the users of the default scenario.").format(
            listed=listed, error=exc), title)
    item = my_lab.queue_item(result.queue_id)
    status = item.recipients[0]
    message = next((m for m in reversed(my_lab.messages("bob@example.net"))
                    if str(m.get("Message-ID", "")).strip() == result.message_id.strip()), None)
    if message is None:
        return failed(_("the DNS looks right ({listed}), but the test message did not reach Bob: "
                        "{state}, last reply {reply}.").format(listed=listed, state=status.state,
                                                               reply=status.last_reply), title)
    last = received_hops(message)[-1]
    if last.by != f"mx2.{DOMAIN}":
        return failed(_("the DNS looks right ({listed}), but the test message was delivered by {host}.").format(
            listed=listed, host=last.by), title)
    return passed(_("The lab's DNS answers {listed}, and the test message's newest Received header says "
                    "'from {client} ... by {host}': the relay tried mx2 first. mx1 is now the backup.").format(
        listed=listed, client=last.from_name, host=last.by), title)


# --- exercise 2: explain (multiple choice) --------------------------------------------------------


_NULL_MX_FEEDBACK = {
    "a": N_("Is \".\" a host at all? Look at what a name ending in a dot means in DNS, and at what RFC 7505 asks "
            "a sender to do with \"0 .\"."),
    "b": N_("Retrying makes sense for temporary trouble (a server down, a 4xx reply). Is a Null MX a temporary "
            "state of the domain?"),
    "c": N_("When does the implicit MX apply: when a domain has no MX record, or when it has this one? RFC 5321 "
            "section 5.1 and RFC 7505 section 3 say."),
    "d": N_("Does the relay connect anywhere before it decides? Look at its DNS and queue notes."),
}


def check_null_mx(choice: Any, lab: Any = None) -> Feedback:
    """Check the multiple-choice answer about a Null MX domain (RFC 7505).

    The first letter checked is the answer (`first_answer`): reading the verdict on each letter in turn
    would replace the thinking. A wrong letter gets a question to find out with, and the cell after the
    check shows what the relay really does.
    """
    if is_placeholder(choice):
        return unanswered(_("Set choice to one of \"a\", \"b\", \"c\" or \"d\"."), _(NULL_MX))
    given = str(choice).strip().lower().rstrip(")").strip()
    if given not in NULL_MX_CHOICES:
        return failed(_("{choice!r} is not one of the choices: answer \"a\", \"b\", \"c\" or \"d\".").format(
            choice=choice), _(NULL_MX))
    letter = first_answer(NULL_MX, given)
    note = changed_answer_note(letter, given)
    if letter == _NULL_MX_TRUTH:
        return passed(note + _("Right: a Null MX (\"0 .\", RFC 7505) says the domain accepts no mail. The relay "
                               "gives up at once without connecting anywhere and bounces: status 5.1.10 ('recipient "
                               "address has null MX'). Alice's bounce arrives within seconds instead of after days "
                               "of retries."), _(NULL_MX))
    return failed(note + _("Not what the relay does.") + " " + _(_NULL_MX_FEEDBACK[letter]) + " "
                  + _("The cell after this check sends the message: read its notes and the queue's status."),
                  _(NULL_MX))
