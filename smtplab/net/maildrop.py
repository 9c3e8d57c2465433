"""A user's INBOX as POP3 sees it: a locked maildrop, a snapshot of its messages, and the UPDATE.

Maildir semantics (https://cr.yp.to/proto/maildir.html): a message is a file in new/ or cur/ whose name
starts with its unique key; flags follow ":2,". POP3 (RFC 1939) numbers the messages of the snapshot
taken when the maildrop is locked, lists each by a unique-id derived from the key, and changes the
disk only at QUIT. IMAP (pymap) reads the same directory meanwhile, so a message may move under us.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..disk import fsync_directory

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock table still keeps sessions apart
    fcntl = None  # type: ignore[assignment]

__all__ = ["Maildrop", "MaildropMessage", "uidl_of", "normalize"]

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(?:\r?\n)?[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_locked: set[str] = set()  # maildrops locked in this process (flock covers other processes)


def uidl_of(key: str) -> str:
    """The unique-id listing of a Maildir message (RFC 1939 section 7): its key when that is 1-70
    printable characters (0x21-0x7E), else a hash of the key, equally stable across sessions."""
    if 0 < len(key) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in key):
        return key
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class MaildropMessage:
    key: str  # the Maildir key: the file name up to ":"
    name: str  # "new/KEY" or "cur/KEY:2,FLAGS"
    size: int  # octets as sent by RETR (CRLF line ends), before byte-stuffing
    message_id: str
    deleted: bool = False
    retrieved: bool = False


def normalize(data: bytes) -> bytes:
    """The message as POP3 sends it: CRLF line ends, ending with CRLF (RFC 1939 section 3)."""
    data = _BARE_LF.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") or not data else data + b"\r\n"


class Maildrop:
    """One user's INBOX Maildir, locked for one POP3 session (RFC 1939 section 4: the server locks
    the maildrop): flock on the Maildir directory, which also keeps out another process's session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._key = str(root.resolve())
        self._fd = -1

    def acquire(self) -> bool:
        if self._key in _locked:
            return False
        if fcntl is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
        _locked.add(self._key)
        return True

    def release(self) -> None:
        _locked.discard(self._key)
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

    def scan(self) -> list[MaildropMessage]:
        """Read the INBOX's new/ and cur/ (oldest first): each message's key, size and Message-ID."""
        found = []
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(self.root / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                try:
                    data = normalize(Path(entry.path).read_bytes())
                    mtime = entry.stat().st_mtime_ns
                except FileNotFoundError:  # IMAP expunged it meanwhile
                    continue
                head = data.split(b"\r\n\r\n", 1)[0]
                match = _MESSAGE_ID.search(head)
                message_id = match.group(1).decode("utf-8", "replace") if match else ""
                key = entry.name.split(":", 1)[0]
                found.append((mtime, entry.name, MaildropMessage(key, f"{sub}/{entry.name}", len(data), message_id)))
        found.sort(key=lambda item: (item[0], item[1]))
        return [message for _, _, message in found]

    def locate(self, message: MaildropMessage) -> Path | None:
        """The file of `message` now: IMAP may have moved it to cur/ or changed its flags since."""
        path = self.root / message.name
        if path.exists():
            return path
        for sub in ("cur", "new"):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(self.root / sub):
                    if name == message.key or name.startswith(message.key + ":"):
                        message.name = f"{sub}/{name}"
                        return self.root / sub / name
        return None

    def update(self, messages: list[MaildropMessage]) -> tuple[int, int, int]:
        """The UPDATE state (RFC 1939 section 6): remove what was deleted, mark what was retrieved as Seen.

        Returns (removed, marked, failed). Maildir semantics: a message read moves from new/ to cur/ with
        the S flag (the maildir spec's "info" part), keeping its key, so IMAP keeps its UID.
        """
        removed = marked = failed = 0
        for message in messages:
            if not (message.deleted or message.retrieved):
                continue
            path = self.locate(message)
            if path is None:
                removed += message.deleted  # gone already: what DELE asked for holds
                continue
            try:
                if message.deleted:
                    path.unlink()
                    removed += 1
                else:
                    flags = message.name.split(":2,", 1)[1] if ":2," in message.name else ""
                    if "S" not in flags:
                        path.rename(self.root / "cur" / f"{message.key}:2,{''.join(sorted(flags + 'S'))}")
                    marked += 1
            except OSError:
                failed += 1
        for sub in ("new", "cur"):
            with contextlib.suppress(OSError):
                fsync_directory(str(self.root / sub))  # the deletions survive a crash once +OK is said
        return removed, marked, failed

    def read(self, message: MaildropMessage) -> bytes | None:
        """The message as RETR sends it (before byte-stuffing); None if another client removed it."""
        path = self.locate(message)
        try:
            return normalize(path.read_bytes()) if path is not None else None
        except FileNotFoundError:
            return None
