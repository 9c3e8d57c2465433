"""Exercises of the Wireshark notebook: predict what TLS hides, find STARTTLS's 220 in your capture, and read the
password in the AUTH PLAIN line once Wireshark has decrypted the session.

Each check reads the learner's own capture file (frame by frame, numbered as Wireshark numbers them) and the
lab's trace of the same connections; the feedback to a wrong answer quotes what the capture holds and says
how to find the right frame or line, never the answer itself.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from ..i18n import N_, _, pgettext
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["check_mail_prediction", "check_starttls_frame", "check_auth_password"]

PREDICT = N_("Exercise 1 · predict: MAIL FROM without the key log")
FRAME = N_("Exercise 2 · the frame of STARTTLS's 220")
PASSWORD = N_("Exercise 3 · the password inside TLS")

SUBMISSION_HOST = "smtp.example.org"
_YES = {"yes", "y", "true", "si", "sí", "1"}
_NO = {"no", "n", "false", "0"}
_MAIL = re.compile(rb"^mail from:", re.IGNORECASE | re.MULTILINE)
_AUTH_PLAIN = re.compile(r"^AUTH PLAIN (\S+)$", re.IGNORECASE)


def _frames(capture: Any) -> list[Any] | Feedback:
    try:
        return list(capture.frames())
    except (AttributeError, OSError) as exc:
        return failed(_("could not read {capture!r} as a capture ({error}): pass the object lab.pcap(...) returned, "
                        "e.g. capture.").format(capture=capture, error=exc))


@dataclass(frozen=True)
class _Submission:
    """One connection from a mail client to the submission port, as it is in the capture."""

    client_port: int
    frames: list[Any]  # its frames in order
    starttls: Any  # the client's STARTTLS frame (a Frame, or None)
    reply: Any  # the server's first data frame after it, the 220 (or None)


def _submissions(frames: list[Any], lab: Any) -> list[_Submission]:
    host = lab.host(SUBMISSION_HOST)
    server = (host.address, host.ports["submission"])
    by_port: dict[int, list[Any]] = {}
    for frame in frames:
        if (frame.destination, frame.destination_port) == server:
            by_port.setdefault(frame.source_port, []).append(frame)
        elif (frame.source, frame.source_port) == server:
            by_port.setdefault(frame.destination_port, []).append(frame)
    out = []
    for port, own in by_port.items():
        starttls = next((f for f in own if f.source_port == port and f.payload.upper() == b"STARTTLS\r\n"), None)
        reply = None
        if starttls is not None:
            reply = next((f for f in own if f.number > starttls.number and f.destination_port == port
                          and f.payload), None)
        out.append(_Submission(port, own, starttls, reply))
    return out


def check_mail_prediction(answer: Any, capture: Any, lab: Any) -> Feedback:
    """Without the key log, can anyone holding the capture read the client's `MAIL FROM` line? (yes / no)"""
    if is_blank(answer):
        return unanswered(_('Write answer = "yes" or answer = "no", then run this cell.'), _(PREDICT))
    word = str(answer).strip().lower()
    if isinstance(answer, bool):
        word = "yes" if answer else "no"
    if word not in _YES | _NO:
        return failed(_("{answer!r} is neither yes nor no: answer \"yes\" if you expect to read MAIL FROM in the "
                        "capture without the key log, \"no\" if not.").format(answer=answer), _(PREDICT))
    frames = _frames(capture)
    if isinstance(frames, Feedback):
        return frames
    # A yes/no prediction counts once: were every answer judged afresh, the verdict would replace the search.
    given = "yes" if word in _YES else "no"
    committed = first_answer(PREDICT, given)
    note = changed_answer_note(committed, given)
    clear = [f for f in frames if f.transport == "tcp" and _MAIL.search(f.payload)]
    tls = [s for s in _submissions(frames, lab) if s.reply is not None]
    if (committed == "yes") == bool(clear):
        if clear:
            return passed(note + _("Right: frame {number} carries {text!r} in clear text. Whoever holds the capture "
                                   "reads it, no key needed: this connection had no TLS.").format(
                                       number=clear[0].number, text=clear[0].text()), _(PREDICT))
        return passed(note + _("Right: no frame of the capture holds a MAIL FROM line in clear text. After STARTTLS "
                               "the client's commands travel inside TLS application-data records; the envelope, the "
                               "AUTH line and the message itself are all in there."), _(PREDICT))
    if clear:
        return failed(note + _("look at frame {number}: it carries {text!r}, readable without any key. Which "
                               "connection is it on, and did that connection say STARTTLS before?").format(
                                   number=clear[0].number, text=clear[0].text()), _(PREDICT))
    evidence = ""
    if tls:
        first = tls[0]
        after = [f for f in first.frames if f.number > first.reply.number and f.payload]
        kinds = sorted({pgettext("capture contents", "TLS records") if f.is_tls
                        else pgettext("capture contents", "clear text") for f in after})
        evidence = " " + _("In your capture, the client said STARTTLS in frame {frame}; the {count} frames with data "
                           "after the server's answer on that connection hold: {kinds}.").format(
                               frame=first.starttls.number, count=len(after), kinds=", ".join(kinds))
    return failed(note + _("search the capture for the line yourself: no frame holds 'MAIL FROM' as text.") + evidence +
                  " " + _("Run the next cell, which asks tshark for MAIL commands without the key log."), _(PREDICT))


