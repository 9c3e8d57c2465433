"""Checks of notebook 05's first part: what an eavesdropper sees before and after STARTTLS.

`check_capture` reads the learner's own capture of the lab (`lab.pcap`, frames numbered as Wireshark
numbers them): the frame where an AUTH line crossed in clear text, and the frame where TLS began on
Alice's connection, after which no command is readable. `check_stolen_password` runs the learner's
function on the wire text of a clear-text login, and on a capture from another lab it has never seen.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from ..i18n import N_, _
from ..lab import Lab
from ..scenario import Scenario
from . import Feedback, failed, passed, unanswered
from ._answers import is_blank

__all__ = ["check_capture", "check_stolen_password"]

CAPTURE = N_("Exercise 1 · the eavesdropper's capture")
PASSWORD = N_("Exercise 2 · read a password off the wire")

ALICE = "alice@example.org"
MSA_HOST = "smtp.example.org"



# --- exercise 1: the capture, before and after STARTTLS ---

def _frame_number(value: Any) -> int | None:
    if isinstance(value, bool) or not re.fullmatch(r"\s*\d+\s*", str(value)):
        return None
    return int(str(value))


def _describe(frame: Any) -> str:
    what = frame.text() or _("no data (a TCP {flags})").format(flags=frame.flags)
    return (_("frame {number} goes from {source}:{source_port} to {destination}:"
            "{destination_port} and carries {what!r}").format(number=frame.number, source=frame.source, source_port=frame.source_port, destination=frame.destination, destination_port=frame.destination_port, what=what))


def _is_auth(frame: Any) -> bool:
    return frame.transport == "tcp" and not frame.is_tls and frame.payload[:5].upper() == b"AUTH "


def _alice_connections(frames: list[Any], lab: Any) -> dict[int, list[Any]]:
    """The frames of each connection to the MSA's submission port, by the client's port."""
    host = lab.host(MSA_HOST)
    server = (host.address, host.ports["submission"])
    out: dict[int, list[Any]] = {}
    for frame in frames:
        if (frame.destination, frame.destination_port) == server:
            out.setdefault(frame.source_port, []).append(frame)
        elif (frame.source, frame.source_port) == server:
            out.setdefault(frame.destination_port, []).append(frame)
    return out


def check_capture(capture: Any, lab: Any, clear_auth_frame: Any, alice_tls_frame: Any) -> Feedback:
    """Which frame shows an AUTH line in clear text, and where does TLS begin on Alice's submission connection?

    Both are frame numbers of the learner's own capture; a wrong one is told what that frame really
    carries and how to find the right one, never its number.
    """
    if is_blank(clear_auth_frame) and is_blank(alice_tls_frame):
        return unanswered(_("Put two frame numbers (the first column of the listing) in clear_auth_frame and "
                          "alice_tls_frame."), _(CAPTURE))
    try:
        frames = list(capture.frames())
    except (AttributeError, OSError) as exc:
        return failed(_("could not read {capture!r} as a capture ({exc}): pass the object lab.pcap(...) returned.").format(capture=capture, exc=exc),
                      _(CAPTURE))
    by_number = {f.number: f for f in frames}
    clear = [f for f in frames if _is_auth(f)]
    if not clear:
        return failed(_("no frame of this capture holds an AUTH line in clear text: write the capture after Bob's "
                      "login to smtp.example.net (the cell before), with lab.pcap(...)."), _(CAPTURE))
    connections = _alice_connections(frames, lab)
    starts = {port: tls[0] for port, own in connections.items() if (tls := [f for f in own if f.is_tls])}
    if not starts:
        return failed(_("this capture holds no TLS on a connection to {MSA_HOST}'s submission port: write it after "
                      "Alice's submission (section 1's first cell).").format(MSA_HOST=MSA_HOST), _(CAPTURE))
    problems = []
    auth_number = _frame_number(clear_auth_frame)
    if is_blank(clear_auth_frame):
        problems.append(_("clear_auth_frame is still empty: search the frames' payloads for b'AUTH'"))
    elif auth_number is None:
        problems.append(_("clear_auth_frame is {clear_auth_frame!r}, not a frame number like 12").format(clear_auth_frame=clear_auth_frame))
    elif auth_number not in by_number:
        problems.append(_("clear_auth_frame: the capture has frames 1 to {count}, and {auth_number} is not one").format(count=len(frames), auth_number=auth_number))
    elif auth_number not in {f.number for f in clear}:
        frame = by_number[auth_number]
        why = (_("it is encrypted: nobody without the keys reads a command in it") if frame.is_tls else
               _("look for the payload that starts with the command AUTH, in the client-to-server direction"))
        problems.append(f"clear_auth_frame: {_describe(frame)}; {why}")
    tls_number = _frame_number(alice_tls_frame)
    if is_blank(alice_tls_frame):
        problems.append(_("alice_tls_frame is still empty: on Alice's connection, which is the first frame with a TLS "
                        "record (frame.is_tls)?"))
    elif tls_number is None:
        problems.append(_("alice_tls_frame is {alice_tls_frame!r}, not a frame number like 12").format(alice_tls_frame=alice_tls_frame))
    elif tls_number not in by_number:
        problems.append(_("alice_tls_frame: the capture has frames 1 to {count}, and {tls_number} is not one").format(count=len(frames), tls_number=tls_number))
    elif tls_number not in {f.number for f in starts.values()}:
        frame = by_number[tls_number]
        port = next((p for p, own in connections.items() if frame in own), None)
        if port is None:
            why = (_("that is not Alice's connection: hers goes to {MSA_HOST} "
                   "({host}), port {host2}").format(MSA_HOST=MSA_HOST, host=lab.host(MSA_HOST).address, host2=lab.host(MSA_HOST).ports['submission']))
        elif not frame.is_tls:
            why = _("that frame is still clear text: TLS starts after the server's go-ahead to STARTTLS")
        else:
            why = _("an earlier frame of the same connection already carries a TLS record")
        problems.append(f"alice_tls_frame: {_describe(frame)}; {why}")
    if problems:
        return failed(_("Not yet: ") + "; ".join(problems) + ".", _(CAPTURE))
    auth = by_number[auth_number]  # type: ignore[index]
    start = by_number[tls_number]  # type: ignore[index]
    own = next(own for own in connections.values() if start in own)
    later = [f for f in own if f.number > start.number and f.payload]
    readable = [f for f in later if not f.is_tls]
    return passed(_("Right. Frame {number} carries {text!r} from {source} to {destination}: "
                  "anyone holding the capture decodes that base64 token. On Alice's connection TLS starts in "
                  "frame {number2}; the {count} frames with data after it hold TLS records only "
                  "({count2} readable), so her AUTH line, her envelope and her message are in there, and "
                  "no byte search finds them. The eavesdropper still saw what came before: the greeting, the "
                  "EHLO and its extensions, and STARTTLS itself.").format(number=auth.number, text=auth.text(), source=auth.source, destination=auth.destination, number2=start.number, count=len(later), count2=len(readable)), _(CAPTURE))


# --- exercise 2: the password on the wire ---

_AUTH_PLAIN = re.compile(r"^C: AUTH PLAIN (\S+)\s*$", re.M)


def _clear_logins(lab: Any) -> list[tuple[str, str, str, str]]:
    """(connection, token, login, password) of every AUTH PLAIN that crossed an SMTP connection in clear."""
    found = []
    for conn in lab.trace.connections("smtp"):
        try:
            wire = lab.wire(conn).render()
        except KeyError:
            continue
        for token in _AUTH_PLAIN.findall(wire):
            try:
                fields = base64.b64decode(token, validate=True).split(b"\0")
            except (binascii.Error, ValueError):
                continue
            if len(fields) == 3:
                login, password = (f.decode("utf-8", "replace") for f in fields[1:])
                found.append((conn, token, login, password))
    return found


def _careless_capture() -> tuple[str, str, str]:
    """(wire text, login, password) of a clear-text AUTH PLAIN in a fresh lab the learner has never seen."""
    scenario = Scenario.security(policy="none").to_dict()
    scenario["providers"][0]["hosts"]["smtp.example.org"] = {"services": ["submission", "smtp"],
                                                            "options": ["plaintext_auth"]}
    with Lab(scenario).start() as other:
        alice = other.users[ALICE]
        session = other.session("smtp.example.org")
        try:
            session.ehlo("laptop.example.org")
            session.auth_plain(alice.address, alice.password)
            session.quit()
        finally:
            session.close()
        return other.wire(session.conn).render(), alice.address, alice.password


def _run(steal: Any, wire_text: str) -> tuple[Any, str]:
    """Call the learner's function; return (its result, '') or (None, what went wrong)."""
    try:
        return steal(wire_text), ""
    except Exception as exc:  # the learner's code: report, never crash a Run-All
        return None, f"{type(exc).__name__}: {exc}"


