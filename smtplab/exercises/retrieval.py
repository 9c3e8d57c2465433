"""Checks for the lesson "Retrieval: POP3 beside IMAP": a UIDL found with the learner's own poplib session,
a prediction of what IMAP shows after POP3's download-and-delete, and the port of POP3 with implicit TLS.

Each check reads the lab's real state through the real servers: a POP3 session of its own (TOP and UIDL,
then QUIT with nothing deleted), an IMAP EXAMINE (read-only, so the check changes no flag), the host's
ports. Feedback quotes what was found and says how to find out, never the expected answer.
"""

from __future__ import annotations

import poplib
import re
import weakref
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from typing import Any

from ..i18n import N_, _, ngettext
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["check_uidl", "check_select_prediction", "check_pop3s_port", "BOB", "MAILBOX_HOST", "UIDL_SUBJECT"]

UIDL = N_("Exercise 1 · a UIDL with your own POP3 session")
PREDICT = N_("Exercise 2 · what IMAP shows after POP3's download-and-delete")
PORT = N_("Exercise 3 · POP3 with implicit TLS")

BOB = "bob@example.net"
MAILBOX_HOST = "imap.example.net"
# The subject the lesson sends; a Spanish notebook sends its translation, so the checks accept either.
UIDL_SUBJECT = N_("Minutes of Tuesday's meeting")
_PORT_ROLES = {
    "pop3": N_("the POP3 port where the client starts in plain text and sends STLS (RFC 2595 §4) before "
               "USER/PASS"),
    "imap": N_("IMAP's port with STARTTLS (RFC 3501 §6.2.1): IMAP, not POP3"),
    "imaps": N_("IMAP's port with TLS from the first byte (993's role, RFC 8314 §3.2): IMAP, not POP3"),
    "smtp": N_("the SMTP port (25's role): MX to MX"),
    "submission": N_("the SMTP submission port (587's role, RFC 6409)"),
    "submissions": N_("SMTP submission with implicit TLS (465's role, RFC 8314 §3.3)"),
}
_INTERNET_PORTS = {110: "pop3", 995: "pop3s", 143: "imap", 993: "imaps", 25: "smtp", 587: "submission",
                   465: "submissions"}
# The POP3 connections the checks opened themselves, per lab trace: they are not the learner's own work.
_CHECK_CONNS: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _subject(header_lines: list[bytes]) -> str:
    headers = BytesHeaderParser().parsebytes(b"\r\n".join(header_lines) + b"\r\n\r\n")
    try:
        return str(make_header(decode_header(headers.get("Subject", ""))))
    except (ValueError, LookupError, UnicodeDecodeError):
        return str(headers.get("Subject", ""))


def _maildrop(lab: Any, address: str) -> list[tuple[str, str]] | Feedback:
    """(unique-id, Subject) of every message in `address`'s maildrop, read by a POP3 session of the check's own
    (TOP n 0 and UIDL, RFC 1939 §7; QUIT with nothing deleted), or the Feedback that says why it could not."""
    mark = lab.trace.mark()
    try:
        client = lab.pop3(address)
    except poplib.error_proto as exc:
        said = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        if "[IN-USE]" in said:
            return failed(_("the check's own POP3 login was refused: {said!r}. A POP3 session of yours still holds "
                            "the maildrop (RFC 1939 §4 locks it; RFC 2449 §8.1.2 names the [IN-USE] code): end it "
                            "with .quit(), then run this check again.").format(said=said), _(UIDL))
        return failed(_("the check could not log in to POP3: {said!r}.").format(said=said), _(UIDL))
    try:
        found = []
        for line in client.uidl()[1]:
            number, _space, uid = line.decode("ascii", "replace").partition(" ")
            found.append((uid, _subject(client.top(int(number), 0)[1])))
        client.quit()  # no DELE: the UPDATE state removes nothing (RFC 1939 §6)
    except BaseException:
        client.close()
        raise
    finally:
        _CHECK_CONNS.setdefault(lab.trace, set()).update(
            e.conn for e in lab.trace.since(mark) if e.protocol == "pop3" and e.kind == "connect")
        # (connect events only: a learner's session that just ended may still record its close after the mark)
    return found


def _read_by_learner(lab: Any, number: int) -> bool:
    """Whether a POP3 session that is not a check's asked UIDL and read message `number` (TOP or RETR).

    The numbers hold across sessions here because nothing was deleted since the lesson sent its messages
    (RFC 1939 §4 numbers the maildrop at each login)."""
    mine = _CHECK_CONNS.get(lab.trace, set())
    commands: dict[str, list[str]] = {}
    for event in lab.trace.events():
        if event.protocol == "pop3" and event.direction == "C" and event.conn not in mine:
            commands.setdefault(event.conn, []).append(event.text.strip().upper())
    reads = re.compile(rf"(TOP|RETR) {number}(\s|$)")
    return any(any(c.startswith("UIDL") for c in lines) and any(reads.match(c) for c in lines)
               for lines in commands.values())


