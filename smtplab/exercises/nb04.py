"""Exercises of notebook 04 (IMAP): find a UID with SEARCH, predict \\Seen after PEEK, set a flag.

The checks open their own IMAP connection (a second mail client of the same user) and read the
mailbox from the server, so they see exactly what any mail client of that user would see.
"""

from __future__ import annotations

import re
import threading
import time
from email import message_from_bytes, policy
from typing import Any

from ..i18n import N_, _, ngettext
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["check_uid", "check_peek_prediction", "check_flagged", "mailbox_listing", "settle"]

UID = N_("Exercise 1 · find a UID with SEARCH")
PEEK = N_("Exercise 2 · does PEEK mark a message as seen?")
FLAG = N_("Exercise 3 · flag a message")

_META = re.compile(rb"^(\d+) \(.*?UID (\d+).*?FLAGS \(([^)]*)\)", re.S)
_META_FLAGS_FIRST = re.compile(rb"^(\d+) \(.*?FLAGS \(([^)]*)\).*?UID (\d+)", re.S)


def settle(lab: Any, timeout: float = 1.0) -> bool:
    """Wait until the IMAP trace holds the server's answer to every command it has recorded.

    A client does not wait for every answer: imaplib sends LOGOUT and closes without reading the
    server's BYE, so a notebook that looks at the trace right after `logout()` may look before the
    server has written its last lines. Woken by each new IMAP event; returns False if `timeout`
    passed first.
    """
    changed = threading.Event()

    def on_event(event: Any) -> None:
        if event.protocol == "imap":
            changed.set()

    lab.trace.subscribe(on_event)
    try:
        deadline = time.monotonic() + timeout
        while True:
            changed.clear()  # before looking: an event recorded after the look wakes the wait below
            if _answered(lab.trace.filter(protocol="imap")):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not changed.wait(remaining):
                return _answered(lab.trace.filter(protocol="imap"))
    finally:
        lab.trace.unsubscribe(on_event)


def _answered(events: list[Any]) -> bool:
    """True when each connection's last command has its tagged reply (and a LOGOUT its close too)."""
    waiting: dict[str, tuple[str, str]] = {}
    closed: set[str] = set()
    for event in events:
        if event.kind == "close":
            closed.add(event.conn)
        elif event.kind == "line" and event.direction == "C" and " " in event.text \
                and not event.text.startswith("<literal"):
            tag, _sep, rest = event.text.partition(" ")
            waiting[event.conn] = (tag, rest.split(" ", 1)[0].upper())
        elif event.kind == "line" and event.direction == "S" and event.conn in waiting:
            if event.text.startswith(waiting[event.conn][0] + " "):
                if waiting[event.conn][1] != "LOGOUT":
                    del waiting[event.conn]
    return all(conn in closed for conn in waiting)  # a closed connection owes no answer


class _Entry:
    def __init__(self, seq: int, uid: int, flags: str, subject: str, sender: str) -> None:
        self.seq, self.uid, self.flags, self.subject, self.sender = seq, uid, flags, subject, sender

    def describe(self) -> str:
        return _("UID {uid} ('{subject}', flags ({flags}))").format(uid=self.uid, subject=self.subject,
                                                                   flags=self.flags)


def mailbox_listing(lab: Any, address: str = "bob@example.net", folder: str = "INBOX") -> list[_Entry]:
    """Read sequence number, UID, flags, subject and sender of every message, read-only (EXAMINE)."""
    client = lab.imap(address)
    try:
        typ, data = client.select(folder, readonly=True)
        if typ != "OK" or int(data[0]) == 0:
            return []
        typ, data = client.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
        entries = []
        for item in data:
            if not isinstance(item, tuple):
                continue
            entries.append(_entry(item[0], item[1]))
        return entries
    finally:
        _logout(client)
        settle(lab)  # its last lines land in the trace now, not in the learner's next transcript


def _entry(meta: bytes, header_bytes: bytes) -> _Entry:
    match = _META.search(meta)
    if match:
        seq, uid, flags = match.group(1), match.group(2), match.group(3)
    else:
        other = _META_FLAGS_FIRST.search(meta)
        assert other is not None, meta
        seq, flags, uid = other.group(1), other.group(2), other.group(3)
    headers = message_from_bytes(header_bytes, policy=policy.default)
    return _Entry(int(seq), int(uid), flags.decode(), str(headers.get("Subject", "")), str(headers.get("From", "")))


