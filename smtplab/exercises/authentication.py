"""Checks of notebook 05's sender authentication: an SPF record of your own, DMARC alignment, and what
p=quarantine does to a forgery.

Each check asks the real lab: a forgery sent from mallory's host to a fresh lab with the policy in
question, a lab started from the learner's own scenario, and the Authentication-Results header that
Bob's MX wrote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.message import Message
from email.utils import make_msgid
from typing import Any

from ..errors import ScenarioError, SmtpLabError
from ..i18n import N_, _
from ..lab import Lab
from ..scenario import Scenario
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["QUARANTINE_CHOICES", "check_quarantine_prediction", "check_spf_record", "check_alignment"]

SPF = N_("Exercise 3 · an SPF record for example.com")
ALIGNMENT = N_("Exercise 4 · why did DMARC pass?")
QUARANTINE = N_("Exercise 5 · predict p=quarantine")

ALICE = "alice@example.org"
BOB = "bob@example.net"
CAROL = "carol@example.com"
CAROL_DOMAIN = "example.com"
CAROL_HOST = "mail.example.com"
EVIL_HOST = "mail.evil.example"



def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _forge(lab: Any, sender: str, from_header: str, subject: str) -> tuple[Any, Any]:
    """Mallory's host talks straight to bob's MX, as `sender`; return (RCPT reply, DATA reply or None)."""
    session = lab.session("mx1.example.net", source=EVIL_HOST)
    try:
        session.ehlo(EVIL_HOST)
        session.mail(sender)
        rcpt = session.rcpt(BOB)
        data = None
        if rcpt.code == 250:
            data = session.data(f"From: {from_header}\nTo: Bob <{BOB}>\nSubject: {subject}\n"
                                "Date: Sat, 28 Nov 2026 08:00:00 +0000\n"
                                f"Message-ID: {make_msgid(domain='evil.example')}\n\n"
                                "Please pay the attached invoice today.\n")
        session.quit()
    finally:
        session.close()
    return rcpt, data


def _find(lab: Any, address: str, subject: str) -> tuple[str, Message | None]:
    """Return (folder, message) of the newest message with `subject` in `address`'s INBOX or Junk."""
    for folder in ("INBOX", "Junk"):
        for message in reversed(lab.messages(address, folder)):
            if str(message.get("Subject", "")) == subject:
                return folder, message
    return "", None


# --- Authentication-Results (RFC 8601), as the lab's MX writes it ---

_METHOD = re.compile(r"^\s*(spf|dkim|dmarc)=(\w+)\s*(?:\(([^)]*)\))?\s*(.*)$", re.S)


def _results(header: str) -> dict[str, dict[str, str]]:
    """Parse 'authserv; spf=pass (why) smtp.mailfrom=...; dkim=...' into {method: {result, reason, props}}."""
    out: dict[str, dict[str, str]] = {}
    parts = _one_line(header).split(";")
    out["authserv"] = {"id": parts[0].strip()}
    for part in parts[1:]:
        match = _METHOD.match(part)
        if not match:
            continue
        method, result, reason, rest = match.groups()
        entry = {"result": result.lower(), "reason": reason or ""}
        for prop in rest.split():
            key, _sep, value = prop.partition("=")
            entry[key.lower()] = value
        out[method.lower()] = entry
    return out


def _domain(value: str) -> str:
    return value.strip().strip("<>").rpartition("@")[2].lower().rstrip(".")


def _org(domain: str) -> str:
    # Good enough for the lab's names (example.org, evil.example ...); real DMARC uses the public suffix list.
    return ".".join(domain.split(".")[-2:])


# --- exercise 5: predict what p=quarantine does to mallory's forgery ---

QUARANTINE_CHOICES: dict[str, str] = {
    "A": N_("mx1 answers 250 and Bob finds the forgery in his INBOX, as with p=none"),
    "B": N_("mx1 answers 250 and files the forgery in Bob's Junk folder"),
    "C": N_("mx1 refuses the message at the end of DATA with a 5xx reply"),
    "D": N_("mx1 refuses RCPT TO, before Mallory can send the message"),
    "E": N_("mx1 accepts it and sends a bounce (DSN) back to alice@example.org"),
}