def check_stolen_password(lab: Any, steal: Any) -> Feedback:
    """Run the learner's `steal(wire_text)` on the notebook's capture and on a fresh one from another lab.

    A function, not a pasted value: the second capture has a password the learner has never seen (and
    that no variable of the notebook holds), so only code that really reads the wire finds it.
    """
    if is_blank(steal):
        return unanswered(_("Write the function steal_password(wire_text): it finds the AUTH PLAIN line in what the "
                          "eavesdropper saw, decodes its token and returns the password as text."), _(PASSWORD))
    if isinstance(steal, (str, bytes, bytearray)):
        return failed(_("give the function itself (steal_password, without parentheses), not a value: the check "
                      "runs it on the capture above and on a capture from another lab that you have not seen."),
                      _(PASSWORD))
    if not callable(steal):
        return failed(_("steal_password must be a function of wire_text, not a {type}.").format(type=type(steal).__name__), _(PASSWORD))
    captures = _clear_logins(lab)
    if not captures:
        return failed(_("no password crossed any SMTP connection of this lab in clear text, so there is nothing to "
                      "read yet. Run the cell where Bob logs in to smtp.example.net without STARTTLS first. (If "
                      "you have gone on to a later section, `lab` is already a newer lab: run the notebook from "
                      "the top.)"), _(PASSWORD))
    conn = captures[-1][0]
    answer, error = _run(steal, lab.wire(conn).render())
    if error:
        return failed(_("steal_password(wire_text) raised {error}. Try your steps one at a time in a cell on "
                      "wire_text.").format(error=error), _(PASSWORD))
    if is_blank(answer):
        return unanswered(_("steal_password returns nothing yet: write its steps, and end it with return and the "
                          "password."), _(PASSWORD))
    verdict = _judge_password(lab, answer, captures)
    if not verdict.ok:
        return verdict
    try:
        other_wire, other_login, other_password = _careless_capture()
    except Exception as exc:  # the check must never crash a Run-All
        return failed(_("the check could not start its second lab: {exc}").format(exc=exc), _(PASSWORD))
    other, error = _run(steal, other_wire)
    if error:
        return failed(_("steal_password worked on this notebook's capture but raised {error} on another lab's "
                      "capture (a login by {other_login}). Does it rely on something only this capture has?").format(error=error, other_login=other_login),
                      _(PASSWORD))
    text = other.decode("utf-8", "replace") if isinstance(other, (bytes, bytearray)) else other
    if text != other_password:
        return failed(_("steal_password found the password in this notebook's capture, but on another lab's capture "
                      "(a login by {other_login}) it returned {other!r}, which is not what crossed that wire. Read "
                      "the password out of wire_text itself, whatever user logged in.").format(other_login=other_login, other=other), _(PASSWORD))
    return verdict


