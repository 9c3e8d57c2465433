"""Checks of notebook 01, the SMTP handshake typed by hand: dot-stuffing, and a whole session to an MX.

Each check reads what really crossed the wire (the session's transcript, or a session it opens itself)
and Bob's mailbox, and says which line the server refused and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import SmtpLabError
from ..i18n import N_, _
from ..mail.hops import received_hops
from ..net.replies import Reply
from ..net.session import SmtpSession
from . import Feedback, failed, passed, unanswered
from ._answers import is_placeholder

__all__ = ["check_dot_stuffing", "check_session", "typing_session", "TypedSession", "DOT_LINES"]

DOT_STUFFING = N_("Exercise 1 · the lone dot")
SESSION = N_("Exercise 2 · a whole session by hand")

BOB = "bob@example.net"
# The body lines Bob must receive in exercise 1, in this order.
DOT_LINES = (
    "A message ends with a line that holds only a dot:",
    ".",
    "Everything after it is still part of the message.",
)
_COMMANDS = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS",
             "AUTH"}
_ID = re.compile(r"(?:delivered|queued) as (\S+)")



@dataclass
class _Step:
    """One command line and the reply it got (for the lone dot, the message lines before it)."""

    line: str
    reply: Reply | None = None
    data: list[str] = field(default_factory=list)

    @property
    def verb(self) -> str:
        if self.line == ".":
            return "."
        match = re.match(r"[A-Za-z]+", self.line)
        return match.group(0).upper() if match else self.line[:10]


def _steps(transcript: list[str]) -> list[_Step]:
    """Pair each client line with its reply; lines sent inside DATA belong to the lone dot that ends them."""
    steps: list[_Step] = []
    waiting: _Step | None = None
    lines: list[str] = []
    in_data = False
    body: list[str] = []
    for raw in transcript:
        kind, text = raw[:1], raw[3:]
        if kind == "S":
            lines.append(text)
            if len(text) >= 4 and text[3] == "-":
                continue  # more lines of the same reply follow
            try:
                reply = Reply.parse(lines)
            except ValueError:
                reply = None
            lines = []
            if waiting is not None:
                waiting.reply = reply
                if reply is not None and reply.code == 354 and waiting.line != ".":
                    in_data, body = True, []
                waiting = None
        elif kind == "C":
            if in_data and text != ".":
                body.append(text)
                continue
            waiting = _Step(text, data=body if in_data else [])
            in_data = False
            steps.append(waiting)
    return steps


def _said(reply: Reply | None) -> str:
    if reply is None:
        return "nothing"
    first = reply.lines[0] if reply.lines else ""
    return " ".join(str(part) for part in (reply.code, reply.enhanced, first) if part)


def _delivered_id(step: _Step) -> str:
    if step.line != "." or step.reply is None or step.reply.code != 250:
        return ""
    match = _ID.search(step.reply.text)
    return match.group(1) if match else "?"


def _why(step: _Step, after_dot: bool = False) -> str:
    """Say in one or two sentences why the server refused `step`."""
    reply = step.reply
    assert reply is not None
    said = _("the server said {said}").format(said=_said(reply))
    text = reply.text.lower()
    verb = step.verb
    if reply.code == 503 and "helo" in text:
        return _("your {verb} came before EHLO: {said}. Introduce yourself first, e.g. EHLO student.local.").format(verb=verb, said=said)
    if reply.code == 503 and "need mail" in text:
        return (_("your {verb} came before MAIL: {said}. The envelope goes in order: MAIL FROM:<sender> first, "
                "then RCPT TO:<recipient>, then DATA.").format(verb=verb, said=said))
    if reply.code == 503 and "need rcpt" in text:
        return (_("your DATA came before any recipient was accepted: {said}. Get a 250 for "
                "RCPT TO:<{BOB}> before DATA.").format(said=said, BOB=BOB))
    if reply.code == 503 and "nested" in text:
        return _("you sent MAIL twice in one transaction: {said}. RSET starts the envelope over.").format(said=said)
    if reply.code == 530:
        return (_("your {verb} went to a submission server: {said}. That port wants STARTTLS and AUTH first; "
                "an MX (lab.session('mx1.example.net')) takes mail for its own users without a password.").format(verb=verb, said=said))
    if reply.code == 550 and reply.enhanced == "5.7.1":
        return (_("your line {line!r} names a domain this MX does not serve: {said}. An MX accepts mail "
                "only for its own domain (it is not an open relay).").format(line=step.line, said=said))
    if reply.code == 550 and reply.enhanced == "5.1.1":
        return _("there is no such mailbox: {said}. Bob's address is <{BOB}>.").format(said=said, BOB=BOB)
    if reply.code == 501:
        return (_("the server could not read the arguments of {line!r}: {said}. Write the address in angle "
                "brackets right after the colon, e.g. MAIL FROM:<alice@example.org> or RCPT TO:<bob@example.net>.").format(line=step.line, said=said))
    if reply.code == 500 and after_dot:
        return _("after that, the server read {line!r} as a command: {said}.").format(line=step.line, said=said)
    if reply.code == 500 and verb not in _COMMANDS:
        return (_("the server took your line {line!r} for a command: {said}. Message lines go after "
                "DATA, once the server has answered 354.").format(line=step.line, said=said))
    if reply.code == 500:
        return _("the server could not read {line!r}: {said}.").format(line=step.line, said=said)
    return _("your line {line!r} was refused: {said} ({meaning}).").format(line=step.line, said=said, meaning=reply.meaning)


# --- exercise 1: the lone dot -----------------------------------------------------------------


def check_dot_stuffing(wire_lines: Any, lab: Any) -> Feedback:
    """Send `wire_lines` after DATA to mx1 and check that Bob receives DOT_LINES intact."""
    hint = (_("Replace the ... in wire_lines with the line you must send so that Bob sees a line holding only "
            "a dot."))
    if is_placeholder(wire_lines) or (isinstance(wire_lines, (list, tuple)) and any(is_placeholder(x) for x in wire_lines)):
        return unanswered(hint, _(DOT_STUFFING))
    if not isinstance(wire_lines, (list, tuple)) or not all(isinstance(x, str) for x in wire_lines):
        return failed(_("wire_lines must be a list of strings, one line each, as they go on the wire after DATA."),
                      _(DOT_STUFFING))
    bad = [x for x in wire_lines if "\n" in x or "\r" in x]
    if bad:
        return failed(_("one line per item: {bad!r} holds a line break. SMTP sends the message line by line.").format(bad=bad[0]),
                      _(DOT_STUFFING))
    session = lab.session("mx1.example.net", "smtp")
    try:
        session.ehlo("student.local")
        session.mail("alice@example.org")
        session.rcpt(BOB)
        start = session.send("DATA")
        if start is None or start.code != 354:
            return failed(_("the check could not start a message on mx1: {start}").format(start=start), _(DOT_STUFFING))
        for line in wire_lines:
            session.send(line)
        still_in_data = session.in_data
        if not still_in_data and not session.closed:
            session.send("QUIT")
    except SmtpLabError as exc:
        return failed(_("the conversation broke off: {exc}").format(exc=exc), _(DOT_STUFFING))
    finally:
        session.close()
    if still_in_data:
        return failed(_("the server is still waiting: your last line is not a lone '.', so it never learnt that the "
                      "message was over. End wire_lines with \".\"."), _(DOT_STUFFING))
    steps = _steps(session.transcript)
    ends = [s for s in steps if s.line == "."]
    first_end = ends[0] if ends else None
    after = steps[steps.index(first_end) + 1:] if first_end else []
    refused_after = [s for s in after if s.reply is not None and s.reply.code >= 400 and s.verb != "QUIT"]
    queue_id = _delivered_id(first_end) if first_end else ""
    if first_end is None or not queue_id:
        reply = first_end.reply if first_end else None
        return failed(_("the message was not accepted: the server answered the lone dot with {reply}.").format(reply=reply), _(DOT_STUFFING))
    message = _find_in_mailbox(lab, BOB, queue_id)
    body = _body_lines(message) if message is not None else []
    if refused_after:
        early = refused_after[0]
        why = _why(early, after_dot=True)
        return failed(
            _("your message ended too early. The server took a line holding only '.' for the end of the message "
            "and answered {said}: Bob got only the lines before it. "
            "{why} How do mail programs send "
            "a line that starts with a dot? Compare the C: lines of the .bashrc/.profile example with what "
            "arrived in Bob's mailbox (RFC 5321 section 4.5.2).").format(said=_said(first_end.reply), why=why[:1].upper() + why[1:]), _(DOT_STUFFING))
    if message is None:
        return failed(_("the server accepted the message ({said}) but it is not in Bob's mailbox.").format(said=_said(first_end.reply)),
                      _(DOT_STUFFING))
    if _contains(body, list(DOT_LINES)):
        sent = wire_lines[list(wire_lines).index(DOT_LINES[0]) + 1] if DOT_LINES[0] in wire_lines else ".."
        return passed(_("Bob's message holds the line '.' intact. You sent {sent!r}; the server removed the first "
                      "dot of every line starting with a dot, and only a line that was exactly '.' ended the "
                      "message ({said}). That is dot-stuffing (RFC 5321 section 4.5.2); "
                      "smtplib and every mail program do it for you.").format(sent=sent, said=_said(first_end.reply)), _(DOT_STUFFING))
    if DOT_LINES[0] in body and DOT_LINES[2] in body:
        i, j = body.index(DOT_LINES[0]), body.index(DOT_LINES[2])
        between = body[i + 1:j]
        if not between:
            return failed(_("Bob's message has no line between the two sentences: the line with the dot is missing."),
                          _(DOT_STUFFING))
        return failed(_("where Bob should see '.', his message shows {value}. What did the "
                      "server do to the dot lines of the .bashrc/.profile example? Compare what went on the wire "
                      "with what Bob's mailbox holds.").format(value=' / '.join(map(repr, between))), _(DOT_STUFFING))
    return failed(_("Bob's message does not hold the three body lines of the exercise: keep the other lines of "
                  "wire_lines as they were and change only the ... line."), _(DOT_STUFFING))


def _find_in_mailbox(lab: Any, address: str, queue_id: str) -> Any:
    for message in reversed(lab.messages(address)):
        if any(hop.id == queue_id for hop in received_hops(message)):
            return message
    return None


def _body_lines(message: Any) -> list[str]:
    payload = message.get_payload()
    text = payload if isinstance(payload, str) else ""
    return text.replace("\r\n", "\n").split("\n")


def _contains(lines: list[str], wanted: list[str]) -> bool:
    return any(lines[i:i + len(wanted)] == wanted for i in range(len(lines) - len(wanted) + 1))


# --- exercise 2: a whole session --------------------------------------------------------------

_SHORTCUTS = ("ehlo", "starttls", "auth_plain", "mail", "rcpt", "data", "quit", "send_raw")


class TypedSession:
    """An SMTP session to an MX that has only `send()`: in exercise 2 the learner types every line.

    `lab.session(...)` also has shortcuts (`ehlo()`, `mail()`, `data(text)` ...) that write the lines for
    you; this exercise is about writing them, so its session has none, and the check reads what crossed
    the wire from the lab's trace of this very connection.
    """

    def __init__(self, lab: Any, host: str = "mx1.example.net", service: str | None = None) -> None:
        self._session = lab.session(host, service)

    def send(self, line: str) -> Reply | None:
        """Send one line (CRLF added) and return the server's reply (None inside DATA, until the lone '.')."""
        return self._session.send(line)

    @property
    def greeting(self) -> Reply:
        return self._session.greeting

    @property
    def conn(self) -> str:
        return self._session.conn

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def in_data(self) -> bool:
        return self._session.in_data

    @property
    def server_name(self) -> str:
        return self._session.server_name

    @property
    def transcript(self) -> list[str]:
        return list(self._session.transcript)

    def close(self) -> None:
        self._session.close()

    def __getattr__(self, name: str) -> Any:
        if name in _SHORTCUTS:
            raise AttributeError(_("{name}() is a shortcut that writes the line for you; in this exercise you type "
                                 "each line yourself with send(\"...\").").format(name=name))
        raise AttributeError(name)

    def __repr__(self) -> str:
        return _("<TypedSession to {server_name}: {count} lines so far>").format(server_name=self._session.server_name, count=len(self._session.transcript))