# --- exercise 1 ------------------------------------------------------------------------------------


def _is_lesson_subject(subject: str) -> bool:
    """The lesson's subject, as the English or the learner's-language notebook sent it."""
    return subject in (UIDL_SUBJECT, _(UIDL_SUBJECT))


def check_uidl(answer: Any, lab: Any) -> Feedback:
    """The unique-id (RFC 1939 §7) of the message with the subject UIDL_SUBJECT in Bob's maildrop."""
    title = _(UIDL)
    if is_blank(answer):
        return unanswered(_("Open your own POP3 session (lab.pop3({bob!r})), find the message with the subject "
                            "{subject!r}, and write its unique-id, e.g. my_uidl = '...'. End the session with "
                            ".quit().").format(bob=BOB, subject=_(UIDL_SUBJECT)), title)
    if isinstance(answer, bytes):
        answer = answer.decode("ascii", "replace")
    if isinstance(answer, bool) or not isinstance(answer, (str, int)):
        return failed(_("write the unique-id as a string, not a {type}.").format(type=type(answer).__name__), title)
    text = str(answer).strip()
    maildrop = _maildrop(lab, BOB)
    if isinstance(maildrop, Feedback):
        return maildrop
    wanted = [uid for uid, subject in maildrop if _is_lesson_subject(subject)]
    if not wanted:
        return failed(ngettext(
            "Bob's maildrop has no message with the subject {subject!r} any more ({n} message in it): was it "
            "deleted with DELE and QUIT? Run the cell that sends the lesson's messages again.",
            "Bob's maildrop has no message with the subject {subject!r} any more ({n} messages in it): was it "
            "deleted with DELE and QUIT? Run the cell that sends the lesson's messages again.",
            len(maildrop)).format(subject=_(UIDL_SUBJECT), n=len(maildrop)), title)
    numbers_wanted = [n for n, (_uid, subject) in enumerate(maildrop, 1) if _is_lesson_subject(subject)]
    if not any(_read_by_learner(lab, n) for n in numbers_wanted):
        return failed(_("the lab's trace shows no POP3 session of yours that asked UIDL and read the message "
                        "with the subject {subject!r} (TOP n 0 or RETR n): the exercise is to find it yourself. "
                        "Open lab.pop3({bob!r}), read each message's Subject with .top(n, 0), match it with "
                        ".uidl(), then .quit() and run this check again.").format(subject=_(UIDL_SUBJECT), bob=BOB),
                      title)
    if text in wanted:
        return passed(_("{answer!r} is the unique-id of {subject!r}. It stays the same in every POP3 session "
                        "(RFC 1939 §7), whatever the message's number: that is how a client that keeps mail on "
                        "the server remembers which messages it has already downloaded.").format(
            answer=text, subject=_(UIDL_SUBJECT)), title)
    numbers = {str(n) for n in range(1, len(maildrop) + 1)}
    if text.partition(" ")[0] in numbers and " " in text:
        return failed(_("your answer is a whole line of the UIDL listing: a message number, a space, then the "
                        "unique-id. Answer with the part after the space."), title)
    if text in numbers:
        return failed(_("{answer!r} is a message number: it is valid in one session only, and the numbers change "
                        "from login to login (RFC 1939 §4 numbers the messages when the maildrop is locked). The "
                        "unique-id is the string that client.uidl() gives after a message's number.").format(
            answer=text), title)
    others = {uid: subject for uid, subject in maildrop}
    if text in others:
        return failed(_("{answer!r} is the unique-id of the message with the subject {subject!r}. Read each "
                        "message's Subject with client.top(n, 0), the headers and no body line (RFC 1939 §7), "
                        "and match it with client.uidl(n).").format(answer=text, subject=others[text]), title)
    if text.startswith("<") and text.endswith(">"):
        return failed(_("{answer!r} looks like a Message-ID: that is a header field the sender chose "
                        "(RFC 5322 §3.6.4). The unique-id is the POP3 server's own, listed by UIDL.").format(
            answer=text), title)
    return failed(ngettext(
        "no message in Bob's maildrop has the unique-id {answer!r} (it has {n} message). client.uidl() lists "
        "'number unique-id' lines; client.top(n, 0) shows message n's headers.",
        "no message in Bob's maildrop has the unique-id {answer!r} (it has {n} messages). client.uidl() lists "
        "'number unique-id' lines; client.top(n, 0) shows message n's headers.",
        len(maildrop)).format(answer=text, n=len(maildrop)), title)


# --- exercise 2 ------------------------------------------------------------------------------------


def _exists(lab: Any, address: str) -> int:
    """How many messages IMAP's EXAMINE of INBOX reports (the EXISTS response, RFC 3501 §7.3.1)."""
    client = lab.imap(address)
    try:
        status, data = client.select("INBOX", readonly=True)  # EXAMINE: no flag changes (RFC 3501 §6.3.2)
        if status != "OK":
            raise RuntimeError(_("EXAMINE INBOX failed: {data!r}").format(data=data))
        return int(data[0])
    finally:
        client.logout()


