"""Checks for the lesson "write your own client": an SMTP client made of `socket` (and `ssl`) by the learner.

The check calls the learner's function itself, with a subject and body it makes up on the spot (so a
transcript copied from elsewhere cannot pass), against mx1.example.net made deliberately slow: a short
stall before the greeting and before the replies to EHLO, MAIL and DATA, like a busy real server. A
client that does not wait for a reply is then caught every time, not only when it is unlucky. The verdict
comes from what the server saw: the raw bytes of the connection (`lab.wire`), the typed events of the
trace, and Bob's mailbox. Timing and line ends are judged on the clear-text part of the connection
(after STARTTLS the wire is encrypted, so only the trace's decoded lines are read there).
"""

from __future__ import annotations

import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..i18n import N_, _, pgettext
from ..trace.events import Connect, SmtpCommand, SmtpDataEnd, SmtpReply, TlsStarted
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_placeholder

__all__ = ["Server", "check_client", "check_bare_lf_prediction", "MX", "STALL"]

PLAIN = N_("Exercise 1 · an SMTP client of your own")
TLS = N_("Exercise 2 · the same client over STARTTLS")

MX = "mx1.example.net"
SENDER = "alice@example.org"
BOB = "bob@example.net"
STALL = 0.2  # seconds mx1 waits before the greeting and the replies to EHLO, MAIL and DATA
CLOSE_WAIT = 5.0  # seconds to wait for the server to finish a connection the client left open
STALLED = ("connect", "EHLO", "MAIL", "DATA")
# RFC 2920 §3.1: these commands end a pipelined group; the client waits for their reply. RFC 3207 §4: STARTTLS too.
_LAST_IN_GROUP = {"EHLO", "HELO", "DATA", "VRFY", "EXPN", "TURN", "QUIT", "NOOP", "STARTTLS", "AUTH"}


class Server(NamedTuple):
    """Where the learner's client connects: the MX's name (for TLS), address, port and the lab CA file."""

    name: str
    address: str
    port: int
    cafile: str


@dataclass
class _Line:
    """One client line on the clear-text wire and how many complete server replies had been sent before it."""

    raw: bytes
    replies_before: int


def _wire_lines(chunks: list[Any]) -> tuple[list[_Line], list[str], bool]:
    """Client lines (raw, with their line end), the server's final reply lines, and whether the server
    offered PIPELINING in a reply to EHLO, from the clear-text chunks."""
    client: list[_Line] = []
    replies: list[str] = []
    offered = False
    pending = b""
    server_buf = b""
    for chunk in chunks:
        if chunk.encrypted:
            break
        if chunk.direction == "S":
            server_buf += chunk.data
            *done, server_buf = server_buf.split(b"\r\n")
            offered = offered or any(x[:4] in (b"250-", b"250 ") and x[4:].upper() == b"PIPELINING" for x in done)
            # A reply's last line has a space (or nothing) after the code (RFC 5321 §4.2.1).
            replies += [x.decode("ascii", "replace") for x in done if x[3:4] in (b" ", b"")]
            continue
        pending += chunk.data
        while b"\n" in pending:
            line, _newline, pending = pending.partition(b"\n")
            client.append(_Line(line + b"\n", len(replies)))
    if pending:
        client.append(_Line(pending, len(replies)))
    return client, replies, offered


def _shown(raw: bytes) -> str:
    """A line as the learner would write it in Python, line end included: b'EHLO x\\n'."""
    return repr(raw)