def _logout(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # the check's own connection: nothing to tell the learner about it
        pass


def _matching(entries: list[_Entry], subject: str) -> list[_Entry]:
    want = " ".join(subject.split()).lower()
    return [e for e in entries if " ".join(e.subject.split()).lower() == want]


# --- exercise 1 ---

def _as_number(answer: Any) -> int | str:
    """Turn 7, "7", b"7", [b"7"] into 7; return a complaint (str) for anything else."""
    value = answer
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            return _("give one UID, not a list of {count} items ({value!r})").format(count=len(value), value=value)
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        parts = value.split()
        if len(parts) > 1 and all(p.isdigit() for p in parts):
            return _("{value!r} holds {count} numbers: your SEARCH matched several messages. Narrow it down "
                     "(SUBJECT with the whole subject in double quotes) until one UID is left").format(
                value=value, count=len(parts))
        if parts and parts[0].isdigit():
            return int(parts[0])
    return _("a UID is a whole number like 3, you gave {answer!r}").format(answer=answer)


def check_uid(lab: Any, uid: Any, subject: str, address: str = "bob@example.net") -> Feedback:
    """Pass when `uid` is the UID of the message with this exact `subject` in the user's INBOX."""
    if is_blank(uid):
        return unanswered(_("Ask the server with a UID SEARCH and the SUBJECT criterion (imap.uid(\"SEARCH\", "
                            "None, ...)), and put the UID it returns into my_uid."), _(UID))
    number = _as_number(uid)
    if isinstance(number, str):
        return failed(number + ".", _(UID))
    entries = mailbox_listing(lab, address)
    targets = _matching(entries, subject)
    if not targets:
        return failed(_("there is no message with the subject {subject!r} in {address}'s INBOX any more "
                        "(was it deleted?), so there is no UID to compare with.").format(subject=subject,
                                                                                        address=address), _(UID))
    target = targets[0]
    if number in {t.uid for t in targets}:
        same = (" " + _("(here it equals the sequence number, but only because nothing was deleted yet)")
                if target.seq == target.uid else _("; its sequence number is {number}").format(number=target.seq))
        return passed(_("Right: UID {uid} is '{subject}'{same}. A UID stays the same for as long as the message "
                        "exists, so a client can store it and FETCH the message next week.").format(
            uid=number, subject=subject, same=same), _(UID))
    if number == target.seq:
        return failed(_("{number} is the sequence number of '{subject}' (its position in the folder right now, "
                        "what plain SEARCH returns); its UID is another number. Ask with imap.uid(\"SEARCH\", "
                        "...).").format(number=number, subject=subject), _(UID))
    other = next((e for e in entries if e.uid == number), None)
    if other is not None:
        return failed(_("UID {uid} is the message '{other}' from {sender}, not '{subject}'. Search by subject: a "
                        "UID SEARCH with the SUBJECT criterion, the whole subject in double quotes.").format(
            uid=number, other=other.subject, sender=other.sender, subject=subject), _(UID))
    return failed(_("no message in {address}'s INBOX has UID {uid}. Ask the server: a UID SEARCH answers with "
                    "UIDs.").format(address=address, uid=number), _(UID))


# --- exercise 2 ---

def _as_bool(answer: Any) -> bool | None:
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, str):
        text = answer.strip().lower()
        if text in ("true", "yes", "seen", "y"):
            return True
        if text in ("false", "no", "not seen", "unseen", "n"):
            return False
    return None