_QUARANTINE_SUBJECT = "Invoice 7731: payment overdue"


def _quarantine_outcome() -> tuple[str, str]:
    """Forge alice's mail in a fresh lab with p=quarantine; return (choice letter, what happened)."""
    scenario = Scenario.security(policy="quarantine").to_dict()
    scenario["providers"][1]["security"]["spam"] = "score"  # as in the notebook: only DMARC decides
    with Lab(scenario).start() as lab:
        rcpt, data = _forge(lab, ALICE, f"Alice <{ALICE}>", _QUARANTINE_SUBJECT)
        lab.wait_for_delivery()
        if rcpt.code != 250:
            return "D", _("mx1 answered RCPT TO with {rcpt}").format(rcpt=rcpt)
        assert data is not None
        if data.code >= 500:
            return "C", _("mx1 accepted RCPT TO, then answered the message with {data}").format(data=data)
        folder, message = _find(lab, BOB, _QUARANTINE_SUBJECT)
        results = _one_line(message["Authentication-Results"]) if message is not None else "(none)"
        bounced = any(m.get_content_type() == "multipart/report" for m in lab.messages(ALICE))
        said = _("mx1 answered the message with {data} and filed it in Bob's {folder}. Its header: " \
               "Authentication-Results: {results}").format(data=data, folder=folder, results=results)
        if bounced:
            return "E", said + _("; and alice@example.org got a bounce")
        return ("B" if folder == "Junk" else "A"), said


_WHY = {
    "A": N_("p=none only asks receivers to report. p=quarantine asks them to treat failing mail as suspicious: "
         "accept it, but not into the INBOX."),
    "B": N_("p=quarantine means: accept, but put it where suspicious mail goes. The MX still answers 250."),
    "C": N_("that is p=reject: refuse at the end of DATA, once the From header is known."),
    "D": N_("at RCPT TO the MX has not seen the message yet, so it cannot know the From header that DMARC is about."),
    "E": N_("once it has accepted a message, a receiver does not bounce it for a DMARC failure: the envelope sender "
         "is forged, so the bounce would hit innocent Alice (backscatter)."),
}
# A question for each wrong letter: how to find out, never which letter is right.
_ASK = {
    "A": N_("What does RFC 7489 section 6.3 say p=quarantine asks of a receiver, compared with p=none?"),
    "B": N_("What does RFC 7489 section 6.3 say p=quarantine asks of a receiver?"),
    "C": N_("Which of the three policies asks for a refusal (RFC 7489 section 6.3)?"),
    "D": N_("When does the MX first see the From: header that DMARC is about: at RCPT TO, or after the message?"),
    "E": N_("Whose address is in the envelope of a forgery, and who would receive a bounce about it?"),
}


def check_quarantine_prediction(prediction: Any) -> Feedback:
    """Compare the predicted letter with what a fresh lab with p=quarantine really does to the forgery.

    The first letter checked counts (`first_answer`); a wrong one gets a question to find out with, and the
    cells after the check run the experiment.
    """
    if is_blank(prediction):
        return unanswered(_("Write the letter of your prediction."), _(QUARANTINE))
    given = str(prediction).strip().strip("().: ").upper()[:1] if isinstance(prediction, str) else ""
    if given not in QUARANTINE_CHOICES:
        return failed(_("{prediction!r} is not one of the choices: answer with one letter, "
                      "{value}.").format(prediction=prediction, value=', '.join(QUARANTINE_CHOICES)), _(QUARANTINE))
    letter = first_answer(QUARANTINE, given)
    note = changed_answer_note(letter, given)
    try:
        truth, said = _quarantine_outcome()
    except Exception as exc:  # the check must never crash a Run-All
        return failed(_("the check could not run its own lab with p=quarantine: {exc}").format(exc=exc), _(QUARANTINE))
    if letter == truth:
        return passed(_("{note}Right ({letter}: {QUARANTINE_CHOICES}). In a fresh lab with p=quarantine, "
                      "{said}. {WHY} Bob's mail program shows Junk as a folder over IMAP.").format(note=note, letter=letter, QUARANTINE_CHOICES=_(QUARANTINE_CHOICES[letter]), said=said, WHY=_(_WHY[letter])), _(QUARANTINE))
    return failed(_("{note}Not what mx1 did with p=quarantine. {ASK} The next cells run the forgery in a "
                  "lab with p=quarantine: compare.").format(note=note, ASK=_(_ASK[letter])), _(QUARANTINE))