def check_starttls_frame(answer: Any, capture: Any, lab: Any) -> Feedback:
    """Which frame number carries the server's 220 reply to STARTTLS on your submission connection?"""
    if is_blank(answer):
        return unanswered(_("Put the frame number (the first column of the listing) in answer, e.g. answer = 12."),
                          _(FRAME))
    if isinstance(answer, bool) or not re.fullmatch(r"\s*\d+\s*", str(answer)):
        return failed(_("{answer!r} is not a frame number: give the number in the first column of the listing "
                        "(Wireshark's 'No.' column), e.g. answer = 12.").format(answer=answer), _(FRAME))
    number = int(str(answer))
    frames = _frames(capture)
    if isinstance(frames, Feedback):
        return frames
    submissions = [s for s in _submissions(frames, lab) if s.reply is not None]
    if not submissions:
        return failed(_("this capture holds no STARTTLS on a connection to {host}: write it after lab.send(...) "
                        "with lab.pcap(...), and pass that capture.").format(host=SUBMISSION_HOST), _(FRAME))
    if any(s.reply.number == number for s in submissions):
        reply = next(s.reply for s in submissions if s.reply.number == number)
        return passed(_("Right: frame {number}, {source} to {destination}: {text!r}. It is the last clear text on "
                        "that connection; the next frame from the client is the TLS ClientHello.").format(
                            number=number, source=reply.source, destination=reply.destination, text=reply.text()),
                      _(FRAME))
    by_number = {f.number: f for f in frames}
    if number not in by_number:
        return failed(_("your capture has frames 1 to {count}, and {number} is not one of them. Find the client's "
                        "STARTTLS line, then the server's answer after it.").format(count=len(frames), number=number),
                      _(FRAME))
    frame = by_number[number]
    if frame.text():
        what = _("frame {number} goes from {source}:{source_port} to {destination}:{destination_port} and carries "
                 "{text}.")
    else:
        what = _("frame {number} goes from {source}:{source_port} to {destination}:{destination_port} and carries "
                 "no data (a TCP {flags}).")
    what = what.format(number=number, source=frame.source, source_port=frame.source_port,
                       destination=frame.destination, destination_port=frame.destination_port, text=frame.text(),
                       flags=frame.flags)
    if any(s.starttls is not None and s.starttls.number == number for s in submissions):
        hint = _("That is the client's command; the 220 is the server's answer to it: a later frame, in the other "
                 "direction.")
    elif frame.payload.startswith(b"220") and b"TLS" not in frame.payload.upper():
        hint = _("A 220 at the start of a connection is the greeting; the 220 you want answers the STARTTLS command.")
    elif frame.payload.startswith(b"220"):
        hint = _("That 220 answers a STARTTLS on another connection (the relay's, to an MX). Yours is the one "
                 "between {host} and your notebook's client (127.0.0.1).").format(host=SUBMISSION_HOST)
    elif frame.is_tls:
        hint = _("That frame is already encrypted: the 220 comes before the first TLS record of its connection.")
    else:
        hint = _("Filter the listing with smtp.response.code == 220 (tshark -Y, or Wireshark's filter bar).")
    return failed(f"{what} {hint}", _(FRAME))


