"""Mailboxes: one Maildir per user, shared by the inbound MX hosts (writers) and IMAP (reader).

Delivery follows the Maildir protocol: the message is written into tmp/, fsync'd, then renamed into
new/ (and new/ fsync'd), so a reader never sees half a message and a 250 survives a crash. The stdlib
`mailbox.Maildir` creates the folders; `messages` reads the files back in delivery order. Folders follow
the Maildir++ layout that pymap (and Dovecot) read: INBOX is the user's directory, `Junk` is `.Junk/`.
"""

from __future__ import annotations

import mailbox
import os
import threading
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from ..disk import fsync_directory, remove_quietly, write_message_file
from ..errors import UnknownUser
from ..files import make_private_dir, open_private_fd
from ..i18n import _

__all__ = ["MailStore"]



class MailStore:
    """The mailboxes of one provider's users, under one directory."""

    def __init__(self, directory: Path, domain: str) -> None:
        self.directory = directory
        self.domain = domain
        self._users: set[str] = set()
        self._lock = threading.Lock()
        self._roots: dict[tuple[str, str], str] = {}  # Maildir folders already created
        # Told the folder's path after each delivery (from the delivering thread): wakes IMAP IDLE.
        self.on_delivered: Callable[[str], None] | None = None
        make_private_dir(directory)

    def add_user(self, address: str) -> Path:
        """Create (or reopen) the Maildir of `address` and return its path."""
        path = self.user_path(address)
        _create_maildir(path)
        with self._lock:
            self._users.add(address.lower())
        return path

    def has_user(self, address: str) -> bool:
        return address.lower() in self._users

    def user_path(self, address: str) -> Path:
        local = address.lower().rsplit("@", 1)[0]
        return self.directory / local

    def deliver(self, address: str, content: bytes, folder: str = "INBOX", *,
                fsync_folder: Callable[[str], None] = fsync_directory, announce: bool = True,
                before_rename: Callable[[str, str], None] | None = None) -> str:
        """Store one message and return its Maildir file name.

        Written into tmp/ then renamed into new/ (the Maildir protocol: readers never see half a
        message). Lines keep CRLF: pymap serves the file as is, and IMAP literals need CRLF
        (RFC 3501 section 2.2); the stdlib Maildir.add would turn them into bare LF. `fsync_folder`
        makes the rename durable: at once by default, or at the end of the disk thread's batch.
        `announce=False` leaves telling IMAP (`announce`) to the caller, once its whole delivery stands.
        `before_rename(root, name)` runs once the copy is written, before it appears in new/.
        """
        if not self.has_user(address):
            raise UnknownUser(_("{address} has no mailbox at {domain}").format(address=address, domain=self.domain))
        data = content if b"\r\n" in content else content.replace(b"\n", b"\r\n")
        key = _folder_key(address, folder)
        root = self._roots.get(key)
        if root is None:  # open (and create) the folder once, not for every message
            box = self._maildir(address, folder, create=True)
            assert box is not None
            root = self._roots[key] = str(self._folder_path(address, folder))
            box.close()
        hook = before_rename
        name = write_message_file(root, "new", data,
                                  before_rename=None if hook is None else (lambda name: hook(root, name)))
        fsync_folder(os.path.join(root, "new"))  # the rename itself must survive a crash too
        if announce:
            self.announce(address, folder)
        return name

    def announce(self, address: str, folder: str = "INBOX") -> None:
        """Tell whoever listens (IMAP IDLE) that a message landed in this folder."""
        root = self._roots.get(_folder_key(address, folder))
        if self.on_delivered is not None and root is not None:
            self.on_delivered(root)

    def withdraw(self, address: str, name: str, folder: str = "INBOX") -> None:
        """Take back a message `deliver` just stored (its transaction failed for another recipient)."""
        root = self._roots.get(_folder_key(address, folder))
        if root is not None:
            remove_quietly(os.path.join(root, "new", name))

    def messages(self, address: str, folder: str = "INBOX") -> list[EmailMessage]:
        """Return the messages in one folder of a user's mailbox (oldest first)."""
        if not self.has_user(address):
            raise UnknownUser(_("{address} has no mailbox at {domain}").format(address=address, domain=self.domain))
        root = self._folder_path(address, folder)
        if not (root / "cur").is_dir():
            return []
        found: dict[str, tuple[int, bytes]] = {}  # unique key (the name before ":2,flags") -> (mtime, bytes)
        for sub in ("new", "cur"):
            for name in _message_names(root / sub):
                key = name.split(":", 1)[0]
                if key not in found:
                    read = _read_message(root, sub, name)
                    if read is not None:
                        found[key] = read
        items = sorted((mtime, key, raw) for key, (mtime, raw) in found.items())
        # Python's email package works in LF line ends; the files keep the wire's CRLF.
        return [message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)  # type: ignore[misc]
                for _, _, raw in items]

    def count(self, address: str, folder: str = "INBOX") -> int:
        box = self._maildir(address, folder, create=False)
        if box is None:
            return 0
        try:
            return len(box)
        finally:
            box.close()

    def _folder_path(self, address: str, folder: str) -> Path:
        """Where a folder of the user's Maildir is: INBOX is the user's directory, others `.Name/` (Maildir++)."""
        user_path = self.user_path(address)
        return user_path if folder.upper() == "INBOX" else user_path / f".{folder}"

    def _maildir(self, address: str, folder: str, *, create: bool) -> mailbox.Maildir | None:
        user_path = self.user_path(address)
        if create:
            _create_maildir(user_path)
        root = mailbox.Maildir(str(user_path), create=False)
        if folder.upper() == "INBOX":
            return root
        try:
            return root.get_folder(folder)
        except mailbox.NoSuchMailboxError:
            if not create:
                return None
            # Maildir++: a folder is "." + its name beside new/, with a `maildirfolder` marker file.
            _create_maildir(user_path / f".{folder}", subfolder=True)
            return root.get_folder(folder)