# --- exercise 3: an SPF record for example.com ---

_GENUINE_SUBJECT = "Lunch next week? (from Carol)"
_FORGED_SUBJECT = "Carol's new bank account"


def _spf_of(folder_message: tuple[str, Message | None], reply: Any) -> tuple[str, str, str]:
    """(spf result, reason, where) from a delivered copy, or from the refusal text."""
    folder, message = folder_message
    if message is not None and message.get("Authentication-Results"):
        spf = _results(str(message["Authentication-Results"])).get("spf", {})
        return spf.get("result", "none"), spf.get("reason", ""), folder
    text = getattr(reply, "text", "") or ""
    match = re.search(r"spf=(\w+)", text)
    return (match.group(1) if match else "unknown"), text, "refused"


def check_spf_record(scenario: Any) -> Feedback:
    """Start a lab from the learner's scenario; carol's real mail must get spf=pass and mallory's forgery spf=fail."""
    hint = (_("Set carol_lab[\"providers\"][-1][\"records\"] to a list with one TXT record at the domain itself, "
            "e.g. [[\"@\", \"TXT\", '\"v=spf1 ... -all\"']]."))
    if is_blank(scenario):
        return unanswered(hint, _(SPF))
    if isinstance(scenario, Scenario):
        scenario = scenario.to_dict()
    if not isinstance(scenario, Mapping) or not isinstance(scenario.get("providers"), list):
        return failed(_("carol_lab must be the scenario dict the cell builds (smtplab.Scenario.security().to_dict() "
                      "plus the provider example.com)."), _(SPF))
    provider = next((p for p in scenario["providers"] if isinstance(p, Mapping)
                     and str(p.get("domain", "")).lower() == CAROL_DOMAIN), None)
    if provider is None:
        return failed(_("the scenario has no provider example.com any more: run the cell that appends it again."), _(SPF))
    records = provider.get("records")
    if is_blank(records) or (isinstance(records, list) and (not records or any(is_blank(r) for r in records))):
        return unanswered(hint, _(SPF))
    if not isinstance(records, (list, tuple)) or not all(isinstance(r, (list, tuple)) and len(r) == 3
                                                         for r in records):
        return failed(_("records is a list of [name, type, data] lists, like [[\"@\", \"TXT\", '\"v=spf1 -all\"']]; "
                      "you gave {records!r}.").format(records=records), _(SPF))
    try:
        spec = Scenario.from_dict(scenario)
    except ScenarioError as exc:
        return failed(_("the lab cannot use this scenario: {exc}").format(exc=exc), _(SPF))
    try:
        lab = Lab(spec).start()
    except Exception as exc:  # e.g. record data the DNS zone cannot parse
        return failed(_("the lab could not start with your records ({records!r}): {exc}. Write the TXT data in "
                      "double quotes inside the Python string: '\"v=spf1 ... -all\"'.").format(records=records, exc=exc), _(SPF))
    try:
        published = lab.dig(CAROL_DOMAIN, "TXT").records
        carol_address = lab.host(CAROL_HOST).address
        evil_address = lab.host(EVIL_HOST).address
        lab.send(CAROL, BOB, _GENUINE_SUBJECT, "Hi Bob, lunch on Tuesday?\n\nCarol\n")
        rcpt, data = _forge(lab, CAROL, f"Carol <{CAROL}>", _FORGED_SUBJECT)
        lab.wait_for_delivery()
        genuine = _spf_of(_find(lab, BOB, _GENUINE_SUBJECT), None)
        forged = _spf_of(_find(lab, BOB, _FORGED_SUBJECT), data if data is not None else rcpt)
    except (SmtpLabError, KeyError) as exc:
        return failed(_("the check's test mail could not go through in your lab: {exc}. Keep the rest of the "
                      "cell as it was and change only the records.").format(exc=exc), _(SPF))
    finally:
        lab.stop()
    shown = "; ".join(r.split(" IN TXT ", 1)[-1] for r in published) or "nothing"
    where = (_("Carol's real mail leaves from {CAROL_HOST} ({carol_address}); mallory's forgery came from "
             "{EVIL_HOST} ({evil_address}). example.com's TXT records in the lab DNS: {shown}.").format(CAROL_HOST=CAROL_HOST, carol_address=carol_address, EVIL_HOST=EVIL_HOST, evil_address=evil_address, shown=shown))
    g_result, g_reason, _where = genuine
    f_result = forged[0]
    if g_result == "pass" and f_result == "fail":
        return passed(_("Right: {where} Carol's real mail got spf=pass ({g_reason}), mallory's forgery spf=fail. The "
                      "final -all is what turns 'not listed' into a fail.").format(where=where, g_reason=g_reason), _(SPF))
    if g_result == "none":
        return failed(_why_none(records, published) + " " + where, _(SPF))
    if g_result in ("permerror", "temperror"):
        return failed(_("the receiver could not use your record: spf={g_result} ({g_reason}). {where}").format(g_result=g_result, g_reason=g_reason, where=where), _(SPF))
    if g_result != "pass":
        alice = _(" (127.0.1.10 is smtp.example.org, Alice's server)") if "127.0.1.10" in shown else ""
        return failed(_("Carol's real mail got spf={g_result} ({g_reason}): your record does not list the host her mail "
                      "leaves from{alice}. {where} Which of the SPF parts in the table above names a host, or a "
                      "domain's mail servers?").format(g_result=g_result, g_reason=g_reason, alice=alice, where=where), _(SPF))
    if f_result == "pass":
        return failed(_("Carol's mail passes, but so does mallory's forgery: your record lets {evil_address} send for "
                      "example.com too. {where} List only the hosts that really send example.com's mail "
                      "('+all' would allow anyone).").format(evil_address=evil_address, where=where), _(SPF))
    if f_result == "softfail":
        return failed(_("Carol's mail passes, and the forgery gets spf=softfail: '~all' says 'probably not allowed', and "
                      "most receivers still accept such mail. {where} End the record with -all for a real fail.").format(where=where), _(SPF))
    if f_result == "neutral":
        return failed(_("Carol's mail passes, and the forgery gets spf=neutral: '?all' says 'no opinion'. {where} "
                      "End the record with -all.").format(where=where), _(SPF))
    return failed(_("Carol's mail passes, but the forgery got spf={f_result}, not fail. {where} End with -all.").format(f_result=f_result, where=where), _(SPF))


