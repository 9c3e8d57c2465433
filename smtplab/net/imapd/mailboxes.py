"""A user's folders: LIST (with SPECIAL-USE attributes), CREATE, DELETE, RENAME, SUBSCRIBE.

Adapted from pymap 0.36.7 ``pymap/backend/maildir/mailbox.py`` (class ``MailboxSet``) (c) Ian Good, MIT
license: see :mod:`smtplab.net.imapd`. Changed: CREATE of an existing folder and RENAME onto one are a
tagged ``NO [ALREADYEXISTS]`` (RFC 5530; pymap raised KeyError and the session ended in ``* BYE
[SERVERBUG]``); a RENAME into its own sub-tree is ``NO [CANNOT]``; every user has the special-use
folders Sent, Drafts, Trash and Junk, listed with their attributes (RFC 6154).
"""

from __future__ import annotations

import errno
from typing import Any

from pymap.backend.mailbox import MailboxSetInterface
from pymap.exceptions import MailboxConflict, MailboxHasChildren, MailboxNotFound, NotSupportedError
from pymap.listtree import ListTree
from pymap.parsing.specials import ObjectId

from .layout import MaildirLayout
from .mailbox import MailboxData
from .maildir import Maildir
from .subscriptions import Subscriptions
from .uidlist import UidList

__all__ = ["MailboxSet", "SPECIAL_USE"]

#: The folders every user has, with their RFC 6154 special-use attribute. Junk is where the lab's MX
#: files quarantined mail.
SPECIAL_USE = {"Sent": b"Sent", "Drafts": b"Drafts", "Trash": b"Trash", "Junk": b"Junk"}


class MailboxSet(MailboxSetInterface[MailboxData]):
    """The folders of one user's Maildir (Maildir++ layout, "/" as the hierarchy delimiter)."""

    def __init__(self, maildir: Maildir, layout: MaildirLayout) -> None:
        super().__init__()
        self._layout = layout
        self._inbox_maildir = maildir
        self._path = layout.path
        self._cache: dict[str, MailboxData] = {}

    @property
    def delimiter(self) -> str:
        return "/"

    def create_special_use(self) -> None:
        """Create the special-use folders the user does not have yet (RFC 6154)."""
        for name in SPECIAL_USE:
            try:
                self._layout.add_folder(name, self.delimiter)
            except FileExistsError:
                pass

    @staticmethod
    def special_use(name: str) -> list[bytes]:
        """The RFC 6154 attribute of folder `name`, if it has one."""
        use = SPECIAL_USE.get(name)
        return [use] if use else []

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        async with Subscriptions.with_write(self._path) as subs:
            subs.set(name, subscribed)

    async def list_subscribed(self) -> ListTree:
        async with Subscriptions.with_read(self._path) as subs:
            subscribed = frozenset(subs.subscribed)
        mailboxes = [name for name in self._layout.list_folders(self.delimiter) if name in subscribed]
        return ListTree(self.delimiter).update("INBOX", *mailboxes)

    async def list_mailboxes(self) -> ListTree:
        return ListTree(self.delimiter).update("INBOX", *self._layout.list_folders(self.delimiter))

    async def get_mailbox(self, name: str) -> MailboxData:
        if name == "INBOX":
            maildir: Any = self._inbox_maildir
        else:
            try:
                maildir = self._layout.get_folder(name, self.delimiter)
            except FileNotFoundError as exc:
                raise KeyError(name) from exc
        mbx = self._cache.get(name)
        if mbx is None or mbx.maildir.path != maildir.path:
            path = self._layout.get_path(name, self.delimiter)
            async with UidList.with_init(path) as uidl:
                mailbox_id = ObjectId(uidl.global_uid)
            mbx = self._cache[name] = MailboxData(mailbox_id, maildir, path)
        return await mbx.reset()

    async def add_mailbox(self, name: str) -> ObjectId:
        try:
            self._layout.add_folder(name, self.delimiter)
        except FileExistsError as exc:
            raise MailboxConflict(name) from exc  # NO [ALREADYEXISTS] (RFC 5530 3)
        path = self._layout.get_path(name, self.delimiter)
        async with UidList.with_init(path) as uidl:
            global_uid = uidl.global_uid
        return ObjectId(global_uid)

    async def delete_mailbox(self, name: str) -> None:
        self._cache.pop(name, None)
        try:
            self._layout.remove_folder(name, self.delimiter)
        except FileNotFoundError as exc:
            raise MailboxNotFound(name) from exc
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise MailboxHasChildren(name) from exc
            raise

    async def rename_mailbox(self, before: str, after: str) -> None:
        if before == "INBOX":
            # RFC 3501 6.3.5 asks to move INBOX's messages into the new folder and leave INBOX empty:
            # not offered here; a clear NO, never a dropped connection.
            raise NotSupportedError("Renaming INBOX is not supported: copy its messages instead.")
        try:
            self._layout.rename_folder(before, after, self.delimiter)
        except FileNotFoundError as exc:
            raise MailboxNotFound(before) from exc
        except FileExistsError as exc:
            raise MailboxConflict(after) from exc
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise NotSupportedError(f"Cannot rename {before!r} into itself.") from exc
            raise
        for name in [n for n in self._cache if n == before or n.startswith(before + self.delimiter)]:
            del self._cache[name]
