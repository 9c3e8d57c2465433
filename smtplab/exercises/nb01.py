"""Checks for notebook 01, the SMTP handshake: dot-stuffing, a whole session by hand, STARTTLS first.

Each check reads what really crossed the wire (the session's transcript, or a session it opens itself)
and Bob's mailbox, and says which line the server refused and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..client import SmtpSession
from ..errors import SmtpLabError
from ..hops import received_hops
from ..replies import Reply
from . import Feedback, failed, passed, unanswered

__all__ = ["check_dot_stuffing", "check_session", "check_starttls_prediction", "DOT_LINES"]

DOT_STUFFING = "Exercise 1 · the lone dot"
SESSION = "Exercise 2 · a whole session by hand"
PREDICT_530 = "Exercise 3 · predict the reply"

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


def _blank(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


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


def _said(reply: Reply) -> str:
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
    said = f"the server said {_said(reply)}"
    text = reply.text.lower()
    verb = step.verb
    if reply.code == 503 and "helo" in text:
        return f"your {verb} came before EHLO: {said}. Introduce yourself first, e.g. EHLO student.local."
    if reply.code == 503 and "need mail" in text:
        return (f"your {verb} came before MAIL: {said}. The envelope goes in order: MAIL FROM:<sender> first, "
                "then RCPT TO:<recipient>, then DATA.")
    if reply.code == 503 and "need rcpt" in text:
        return (f"your DATA came before any recipient was accepted: {said}. Get a 250 for "
                f"RCPT TO:<{BOB}> before DATA.")
    if reply.code == 503 and "nested" in text:
        return f"you sent MAIL twice in one transaction: {said}. RSET starts the envelope over."
    if reply.code == 530:
        return (f"your {verb} went to a submission server: {said}. That port wants STARTTLS and AUTH first; "
                "an MX (lab.session('mx1.example.net')) takes mail for its own users without a password.")
    if reply.code == 550 and reply.enhanced == "5.7.1":
        return (f"your line {step.line!r} names a domain this MX does not serve: {said}. An MX accepts mail "
                "only for its own domain (it is not an open relay).")
    if reply.code == 550 and reply.enhanced == "5.1.1":
        return f"there is no such mailbox: {said}. Bob's address is <{BOB}>."
    if reply.code == 501:
        return (f"the server could not read the arguments of {step.line!r}: {said}. Write the address in angle "
                "brackets right after the colon, e.g. MAIL FROM:<alice@example.org> or RCPT TO:<bob@example.net>.")
    if reply.code == 500 and after_dot:
        return f"after that, the server read {step.line!r} as a command: {said}."
    if reply.code == 500 and verb not in _COMMANDS:
        return (f"the server took your line {step.line!r} for a command: {said}. Message lines go after "
                "DATA, once the server has answered 354.")
    if reply.code == 500:
        return f"the server could not read {step.line!r}: {said}."
    return f"your line {step.line!r} was refused: {said} ({reply.meaning})."


# --- exercise 1: the lone dot -----------------------------------------------------------------


def check_dot_stuffing(wire_lines: Any, lab: Any) -> Feedback:
    """Send `wire_lines` after DATA to mx1 and check that Bob receives DOT_LINES intact."""
    hint = ("Replace the ... in wire_lines with the line you must send so that Bob sees a line holding only "
            "a dot (what does the server do with a lone '.'?)")
    if _blank(wire_lines) or (isinstance(wire_lines, (list, tuple)) and any(_blank(x) for x in wire_lines)):
        return unanswered(hint, DOT_STUFFING)
    if not isinstance(wire_lines, (list, tuple)) or not all(isinstance(x, str) for x in wire_lines):
        return failed("wire_lines must be a list of strings, one line each, as they go on the wire after DATA.",
                      DOT_STUFFING)
    bad = [x for x in wire_lines if "\n" in x or "\r" in x]
    if bad:
        return failed(f"one line per item: {bad[0]!r} holds a line break. SMTP sends the message line by line.",
                      DOT_STUFFING)
    session = lab.session("mx1.example.net", "smtp")
    try:
        session.ehlo("student.local")
        session.mail("alice@example.org")
        session.rcpt(BOB)
        start = session.send("DATA")
        if start is None or start.code != 354:
            return failed(f"the check could not start a message on mx1: {start}", DOT_STUFFING)
        for line in wire_lines:
            session.send(line)
        still_in_data = session.in_data
        if not still_in_data and not session.closed:
            session.send("QUIT")
    except SmtpLabError as exc:
        return failed(f"the conversation broke off: {exc}", DOT_STUFFING)
    finally:
        session.close()
    if still_in_data:
        return failed("the server is still waiting: your last line is not a lone '.', so it never learnt that the "
                      "message was over. End wire_lines with \".\".", DOT_STUFFING)
    steps = _steps(session.transcript)
    ends = [s for s in steps if s.line == "."]
    first_end = ends[0] if ends else None
    after = steps[steps.index(first_end) + 1:] if first_end else []
    refused_after = [s for s in after if s.reply is not None and s.reply.code >= 400 and s.verb != "QUIT"]
    queue_id = _delivered_id(first_end) if first_end else ""
    if first_end is None or not queue_id:
        reply = first_end.reply if first_end else None
        return failed(f"the message was not accepted: the server answered the lone dot with {reply}.", DOT_STUFFING)
    message = _find_in_mailbox(lab, BOB, queue_id)
    body = _body_lines(message) if message is not None else []
    if refused_after:
        early = refused_after[0]
        return failed(
            f"your message ended too early. The server took a line holding only '.' for the end of the message "
            f"and answered {_said(first_end.reply)}: Bob got only the lines before it. "
            f"{_why(early, after_dot=True)[0].upper()}{_why(early, after_dot=True)[1:]} Lines that start with a dot are sent with one more dot "
            "(RFC 5321 section 4.5.2): the server removes it again.", DOT_STUFFING)
    if message is None:
        return failed(f"the server accepted the message ({_said(first_end.reply)}) but it is not in Bob's mailbox.",
                      DOT_STUFFING)
    if _contains(body, list(DOT_LINES)):
        sent = wire_lines[list(wire_lines).index(DOT_LINES[0]) + 1] if DOT_LINES[0] in wire_lines else ".."
        return passed(f"Bob's message holds the line '.' intact. You sent {sent!r}; the server removed the first "
                      "dot of every line starting with a dot, and only a line that was exactly '.' ended the "
                      f"message ({_said(first_end.reply)}). That is dot-stuffing (RFC 5321 section 4.5.2); "
                      "smtplib and every mail program do it for you.", DOT_STUFFING)
    if DOT_LINES[0] in body and DOT_LINES[2] in body:
        i, j = body.index(DOT_LINES[0]), body.index(DOT_LINES[2])
        between = body[i + 1:j]
        if not between:
            return failed("Bob's message has no line between the two sentences: the line with the dot is missing.",
                          DOT_STUFFING)
        return failed(f"where Bob should see '.', his message shows {' / '.join(map(repr, between))}. The server "
                      "removes exactly one leading dot from each line: send '.' followed by the line you want Bob "
                      "to see.", DOT_STUFFING)
    return failed("Bob's message does not hold the three body lines of the exercise: keep the other lines of "
                  "wire_lines as they were and change only the ... line.", DOT_STUFFING)


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


def check_session(session: Any, lab: Any) -> Feedback:
    """Check that `session` delivered a message to Bob and ended with QUIT; name the first unfixed refusal."""
    if _blank(session):
        return unanswered("Open a session with lab.session('mx1.example.net') and send your lines.", SESSION)
    if not isinstance(session, SmtpSession):
        return failed(f"give the session you opened with lab.session('mx1.example.net'), not a "
                      f"{type(session).__name__}.", SESSION)
    steps = _steps(session.transcript)
    if not steps:
        return unanswered("The session is open, but you have not sent anything yet: start with "
                          "my_session.send(\"EHLO student.local\").", SESSION)
    deliveries = [(s, _delivered_id(s)) for s in steps if _delivered_id(s)]
    quit_ok = any(s.verb == "QUIT" and s.reply is not None and s.reply.code == 221 for s in steps)
    if deliveries:
        lab.wait_for_delivery()  # a submission server only queued it: let the relay finish first
        for step, queue_id in deliveries:
            message = _find_in_mailbox(lab, BOB, queue_id)
            if message is None:
                continue
            subject = message.get("Subject", "(no subject)")
            if not quit_ok:
                return failed(f"almost: Bob has your message (Subject: {subject}; the server answered the lone dot "
                              f"with {_said(step.reply)}), but the session is still open. End it politely with "
                              "QUIT (my_session.send(\"QUIT\")): the server answers 221 and closes the connection.", SESSION)
            refused = [s for s in steps if s.reply is not None and s.reply.code >= 400]
            note = (f" On the way the server refused {len(refused)} line(s), e.g. {_why(refused[0])} "
                    "You recovered, as a client may: a refused command changes nothing on the server."
                    if refused else "")
            via = "" if session.server_name == "mx1.example.net" else f" (you used {session.server_name})"
            return passed(f"Bob's mailbox has your message (Subject: {subject}){via}: the server answered the lone "
                          f"dot with {_said(step.reply)} and QUIT with 221.{note}", SESSION)
        _, queue_id = deliveries[-1]
        return failed(f"the server accepted a message (id {queue_id}) but it is not in Bob's mailbox: check "
                      f"that your RCPT TO was <{BOB}>.", SESSION)
    return failed(_what_is_missing(session, steps), SESSION)


def _what_is_missing(session: SmtpSession, steps: list[_Step]) -> str:
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
        extra = " You said QUIT before the message was delivered." if "QUIT" in succeeded else ""
        return _why(unfixed[0]) + extra
    if session.in_data:
        return ("you are inside DATA: the server has your message lines and waits for a line holding only '.' "
                "(my_session.send(\".\")). Until then it answers nothing.")
    if not {"EHLO", "HELO"} & succeeded:
        return "you never introduced yourself: send EHLO first, e.g. my_session.send(\"EHLO student.local\")."
    if "MAIL" not in succeeded:
        return "no sender was accepted yet: after EHLO send MAIL FROM:<alice@example.org>."
    if not any(s.verb == "RCPT" and ok(s) and BOB in s.line.lower() for s in steps):
        return f"no recipient was accepted yet: after MAIL send RCPT TO:<{BOB}>."
    if "DATA" not in succeeded:
        return ("the envelope is ready (MAIL and RCPT accepted), but you never sent DATA: send DATA, wait for 354, "
                "then the message lines and a line holding only '.'.")
    return "the message was never accepted: end it with a line holding only '.' and look for 250."


# --- exercise 3: predict --------------------------------------------------------------------


_WRONG_GUESSES = {
    250: "250 would mean the sender was accepted. On an unencrypted connection a submission server does not even "
         "start a transaction: the password that must come next would cross the network in clear text.",
    503: "close: 503 is the general 'bad sequence of commands'. For 'encrypt first' the server has a more "
         "specific code.",
    535: "535 means a login was tried with wrong credentials, but you have not tried to log in at all.",
    220: "220 is the greeting, and the answer to STARTTLS ('go ahead'); a MAIL command never gets it.",
    354: "354 is the server's 'go ahead, send the message' after DATA.",
    550: "550 refuses a mailbox or an address; the server has not looked at the address yet.",
    553: "553 refuses the sender address itself (e.g. not yours); the server has not looked at the address yet.",
    554: "554 refuses a transaction or the connection for policy reasons; there is a more specific code here.",
}


def _submission_reply(lab: Any) -> Reply:
    hosts = [h for h in lab.hosts.values() if "submission" in h.ports]
    host = next((h for h in hosts if h.name == "smtp.example.org"), hosts[0])
    sender = next((u.address for u in lab.users.values() if u.domain == host.domain), "alice@example.org")
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
    """Compare the predicted reply code with what the submission server really says to MAIL before STARTTLS."""
    if _blank(answer):
        return unanswered("Write the three-digit reply code you expect, e.g. answer = 250.", PREDICT_530)
    match = re.match(r"\s*([2-5]\d\d)\b", str(answer)) if not isinstance(answer, bool) else None
    if match is None:
        return failed(f"{answer!r} is not a reply code: answer with three digits such as 250 or 550.", PREDICT_530)
    guess = int(match.group(1))
    reply = _submission_reply(lab)
    said = f"The server said: {_said(reply)}."
    if guess == reply.code:
        return passed(f"Right. {said} {reply.code} means: {reply.meaning}. A submission server will not start a "
                      "transaction on a plain connection; the client must say STARTTLS, EHLO again, then AUTH.",
                      PREDICT_530)
    why = _WRONG_GUESSES.get(guess)
    if why is None:
        why = {
            "2": f"{guess} is a success code, but the server will not accept a sender on a plain connection yet.",
            "3": f"{guess} asks the client to go on, but nothing is underway yet.",
            "4": f"{guess} is a temporary failure ('try again later'); waiting would not change anything here.",
            "5": f"{guess} is a permanent failure, but not the one for 'encrypt and log in first'.",
        }[str(guess)[0]]
    return failed(f"{why} {said} ({reply.code} means: {reply.meaning}.)", PREDICT_530)