def _why_none(records: Any, published: tuple[str, ...]) -> str:
    names = [str(r[0]) for r in records]
    if not published:
        return (_("the receiver found no TXT record at example.com, so spf=none. SPF is looked up at the domain of the "
                "MAIL FROM address itself: the name '@' (you used {value}).").format(value=', '.join(map(repr, names))))
    if any('" "' in r for r in published) and not any(str(r[2]).strip().startswith('"') for r in records):
        return (_("your TXT data has no double quotes, so the DNS stored each word as a string of its own "
                "({published}) and the receiver reads them run together: "
                "'v=spf1a:...'. Write the data as one quoted string: '\"v=spf1 ... -all\"'.").format(published=published[0].split(' IN TXT ', 1)[-1]))
    return (_("example.com has a TXT record, but none starts with 'v=spf1 ' (version 1 and a space), so the "
            "receiver found no SPF policy: spf=none."))


# --- exercise 4: DMARC passed although DKIM failed ---

def check_alignment(message: Any, carried_by: Any, aligned_domain: Any) -> Feedback:
    """Which check carried DMARC (spf or dkim), and which domain did it share with the From header?"""
    if is_blank(carried_by) and is_blank(aligned_domain):
        return unanswered(_("Fill in carried_by (\"spf\" or \"dkim\") and aligned_domain (a domain name)."), _(ALIGNMENT))
    header = message if isinstance(message, str) else (message.get("Authentication-Results") if message is not None
                                                        else None)
    if not header:
        return failed(_("the check needs the message with the footer (footer_copy): run the cells of the footer lab "
                      "first."), _(ALIGNMENT))
    results = _results(str(header))
    spf, dkim, dmarc = results.get("spf", {}), results.get("dkim", {}), results.get("dmarc", {})
    from_domain = dmarc.get("header.from", "")
    mailfrom_domain = _domain(spf.get("smtp.mailfrom", ""))
    d_domain = dkim.get("header.d", "").lower()
    carriers = {}
    if spf.get("result") == "pass" and mailfrom_domain and _org(mailfrom_domain) == _org(from_domain):
        carriers["spf"] = mailfrom_domain
    if dkim.get("result") == "pass" and d_domain and _org(d_domain) == _org(from_domain):
        carriers["dkim"] = d_domain
    quoted = _("The header: {one_line}").format(one_line=_one_line(header))
    problems = []
    how = str(carried_by).strip().lower() if isinstance(carried_by, str) else ""
    if is_blank(carried_by):
        problems.append(_("carried_by is still empty: \"spf\" or \"dkim\"?"))
    elif how not in ("spf", "dkim"):
        problems.append(_("carried_by is {carried_by!r}: answer \"spf\" or \"dkim\", the one check that passed and "
                        "matched the From domain").format(carried_by=carried_by))
    elif how not in carriers:
        if how == "dkim" and dkim.get("result") != "pass":
            problems.append(_("DKIM did not pass here (dkim={get}), and a failed check counts "
                            "for nothing in DMARC. The footer was added after signing, so the body no longer matches "
                            "the bh= hash in the signature").format(get=dkim.get('result', 'none')))
        elif how == "spf" and spf.get("result") != "pass":
            problems.append(_("SPF did not pass here (spf={get})").format(get=spf.get('result', 'none')))
        else:
            problems.append(_("{upper} passed, but for another domain than the From header's ({from_domain})").format(upper=how.upper(), from_domain=from_domain))
    domain = _domain(str(aligned_domain)) if isinstance(aligned_domain, str) else ""
    expected = set(carriers.values()) | ({from_domain} if carriers else set())
    if is_blank(aligned_domain):
        problems.append(_("aligned_domain is still empty: which domain do header.from and the passing check share?"))
    elif not isinstance(aligned_domain, str):
        problems.append(_("aligned_domain must be a domain name as text, like \"example.com\" (you gave "
                        "{aligned_domain!r})").format(aligned_domain=aligned_domain))
    elif domain not in expected:
        if domain == results["authserv"]["id"]:
            problems.append(_("{domain} is the server that wrote the header (the first word, the authserv-id), not a "
                            "domain that was checked").format(domain=domain))
        elif domain.count(".") > 1 and _org(domain) == _org(from_domain):
            problems.append(_("{domain} is a host name. SPF checked that host's address, but DMARC compares domains: "
                            "the domain of smtp.mailfrom ({mailfrom_domain}) with header.from ({from_domain})").format(domain=domain, mailfrom_domain=mailfrom_domain, from_domain=from_domain))
        elif _org(domain) == "example.net":
            problems.append(_("{domain} is Bob's side, the receiver; the domains compared are the sender's").format(domain=domain))
        else:
            problems.append(_("{domain!r} is neither in smtp.mailfrom nor in header.from").format(domain=domain))
    if problems:
        return failed(_("Not yet: ") + "; ".join(problems) + ". " + quoted, _(ALIGNMENT))
    assert how in carriers
    return passed(_("Right: DMARC passes when at least one of SPF and DKIM passes AND is aligned, i.e. its domain "
                  "matches the From header. Here spf={get} for smtp.mailfrom="
                  "{get2} ({mailfrom_domain}) matches header.from={from_domain}, so "
                  "dmarc={get3} although dkim={get4}. Had a mailing list or a forwarder "
                  "added the footer and sent the message on from its own server, SPF would no longer pass for "
                  "example.org either: DMARC would fail, and p=reject would refuse Alice's genuine mail.").format(get=spf.get('result'), get2=spf.get('smtp.mailfrom'), mailfrom_domain=mailfrom_domain, from_domain=from_domain, get3=dmarc.get('result'), get4=dkim.get('result')), _(ALIGNMENT))