def _analyse_wire(lines: list[_Line], offered: bool) -> str:
    """Return the first mistake visible on the clear-text wire, quoted, or ''."""
    if not lines:
        return ""
    first = lines[0]
    if first.replies_before == 0:
        return _("your client spoke first: the server received {line} before it had sent its greeting. An SMTP "
                 "session starts with the server's 220 line (RFC 5321 §3.1); a client reads it before its first "
                 "command. Talking first is what spam robots do, and real servers (Postfix's postscreen 'pregreet' "
                 "test) refuse them for it. Read from the socket before you send.").format(line=_shown(first.raw))
    bare = next((x for x in lines if x.raw.endswith(b"\n") and not x.raw.endswith(b"\r\n")), None)
    if bare is not None:
        return _("the server received {line}: the line ends with a bare LF. SMTP lines end with CR LF, the two "
                 "bytes b'\\r\\n' (RFC 5321 §2.3.8). This server forgives it in a command, but inside a message "
                 "only CR LF '.' CR LF ends it, and a message with a bare LF is refused (SMTP smuggling hides in "
                 "that difference).").format(line=_shown(bare.raw))
    # Lock-step: command i (counted from 0) is sent after the greeting and the replies to the i commands before.
    expected = 1
    in_body = False
    previous = ""
    for line in lines:
        text = line.raw.rstrip(b"\r\n")
        if in_body:
            if text == b".":
                in_body = False
                previous = "."
                expected += 1
            continue
        if previous == "DATA" and line.replies_before < expected:
            return _("your client sent {line} right after DATA, before the server's 354 ('go ahead') had "
                     "arrived. After DATA a client waits for 354 before the message (RFC 5321 §4.1.1.4; with "
                     "PIPELINING too, DATA ends a group: RFC 2920 §3.1). Read the reply after every "
                     "command.").format(line=_shown(line.raw))
        if previous == "DATA":
            if text == b".":  # an empty message
                previous, expected = ".", expected + 1
            else:
                in_body = True  # this line is the first of the message
            continue
        verb = text.split(b" ", 1)[0].decode("ascii", "replace").upper()
        if line.replies_before < expected and not (offered and previous not in _LAST_IN_GROUP):
            after = {"": pgettext("what a reply answers", "the greeting"),
                     ".": pgettext("what a reply answers", "the end of the message")}.get(previous, previous)
            why = (_("the server had not offered PIPELINING") if not offered else
                   _("even with PIPELINING, {command} ends a group (RFC 2920 §3.1)").format(command=previous))
            return _("your client sent {line} before the reply to {after} had arrived: {why}. Without that "
                     "extension, SMTP is lock-step: one command, then read its whole reply, then the next "
                     "(RFC 5321 §4.3.1).").format(line=_shown(line.raw), after=after, why=why)
        previous = verb
        expected += 1
    return ""


def _smtplib_shape(lines: list[_Line]) -> bool:
    """smtplib writes 'ehlo ...' and 'mail FROM:' in its own spelling: the exercise is to write the lines."""
    verbs = [x.raw.split(b" ", 1)[0] for x in lines[:3]]
    return b"ehlo" in verbs and any(x.raw.startswith(b"mail FROM:") for x in lines)


def _reply_text(event: Any) -> str:
    payload = event.payload
    if isinstance(payload, SmtpReply):
        return " ".join(p for p in (str(payload.code), payload.enhanced, payload.text) if p)
    return event.text