def _judge_password(lab: Any, answer: Any, captures: list[tuple[str, str, str, str]]) -> Feedback:
    """Compare what the learner's function returned with the passwords that crossed the lab's wire."""
    was_bytes = isinstance(answer, (bytes, bytearray))
    if was_bytes:
        text = bytes(answer).decode("utf-8", "replace")
    elif isinstance(answer, str):
        text = answer
    else:
        return failed(_("steal_password returned {answer!r}: give the password as text (a str), not a "
                      "{type}.").format(answer=answer, type=type(answer).__name__), _(PASSWORD))
    if not text.strip():
        return failed(_("steal_password returned nothing but blanks: find the line 'C: AUTH PLAIN ...' in wire_text "
                      "first."), _(PASSWORD))
    by_password = {password: (conn, token, login) for conn, token, login, password in captures}
    if text in by_password:
        conn, token, login = by_password[text]
        note = _(" (It returns bytes; .decode() would make them text.)") if was_bytes else ""
        return passed(_("Right: steal_password read {login}'s password off the wire.{note} It crossed connection "
                      "{conn} as 'C: AUTH PLAIN {token}', and your function found the password of another "
                      "login in another lab as well. Base64 is an encoding, not encryption: anyone who sees the "
                      "wire does what you just did. After STARTTLS the same line travels inside TLS records, which "
                      "is why every other submission host refuses AUTH before STARTTLS.").format(login=login, note=note, conn=conn, token=token), _(PASSWORD))
    stripped = text.strip().strip("'\"")
    if stripped in by_password:
        return failed(_("almost: the password is there, but with extra characters around it ({text!r}). "
                      "Return exactly the third field of the decoded token.").format(text=text), _(PASSWORD))
    conn, token, login, password = captures[-1]
    looks_like_nul = "\0" in text or "\\x00" in text or "\\0" in text
    if stripped in (token, f"AUTH PLAIN {token}", f"C: AUTH PLAIN {token}") or (len(stripped) >= 8
                                                                             and stripped in token):
        return failed(_("{stripped!r} is still base64: the token exactly as it crossed the wire. "
                      "base64.b64decode(token) turns it back into the bytes it encodes.").format(stripped=stripped), _(PASSWORD))
    if looks_like_nul and password in text:
        return failed(_("you kept the whole decoded token, NUL separators included. AUTH PLAIN packs three fields "
                      "separated by NUL bytes (b'\\0'): an authorization identity (empty here), the user name, the "
                      "password (RFC 4616). Split at b'\\0' and take the third field."), _(PASSWORD))
    if text.lower() == login.lower():
        return failed(_("{text!r} is the user name, the second field of the decoded token. Which field comes after "
                      "it (RFC 4616)?").format(text=text), _(PASSWORD))
    if password in text and login in text:
        return failed(_("{text!r} holds the user name and the password run together: the NUL bytes between them are "
                      "gone, and with them the boundary. Split the decoded bytes at b'\\0' instead of removing "
                      "the NULs.").format(text=text), _(PASSWORD))
    if password in text:
        return failed(_("the password is in there, but with more around it: {text!r}. Return only the third field of "
                      "the decoded token.").format(text=text), _(PASSWORD))
    others = [u.address for u in lab.users.values() if u.password == text]
    if others:
        return failed(_("that is {others}'s password, but {others} never logged in without TLS: the function "
                      "must read the password from wire_text. The login that crossed the wire in clear was "
                      "{login}'s.").format(others=others[0], login=login), _(PASSWORD))
    return failed(_("{text!r} is not the password that crossed the wire. The clear-text line on connection {conn} is "
                  "'C: AUTH PLAIN {token}'. Decode that token with base64.b64decode(...) and look at the bytes.").format(text=text, conn=conn, token=token),
                  _(PASSWORD))