def _message_names(directory: Path) -> list[str]:
    """The message files in a Maildir's new/ or cur/ (a name starting with a dot is not one)."""
    try:
        return [name for name in os.listdir(directory) if not name.startswith(".")]
    except FileNotFoundError:
        return []


def _read_message(root: Path, sub: str, name: str) -> tuple[int, bytes] | None:
    """A message file's mtime and bytes. IMAP may move it from new/ to cur/ (adding ":2,flags") or
    change its flags meanwhile: then it is looked for again by its unique key; None if it is gone."""
    for attempt in (0, 1):
        try:
            with open(root / sub / name, "rb") as file:
                return os.fstat(file.fileno()).st_mtime_ns, file.read()
        except FileNotFoundError:
            if attempt:
                return None
            key = name.split(":", 1)[0]
            moved = [n for n in _message_names(root / "cur") if n.split(":", 1)[0] == key]
            if not moved:
                return None
            sub, name = "cur", moved[0]
    return None


def _create_maildir(path: Path, *, subfolder: bool = False) -> None:
    """Create a Maildir (its tmp/, new/ and cur/) with every folder 0700 and the marker file 0600.

    The stdlib's `Maildir(create=True)` makes the folders 0700 but `add_folder` makes the marker with
    the default mode, and the lab's folders must never be readable by other users (files.py).
    """
    make_private_dir(path)
    for sub in ("tmp", "new", "cur"):
        try:
            os.mkdir(path / sub, 0o700)
        except FileExistsError:
            pass
    if subfolder:
        try:
            os.close(open_private_fd(path / "maildirfolder"))
        except FileExistsError:
            pass


def _folder_key(address: str, folder: str) -> tuple[str, str]:
    return address.lower(), "INBOX" if folder.upper() == "INBOX" else folder