def check_client(send_mail: Any, lab: Any, *, tls: bool = False, wait: float = 15.0) -> Feedback:
    """Run the learner's `send_mail(server, sender, recipient, subject, body)` against a slow mx1 and judge it."""
    exercise = _(TLS if tls else PLAIN)
    if is_placeholder(send_mail):
        return unanswered(_("Write the function send_mail(server, sender, recipient, subject, body) in the cell "
                            "above, then pass it here."), exercise)
    if not callable(send_mail):
        return failed(_("give the function itself (send_mail, without parentheses), not a {kind}.").format(
            kind=type(send_mail).__name__), exercise)
    host = lab.host(MX)
    server = Server(host.name, host.address, host.ports["smtp"], lab.ca_file)
    token = secrets.token_hex(4)
    # The message the learner's client carries, in the learner's language (ASCII, so any client can send it).
    subject = _("my own client {token}").format(token=token)
    body = _("Hello Bob,\nthis message crossed the wire line by line ({token}).\nAlice").format(token=token)
    mark = lab.mark()
    faults = [lab.faults.add(MX, stage, delay=STALL) for stage in STALLED]
    error: list[BaseException] = []

    def run() -> None:
        try:
            send_mail(server, SENDER, BOB, subject, body)
        except BaseException as exc:  # noqa: BLE001 - the learner's code may raise anything; it is reported
            error.append(exc)

    opened: set[str] = set()
    closed: set[str] = set()
    settled = threading.Event()

    def watch(event: Any) -> None:  # the server finishes reading after the client hung up: wait for its close
        if event.host == MX and event.kind in ("connect", "close") and event.protocol == "smtp":
            (opened if event.kind == "connect" else closed).add(event.conn)
            if opened <= closed:
                settled.set()

    worker = threading.Thread(target=run, name="own-client-check", daemon=True)
    lab.trace.subscribe(watch)
    try:
        worker.start()
        worker.join(wait)
        if opened and not worker.is_alive():
            settled.wait(CLOSE_WAIT)  # a client that never closes its socket is judged on what it sent
    finally:
        lab.trace.unsubscribe(watch)
        for fault in faults:
            lab.faults.remove(fault)
    events = lab.trace.since(mark)
    conns = [e.conn for e in events if e.kind == "connect" and e.host == MX and isinstance(e.payload, Connect)
             and e.payload.server == f"{server.address}:{server.port}"]
    # Two sentences some verdicts end with: the learner's function still running, or the exception it raised.
    still = (" " + _("Your function had not returned after {seconds:g} s: it is probably waiting for a reply that "
                     "will not come.").format(seconds=wait) if worker.is_alive() else "")
    raised = " " + _("It raised {kind}: {error}.").format(kind=type(error[0]).__name__, error=error[0]) if error else ""
    if not conns:
        return failed(_("mx1 saw no connection from your function.") + still + raised + " " +
                      _("Connect to (server.address, server.port), here {address}:{port}.").format(
                          address=server.address, port=server.port), exercise)
    conn = conns[0]
    mine = [e for e in events if e.conn == conn]
    lines, _replies, offered = _wire_lines(lab.wire(conn).chunks)
    if _smtplib_shape(lines):
        return failed(_("the server saw smtplib's own spelling ('ehlo', 'mail FROM:'): this exercise is to write "
                        "each line yourself with socket.sendall and read each reply with recv."), exercise)
    mistake = _analyse_wire(lines, offered)
    if mistake:
        return failed(mistake[0].upper() + mistake[1:] + still + raised, exercise)
    commands = [(e, e.payload) for e in mine if e.kind == "line" and e.direction == "C"
                and isinstance(e.payload, SmtpCommand)]
    refused = next(((c, e) for c, e in zip(mine, mine[1:], strict=False)
                    if c.direction == "C" and isinstance(c.payload, SmtpCommand) and e.direction == "S"
                    and isinstance(e.payload, SmtpReply) and e.payload.code >= 500), None)
    if refused is not None:
        command, reply = refused
        return failed(_("the server refused your line {line!r} with {reply}. Compare it with a line that worked in "
                        "notebook 01 (lab.session).").format(line=command.text, reply=_reply_text(reply)) + raised,
                      exercise)
    tls_at = next((e.seq for e in mine if isinstance(e.payload, TlsStarted)), None)
    if tls:
        mail = next((e for e, p in commands if p.verb == "MAIL"), None)
        if tls_at is None:
            return failed(_("the server saw no TLS handshake on your connection: after EHLO, send STARTTLS, read "
                            "its 220, then wrap the socket with an ssl context that trusts server.cafile and names "
                            "server.name (RFC 3207 §4).") + still + raised, exercise)
        if mail is not None and mail.seq < tls_at:
            return failed(_("your {line!r} crossed the wire before STARTTLS, in clear text.").format(line=mail.text) +
                          raised, exercise)
        after = [p.verb for e, p in commands if e.seq > tls_at]
        if not after:
            return failed(_("after the TLS handshake your client sent no command: the server forgot everything it knew "
                            "of you, so introduce yourself again (RFC 3207 §4.2 says the client SHOULD send EHLO "
                            "again).") + raised, exercise)
        if after[0] not in ("EHLO", "HELO"):
            return failed(_("after the TLS handshake your first command was {command}: the server forgot everything "
                            "it knew of you, so introduce yourself again (RFC 3207 §4.2 says the client SHOULD send "
                            "EHLO again).").format(command=after[0]) + raised, exercise)
    if any(isinstance(e.payload, SmtpCommand) and e.payload.verb == "DATA" for e in mine) and \
            not any(isinstance(e.payload, SmtpDataEnd) for e in mine):
        return failed(_("the server read your message but never the line holding only '.' that ends it (with CR LF "
                        "before and after it): it was still waiting for more of the message.") + still + raised,
                      exercise)
    delivered = [m for m in lab.messages(BOB) if m.get("Subject", "") == subject]
    if not delivered:
        sent = [p.verb for _event, p in commands]
        return failed(_("Bob has no message with the subject the check gave you ({subject!r}). The server saw these "
                        "commands: {commands}. Did your message start with a Subject: header line built from the "
                        "subject argument?").format(subject=subject, commands=", ".join(sent) or pgettext("no SMTP command", "none")) +
                      still + raised, exercise)
    if token not in delivered[-1].get_payload():
        return failed(_("Bob has your message, but its body is not the body the check passed to your function: send "
                        "the body argument after the header lines and one empty line.") + raised, exercise)
    if not any(p.verb == "QUIT" for _event, p in commands):
        return failed(_("Bob has your message, but your client never said QUIT: it just hung up. RFC 5321 §4.1.1.10 "
                        "asks the client to end the session with QUIT and read the server's 221.") + raised, exercise)
    if tls:
        done = _("Bob has your message (Subject: {subject}), sent over TLS from STARTTLS on.")
    else:
        done = _("Bob has your message (Subject: {subject}), sent in clear text.")
    return passed(done.format(subject=subject) + " " + _(
        "Your client waited for every reply, even with mx1 pausing {seconds:g} s before each one, ended each line "
        "with CR LF, ended the message with a lone dot and said QUIT.").format(seconds=STALL), exercise)