def check_select_prediction(answer: Any, lab: Any) -> Feedback:
    """The learner's prediction of the number of messages IMAP shows in Bob's INBOX after the POP3 session that
    retrieved and deleted, compared with what IMAP really reports. The first well-formed prediction counts."""
    title = _(PREDICT)
    if is_blank(answer):
        return unanswered(_("Write the number of messages you expect IMAP's SELECT INBOX to report, before you run "
                            "the POP3 session below, e.g. predicted = 3."), title)
    if isinstance(answer, bool) or not isinstance(answer, (int, str)) or not str(answer).strip().isdigit():
        return failed(_("{answer!r} is not a number of messages: answer with a whole number, e.g. 3.").format(
            answer=answer), title)
    given = int(str(answer).strip())
    guess = first_answer(PREDICT, given)
    note = changed_answer_note(guess, given)
    try:
        client = lab.pop3(BOB)
    except poplib.error_proto as exc:
        return failed(note + _("the check's POP3 login was refused ({said!r}): a POP3 session of yours still holds "
                               "the maildrop. End it with .quit() (that is also what removes what DELE marked)."
                               ).format(said=exc.args[0]), title)
    client.quit()  # nothing deleted: the check changes nothing
    shown = _exists(lab, BOB)
    if guess == shown:
        return passed(note + _("Right: IMAP's SELECT INBOX reports {shown} EXISTS. DELE only marks a message; QUIT "
                               "moves the session to the UPDATE state, which removes the marked messages from the "
                               "server (RFC 1939 §6). IMAP reads the same mailbox, so the laptop finds only what "
                               "POP3 did not delete.").format(shown=shown), title)
    return failed(note + _("Not what IMAP reports for your prediction of {guess}. Find out why: run the next cell, "
                           "which shows SELECT's EXISTS, and read the POP3 lines of your session in the trace: "
                           "which messages got DELE, did QUIT follow, and what did the server note at UPDATE "
                           "(RFC 1939 §6)?").format(guess=guess), title)


# --- exercise 3 ------------------------------------------------------------------------------------


def _tried_implicit_tls(lab: Any) -> bool:
    """Whether a POP3 connection on the pop3s service finished its TLS handshake (the checks never open one)."""
    return any(e.protocol == "pop3" and e.port_name == "pop3s" and e.kind == "tls" for e in lab.trace.events())


def check_pop3s_port(answer: Any, lab: Any) -> Feedback:
    """The port a mail client would be configured with for POP3 with implicit TLS on Bob's mailbox host."""
    title = _(PORT)
    if is_blank(answer):
        return unanswered(_("Write the port number of POP3 with implicit TLS on {host} in this lab, e.g. "
                            "pop3s_port = 12345.").format(host=MAILBOX_HOST), title)
    if isinstance(answer, bool) or not isinstance(answer, (int, str)) or not str(answer).strip().isdigit():
        return failed(_("{answer!r} is not a port number: answer with a whole number.").format(answer=answer), title)
    port = int(str(answer).strip())
    host = lab.host(MAILBOX_HOST)
    if host.ports.get("pop3s") == port:
        if not _tried_implicit_tls(lab):
            return failed(_("the lab has seen no POP3 connection that began with TLS yet. Try your port as the "
                            "exercise asks: poplib.POP3_SSL(host.address, pop3s_port, context=context), print "
                            "getwelcome(), .quit(), then run this check again."), title)
        return passed(_("{port} is {host}'s pop3s port: the TLS handshake comes first, before the POP3 greeting "
                        "(995's role on the Internet, RFC 8314 §3.1), so no STLS can be stripped from the "
                        "conversation. In poplib: poplib.POP3_SSL(host, port, context=...).").format(
            port=port, host=MAILBOX_HOST), title)
    roles = {number: name for name, number in host.ports.items()}
    if port in roles:
        role = roles[port]
        return failed(_("{port} is {host}'s {service} port: {role}. The lab's ports are in "
                        "lab.host({host!r}).ports.").format(
            port=port, host=MAILBOX_HOST, service=role,
            role=_(_PORT_ROLES[role]) if role in _PORT_ROLES else role), title)
    if port in _INTERNET_PORTS:
        return failed(_("{port} is the {service} port on the Internet, but the lab's servers listen on "
                        "unprivileged ports of their own loopback addresses (binding below 1024 needs privileges). "
                        "Find the service by its name in lab.host({host!r}).ports.").format(
            port=port, service=_INTERNET_PORTS[port], host=MAILBOX_HOST), title)
    return failed(_("nothing of {host} listens on {port}: its services and ports are in lab.host({host!r}).ports "
                    "(printing lab shows them too).").format(host=MAILBOX_HOST, port=port), title)