def check_peek_prediction(lab: Any, prediction: Any, address: str = "bob@example.net") -> Feedback:
    """Run FETCH BODY.PEEK[] on an unseen message over a new connection and compare with the prediction."""
    if is_blank(prediction):
        return unanswered(_("Set peek_marks_seen to True or False."), _(PEEK))
    given = _as_bool(prediction)
    if given is None:
        return failed(_("answer True or False, not {answer!r}.").format(answer=prediction), _(PEEK))
    guess = first_answer(PEEK, given)
    note = changed_answer_note(guess, given)
    client = lab.imap(address)
    restore: bytes | None = None
    try:
        client.select("INBOX")  # read-write: EXAMINE would never set \Seen, whatever we fetch
        typ, data = client.search(None, "UNSEEN")
        unseen = data[0].split()
        if unseen:
            number = unseen[0]
        else:  # every message was read already: take one back to unseen for the experiment
            typ, data = client.search(None, "ALL")
            if not data[0].split():
                return failed(_("{address}'s INBOX is empty: send a message first.").format(address=address),
                              _(PEEK))
            number = restore = data[0].split()[-1]
            client.store(number, "-FLAGS", "(\\Seen)")
        port = client.sock.getsockname()[1]
        mark = lab.mark()
        client.fetch(number, "(FLAGS)")
        client.fetch(number, "(BODY.PEEK[])")
        typ, data = client.fetch(number, "(FLAGS)")
        after = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
        settle(lab)
        wire = _excerpt(lab.trace.filter(protocol="imap", since=mark), port)
        if restore is not None:
            client.store(restore, "+FLAGS", "(\\Seen)")
    finally:
        _logout(client)
        settle(lab)
    seen = "\\Seen" in after
    transcript = "\n".join(wire)
    if seen:
        return failed(_("This server did set \\Seen after BODY.PEEK[], which RFC 3501 section 6.4.5 forbids; "
                        "look at the transcript:") + "\n" + transcript, _(PEEK))
    if not guess:
        return passed(note + _("Right: after FETCH BODY.PEEK[] the message is still not \\Seen. PEEK reads without "
                               "side effects (mail clients use it for previews); a plain BODY[] would set \\Seen "
                               "(RFC 3501 section 6.4.5).") + "\n" + _("The experiment, on a fresh connection:")
                      + "\n" + transcript, _(PEEK))
    return failed(note + _("Not what the server did. Find out yourself: on your connection, FETCH an unread "
                           "message's (FLAGS), then its (BODY.PEEK[]), then its (FLAGS) again, and compare the two "
                           "FLAGS answers (RFC 3501 section 6.4.5 defines BODY.PEEK)."), _(PEEK))


def _excerpt(events: list[Any], port: int) -> list[str]:
    """The lines of one connection from its first FETCH on."""
    lines: list[str] = []
    for event in events:
        if event.kind != "line" or not event.client.endswith(f":{port}"):
            continue
        command = event.text.split(" ", 2)[1].upper() if event.direction == "C" and " " in event.text else ""
        if lines or command == "FETCH":
            lines.append(event.to_text())
    return lines


# --- exercise 3 ---

def check_flagged(lab: Any, subject: str, address: str = "bob@example.net") -> Feedback:
    """Pass when the message with `subject` carries \\Flagged, as seen over a separate IMAP connection."""
    entries = mailbox_listing(lab, address)
    targets = _matching(entries, subject)
    flagged = [e for e in entries if "\\Flagged" in e.flags.split()]
    if not flagged:
        return unanswered(_("No message in {address}'s INBOX is \\Flagged yet: find '{subject}' and STORE the "
                            "flag on it (the STORE section above shows how flags are added).").format(
            address=address, subject=subject), _(FLAG))
    if not targets:
        return failed(_("there is no message with the subject {subject!r} in {address}'s INBOX any more.").format(
            subject=subject, address=address), _(FLAG))
    target = targets[0]
    others = [e for e in flagged if e.uid not in {t.uid for t in targets}]
    if "\\Flagged" in target.flags.split():
        if others:
            return failed(ngettext("'{subject}' is \\Flagged, but so is {count} other message: {others}. Bob wants "
                                   "only this one starred. -FLAGS (\\Flagged) takes the flag away again; a STORE on "
                                   "one UID changes one message.",
                                   "'{subject}' is \\Flagged, but so are {count} other messages: {others}. Bob wants "
                                   "only this one starred. -FLAGS (\\Flagged) takes the flag away again; a STORE on "
                                   "one UID changes one message.", len(others)).format(
                subject=subject, count=len(others), others=", ".join(e.describe() for e in others)), _(FLAG))
        return passed(_("Right: a second IMAP connection sees {message}. Flags live on the server, so every mail "
                        "client of {address} shows the star.").format(message=target.describe(), address=address),
                      _(FLAG))
    wrong = ", ".join(e.describe() for e in others)
    seq_hint = ""
    if any(e.seq == target.uid or e.uid == target.seq for e in others):
        seq_hint = " " + _("Sequence numbers and UIDs are different numberings: imap.store(...) takes a sequence "
                           "number, imap.uid(\"STORE\", ...) a UID.")
    return failed(_("you flagged {wrong}, but '{subject}' has no \\Flagged.").format(wrong=wrong, subject=subject)
                  + seq_hint + " " + _("A UID SEARCH for its subject finds the right message."), _(FLAG))
