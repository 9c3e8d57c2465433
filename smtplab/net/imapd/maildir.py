"""One Maildir folder as IMAP reads it: the files in new/ and cur/, their flags and dates.

Adapted from pymap 0.36.7 ``pymap/backend/maildir/mailbox.py`` (class ``Maildir``) (c) Ian Good, MIT
license: see :mod:`smtplab.net.imapd`. Changed: a folder is listed with one read of new/ and one of cur/
per command (pymap stat()ed each message three times per command: a client polling a few hundred
messages kept the lab's loop busy); a message's date (its file's mtime, which never changes) is read
once per file name; \\Recent is claimed by moving every file of new/ at once (pymap tested membership
in a generator, which consumed it: \\Recent was set on one message of three, differently each run).
"""

from __future__ import annotations

import os
from mailbox import Maildir as _Maildir
from mailbox import MaildirMessage
from typing import Literal

__all__ = ["Maildir", "Listing"]


class Maildir(_Maildir):
    """The standard library's Maildir, with the few operations IMAP needs done by rename."""

    def __init__(self, dirname: str, factory: None = None, create: bool = True) -> None:
        super().__init__(dirname, factory, create)
        self.dates: dict[str, float] = {}  # "cur/name" -> the file's mtime, remembered

    @property
    def path(self) -> str:
        return self._path  # type: ignore[attr-defined,no-any-return]

    def _join(self, subpath: str) -> str:
        return os.path.join(self.path, subpath)

    @classmethod
    def _split(cls, subpath: str) -> tuple[Literal["new", "cur"], str]:
        subdir, name = os.path.split(subpath)
        if subdir == "new":
            return "new", name
        if subdir == "cur":
            return "cur", name
        raise ValueError(subdir)

    def lookup(self, key: str) -> str:
        """The file of message `key`, relative to the folder ("cur/key:2,S"); KeyError if gone."""
        return self._lookup(key)  # type: ignore[attr-defined,no-any-return]

    def claim_new(self, keys: set[str] | None = None) -> set[str]:
        """Move the files of new/ (those of `keys`, or all) to cur/; return the keys this call moved.

        A rename is atomic: of two sessions claiming at once, each message goes to exactly one.
        """
        claimed = set()
        new_dir, cur_dir = self._join("new"), self._join("cur")
        for name in os.listdir(new_dir):
            key = name.split(self.colon)[0]
            if keys is not None and key not in keys:
                continue
            try:
                os.rename(os.path.join(new_dir, name), os.path.join(cur_dir, name))
            except FileNotFoundError:
                continue  # another session claimed it first
            claimed.add(key)
            self._toc[key] = os.path.join("cur", name)  # type: ignore[attr-defined]
        return claimed

    def move_message(self, key: str, dest: Maildir, dest_subdir: str) -> str:
        """Move message `key` into folder `dest`; return its file name there."""
        subdir, name = self._split(self.lookup(key))
        os.rename(self._join(os.path.join(subdir, name)), dest._join(os.path.join(dest_subdir, name)))
        return name

    def get_message_metadata(self, key: str) -> MaildirMessage:
        """Like :meth:`~mailbox.Maildir.get_message` without reading the message."""
        subpath = self.lookup(key)
        subdir, name = self._split(subpath)
        return _metadata(subdir, name, self.colon, self._date(subpath))

    def _date(self, subpath: str) -> float:
        date = self.dates.get(subpath)
        if date is None:
            date = self.dates[subpath] = os.path.getmtime(self._join(subpath))
        return date

    def update_metadata(self, key: str, msg: MaildirMessage) -> None:
        """Rename the message's file to carry the flags of `msg` (one atomic rename)."""
        subpath = self.lookup(key)
        subdir, name = self._split(subpath)
        new_name = key + self.colon + msg.get_info()
        if subdir != msg.get_subdir():
            raise ValueError("Message subdir may not be updated")
        if name != new_name:
            new_subpath = os.path.join(subdir, new_name)
            os.rename(self._join(subpath), self._join(new_subpath))
            self._toc[key] = new_subpath  # type: ignore[attr-defined]
            self.dates.pop(subpath, None)

    def listing(self) -> Listing:
        """One look at new/ and cur/."""
        return Listing(self)


class Listing:
    """One read of a Maildir's new/ and cur/: message key -> (subdir, file name)."""

    def __init__(self, maildir: Maildir) -> None:
        self.entries: dict[str, tuple[str, str]] = {}
        colon = maildir.colon
        for subdir in ("new", "cur"):
            try:
                with os.scandir(os.path.join(maildir.path, subdir)) as entries:
                    for entry in entries:  # like mailbox.Maildir._refresh: files only, key before the colon
                        if not entry.is_dir():
                            self.entries[entry.name.split(colon)[0]] = (subdir, entry.name)
            except FileNotFoundError:
                continue
        seen = {f"{subdir}/{name}" for subdir, name in self.entries.values()}
        for subpath in [p for p in maildir.dates if p not in seen]:  # renamed or gone: forget
            del maildir.dates[subpath]
        self._maildir = maildir

    def metadata(self, key: str) -> MaildirMessage | None:
        """The message's flags and date without reading it; None if it is gone."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        subdir, name = entry
        try:
            date = self._maildir._date(f"{subdir}/{name}")
        except FileNotFoundError:
            return None
        return _metadata(subdir, name, self._maildir.colon, date)

    def keys_by_arrival(self) -> dict[str, str]:
        """Every message key with its Maildir info (flags), oldest first.

        New messages get their UIDs in this order: in directory order (pymap's), a message that arrived
        later could get a lower UID than one before it, which RFC 3501 2.3.1.1 rules out.
        """
        found = []
        for key in self.entries:
            msg = self.metadata(key)
            if msg is not None:
                found.append((msg.get_date(), key, msg.get_info()))
        found.sort()
        return {key: info for _, key, info in found}


def _metadata(subdir: str, name: str, colon: str, date: float) -> MaildirMessage:
    msg = MaildirMessage()
    msg.set_subdir(subdir)  # type: ignore[arg-type]  # "new" or "cur", from the listing
    if colon in name:
        msg.set_info(name.rsplit(colon, 1)[-1])
    msg.set_date(date)
    return msg