def typing_session(lab: Any, host: str = "mx1.example.net", service: str | None = None) -> TypedSession:
    """Open the session of exercise 2: an SMTP connection to `host` with `send()` only."""
    return TypedSession(lab, host, service)


def _wire_lines(lab: Any, conn: str) -> list[str]:
    """The connection's lines as the lab's MX recorded them, 'C: ...' and 'S: ...', message lines one each."""
    lines: list[str] = []
    for event in lab.trace.filter(conn=conn):
        if event.kind == "line":
            lines.append(f"{event.direction}: {event.text}")
        elif event.kind == "data" and event.direction == "C":
            lines.extend(f"C: {line}" for line in event.text.split("\n"))
    return lines


def _message_problem(step: _Step) -> str:
    """What the exercise's message lacks: a Subject header, the empty line, a body line."""
    lines = step.data
    blank = lines.index("") if "" in lines else None
    headers = lines if blank is None else lines[:blank]
    body = [] if blank is None else [line for line in lines[blank + 1:] if line.strip()]
    if not any(h.lower().startswith("subject:") and h.split(":", 1)[1].strip() for h in headers):
        return (_("your message has no Subject: header with a subject in it. The message starts with header "
                "lines, like Subject: hello."))
    if blank is None or not body:
        return (_("your message has no body: after the header lines comes an empty line (it separates the headers "
                "from the body), then at least one line of text."))
    return ""