def _auth_lines(capture: Any, lab: Any) -> list[tuple[str, str]]:
    """(login, password) of every AUTH PLAIN that crossed a submission connection in the capture (inside TLS).

    The bytes in the capture are encrypted; the lab's trace has what the server read after decrypting them.
    """
    frames = capture.frames()
    ports = {s.client_port for s in _submissions(frames, lab)}
    out = []
    for event in lab.trace.filter(protocol="smtp", kind="line"):
        if event.direction != "C" or event.port_name != "submission":
            continue
        if not event.client or int(event.client.rpartition(":")[2]) not in ports:
            continue
        match = _AUTH_PLAIN.match(event.text)
        if match is None:
            continue
        try:
            fields = base64.b64decode(match.group(1), validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            continue
        if len(fields) == 3:
            out.append((fields[1].decode("utf-8", "replace"), fields[2].decode("utf-8", "replace")))
    return out


def check_auth_password(answer: Any, capture: Any, lab: Any) -> Feedback:
    """What is the password in the AUTH PLAIN line of the decrypted submission session?"""
    if is_blank(answer):
        return unanswered(_("Find 'AUTH PLAIN ...' in the decrypted listing, decode its token with "
                            "base64.b64decode, and put the password (text) in answer."), _(PASSWORD))
    if isinstance(answer, (bytes, bytearray)):
        text = bytes(answer).decode("utf-8", "replace")
        note = " " + _("(You gave bytes; .decode() makes them text.)")
    elif isinstance(answer, str):
        text, note = answer, ""
    else:
        return failed(_("give the password as text (a str), not a {kind}.").format(kind=type(answer).__name__),
                      _(PASSWORD))
    frames = _frames(capture)
    if isinstance(frames, Feedback):
        return frames
    logins = _auth_lines(capture, lab)
    if not logins:
        return failed(_("no AUTH PLAIN line crossed a connection to {host} in this capture. Write the capture after "
                        "lab.send(...) (which logs in with AUTH PLAIN), and pass that capture.").format(
                            host=SUBMISSION_HOST), _(PASSWORD))
    passwords = {password for _login, password in logins}
    if text in passwords:
        return passed(_("Right.{note} TLS hid this line from everyone on the wire; with the session keys, Wireshark "
                        "showed it, and base64 hid nothing from you. AUTH PLAIN is safe only inside TLS (RFC 4954 §4 "
                        "and RFC 4616 §6 say so): a server that offers it on a plain connection gives the password "
                        "away.").format(note=note), _(PASSWORD))
    stripped = text.strip().strip("'\"")
    if stripped in passwords:
        return failed(_("almost: your answer has {count} characters too many around it (spaces or quotes). Give "
                        "exactly the third field.").format(count=len(text) - len(stripped)), _(PASSWORD))
    tokens = {base64.b64encode(f"\0{login}\0{password}".encode()).decode() for login, password in logins}
    if any(len(stripped) >= 8 and stripped in token for token in tokens):
        return failed(_("{answer!r} is base64, as the token crossed the wire (inside TLS). base64.b64decode(token) "
                        "turns it into the bytes it encodes.").format(answer=stripped), _(PASSWORD))
    if any(stripped.lower() == login.lower() for login, _password in logins):
        return failed(_("{answer!r} is the login name, the second of the three fields the token decodes to "
                        "(authorization identity, login, password, separated by NUL bytes: RFC 4616). The password "
                        "is the third.").format(answer=stripped), _(PASSWORD))
    if any(password in text for password in passwords):
        return failed(_("the password is in there, with more around it: your answer has {count} characters. Split "
                        "the decoded bytes at b'\\0' and give only the third field.").format(count=len(text)),
                      _(PASSWORD))
    return failed(_("{answer!r} is not the password in the AUTH PLAIN line of your capture. In the decrypted "
                    "listing, the line reads 'AUTH PLAIN <token>': decode the token with base64.b64decode(token) and "
                    "split it at b'\\0'.").format(answer=text), _(PASSWORD))