# --- the prediction before the first experiment -------------------------------------------------------

PREDICT = N_("Prediction · a bare LF after EHLO")
_CHOICES = ("answer", "error", "wait")


def check_bare_lf_prediction(prediction: Any, lab: Any, *, wait: float = 3.0) -> Feedback:
    """Send 'EHLO student.example' ended by a bare LF to mx1 and compare what happens with the prediction.

    The prediction is one of 'answer' (a 2xx reply), 'error' (a 4xx/5xx reply) or 'wait' (no reply:
    the server waits for the rest of the line). The experiment runs only once a prediction is given.
    """
    if is_placeholder(prediction):
        return unanswered(_("Before you run this, write prediction = 'answer', 'error' or 'wait'."), _(PREDICT))
    guess = str(prediction).strip().strip("'\"").lower()
    if guess not in _CHOICES:
        return failed(_("{prediction!r} is not one of 'answer', 'error' or 'wait'.").format(prediction=prediction),
                      _(PREDICT))
    committed = first_answer(PREDICT, guess)  # a prediction counts once: trying each choice teaches nothing
    note = changed_answer_note(committed, guess)
    host = lab.host(MX)
    mark = lab.mark()
    with socket.create_connection((host.address, host.ports["smtp"]), timeout=wait) as sock:
        replies = sock.makefile("rb")
        replies.readline()  # the greeting
        sock.sendall(b"EHLO student.example\n")
        first = ""
        try:
            first = line = replies.readline().decode("ascii", "replace").rstrip("\r\n")
            while line[3:4] == "-":  # the rest of a multi-line reply (RFC 5321 §4.2.1)
                line = replies.readline().decode("ascii", "replace").rstrip("\r\n")
            sock.sendall(b"QUIT\r\n")
            replies.readline()
        except OSError:  # TimeoutError included: no reply is the evidence then
            pass
    code = first[:3]
    observed = "wait" if not code.isdigit() else ("answer" if code.startswith("2") else "error")
    read = next((e.text for e in lab.trace.since(mark) if e.direction == "C" and e.host == MX), "")
    if first:
        evidence = _("The server read the line as {line!r} (<LF> marks the bare line feed) and its reply began "
                     "{reply!r}.").format(line=read, reply=first)
    else:
        evidence = _("No reply came within {seconds:g} s.").format(seconds=wait)
    if committed == observed:
        return passed(note + evidence + " " + _("This server forgives a bare LF at the end of a command; inside a "
                                                "message it does not (RFC 5321 §2.3.8: lines end with CR LF)."),
                      _(PREDICT))
    return failed(note + evidence + " " + _("Look at the reply code: what does its first digit say (RFC 5321 "
                                            "§4.2.1)? Then read on: why might a server forgive this in a command "
                                            "and not in a message?"), _(PREDICT))