def check_session(session: Any, lab: Any) -> Feedback:
    """Check that the learner typed a session that delivered a message with a Subject and a body to Bob."""
    if is_placeholder(session):
        return unanswered(_("Open the session with my_session = handshake.typing_session(lab) and send your lines."),
                          _(SESSION))
    if isinstance(session, SmtpSession):
        return failed(_("this is a session with shortcuts (ehlo(), mail(), data() ...), which write the lines for "
                      "you. Open the exercise's own session with my_session = handshake.typing_session(lab) and type "
                      "every line with my_session.send(...)."), _(SESSION))
    if not isinstance(session, TypedSession):
        return failed(_("give the session you opened with handshake.typing_session(lab), not a "
                      "{type}.").format(type=type(session).__name__), _(SESSION))
    steps = _steps(_wire_lines(lab, session.conn) if session.conn else session.transcript)
    steps = [s for s in steps if not s.line.startswith("*")]
    if not any(s.reply is not None or s.line for s in steps):
        return unanswered(_("The session is open, but you have not sent anything yet: start with "
                          "my_session.send(\"EHLO student.local\")."), _(SESSION))
    mail = next((s for s in steps if s.verb == "MAIL" and s.reply is not None and s.reply.code < 400), None)
    if mail is not None and "<>" in mail.line.replace(" ", ""):
        return failed(_("your MAIL FROM is the null sender <>, which only bounces use (RFC 5321 section 4.5.5): "
                      "nobody could answer or be told about a failure. Give a real sender address."), _(SESSION))
    deliveries = [(s, _delivered_id(s)) for s in steps if _delivered_id(s)]
    quit_ok = any(s.verb == "QUIT" and s.reply is not None and s.reply.code == 221 for s in steps)
    if deliveries:
        for step, queue_id in deliveries:
            message = _find_in_mailbox(lab, BOB, queue_id)
            if message is None:
                continue
            problem = _message_problem(step)
            if problem:
                return failed(_("Bob got a message from you ({said}), but {problem}").format(said=_said(step.reply), problem=problem), _(SESSION))
            subject = message.get("Subject", "(no subject)")
            if not quit_ok:
                return failed(_("almost: Bob has your message (Subject: {subject}; the server answered the lone dot "
                              "with {said}), but the session is still open. End it politely with "
                              "QUIT (my_session.send(\"QUIT\")): the server answers 221 and closes the connection.").format(subject=subject, said=_said(step.reply)),
                              _(SESSION))
            refused = [s for s in steps if s.reply is not None and s.reply.code >= 400]
            note = (_(" On the way the server refused {count} line(s), e.g. {why} "
                    "You recovered, as a client may: a refused command changes nothing on the server.").format(count=len(refused), why=_why(refused[0]))
                    if refused else "")
            return passed(_("Bob's mailbox has your message (Subject: {subject}): the server answered the lone "
                          "dot with {said} and QUIT with 221.{note}").format(subject=subject, said=_said(step.reply), note=note), _(SESSION))
        queue_id = deliveries[-1][1]
        return failed(_("the server accepted a message (id {queue_id}) but it is not in Bob's mailbox: check "
                      "that your RCPT TO was <{BOB}>.").format(queue_id=queue_id, BOB=BOB), _(SESSION))
    return failed(_what_is_missing(session, steps), _(SESSION))


def _what_is_missing(session: Any, steps: list[_Step]) -> str:
    def ok(step: _Step) -> bool:
        return step.reply is not None and step.reply.code < 400

    succeeded: set[str] = set()
    unfixed: list[_Step] = []
    for index, step in enumerate(steps):
        if ok(step):
            succeeded.add(step.verb)
        elif step.reply is not None and not any(
            later.verb == step.verb and ok(later) for later in steps[index + 1:]
        ):
            unfixed.append(step)
    if unfixed:
        extra = _(" You said QUIT before the message was delivered.") if "QUIT" in succeeded else ""
        return _why(unfixed[0]) + extra
    if session.in_data:
        return (_("you are inside DATA: the server has your message lines and waits for a line holding only '.' "
                "(my_session.send(\".\")). Until then it answers nothing."))
    if not {"EHLO", "HELO"} & succeeded:
        return _("you never introduced yourself: send EHLO first, e.g. my_session.send(\"EHLO student.local\").")
    if "MAIL" not in succeeded:
        return _("no sender was accepted yet: after EHLO send MAIL FROM:<alice@example.org>.")
    if not any(s.verb == "RCPT" and ok(s) and BOB in s.line.lower() for s in steps):
        return _("no recipient was accepted yet: after MAIL send RCPT TO:<{BOB}>.").format(BOB=BOB)
    if "DATA" not in succeeded:
        return (_("the envelope is ready (MAIL and RCPT accepted), but you never sent DATA: send DATA, wait for 354, "
                "then the message lines and a line holding only '.'."))
    return _("the message was never accepted: end it with a line holding only '.' and look for 250.")
