"""One Maildir folder as an IMAP mailbox: UIDs, flags, \\Recent, APPEND/COPY/MOVE/EXPUNGE, IDLE wake-ups.

Adapted from pymap 0.36.7 ``pymap/backend/maildir/mailbox.py`` (class ``MailboxData``) (c) Ian Good, MIT
license: see :mod:`smtplab.net.imapd`. Changed, each because pymap's did harm:

- COPY writes the message's bytes, flags and date, durably (pymap wrote an empty file: mutt's
  "save to folder", a COPY then a delete, destroyed the message).
- MOVE into the selected mailbox gives the message a new UID there (pymap took the same lock twice
  and the session hung for good).
- \\Recent follows RFC 3501 2.3.2 exactly: a message is \\Recent in exactly one session, the first
  read-write session told of it (by SELECT, or by the update a command or IDLE brings while the
  folder is selected). The claim is the rename of its file from new/ to cur/, atomic, so two
  sessions never both get it. A read-only (EXAMINE) session sees \\Recent on what nobody claimed
  yet and claims nothing. APPEND, COPY and MOVE put the message in new/ for that first session.
- A keyword a client sets (``$Label1``, ``$Junk``, any atom) is kept: added to the folder's
  keywords file on first use (pymap dropped every keyword it did not know).
- The UID list is parsed again only when its file changed, a folder is listed once per command,
  new messages get their UIDs in arrival order, and IDLE wakes on a delivery instead of polling.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterable, Iterable
from typing import Any

from pymap.backend.mailbox import MailboxDataInterface
from pymap.concurrent import Event, ReadWriteLock
from pymap.context import subsystem
from pymap.flags import FlagOp
from pymap.interfaces.message import CachedMessage
from pymap.mailbox import MailboxSnapshot
from pymap.parsing.message import AppendMessage
from pymap.parsing.specials import ObjectId
from pymap.parsing.specials.flag import Flag, Seen
from pymap.selected import SelectedMailbox, SelectedSet

from ...disk import fsync_directory, write_message_file
from .flags import MaildirFlags
from .maildir import Maildir
from .message import Message
from .uidlist import Record, UidList

__all__ = ["MailboxData", "has_idlers", "mailbox_changed", "forget"]

# Parsed UID lists by mailbox path, with the (inode, mtime, size) of the file they were read from.
_uid_lists: dict[str, tuple[tuple[int, int, int], UidList]] = {}


async def read_uid_list(path: str) -> UidList:
    """The folder's UID list, parsing the file again only when it changed (read it, never change it).

    pymap re-read and parsed the whole list for every message a FETCH or SEARCH touched: reading a
    mailbox cost O(n^2), 5,000 messages took minutes. Each write replaces the file (a new inode), so
    (inode, mtime, size) tells when the parsed copy is stale.
    """
    try:
        st = os.stat(UidList.get_file(path))  # before reading: a change after it is seen next time
        stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        stamp = None
    cached = _uid_lists.get(path)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return cached[1]
    async with UidList.with_read(path) as uid_list:
        pass
    if stamp is not None:
        if len(_uid_lists) > 256:  # labs come and go: keep the cache small
            _uid_lists.clear()
        _uid_lists[path] = (stamp, uid_list)
    return uid_list


# An IDLE session (RFC 2177) waits on its mailbox's event; a delivery sets it.
_changed: dict[str, Any] = {}  # real path of a Maildir folder -> pymap Event set by its next delivery
_IDLE_CHECK = 1.0  # seconds between looks while idle even without a delivery (changes made by hand)


@functools.lru_cache(maxsize=1024)
def _real(path: str) -> str:
    return os.path.realpath(path)


def has_idlers(path: str) -> bool:
    """Whether an IMAP session is idling on the Maildir folder at `path` (any thread may ask)."""
    return _real(path) in _changed


def mailbox_changed(path: str) -> None:
    """Wake the IMAP sessions idling on the Maildir folder at `path`. Call on the server's loop."""
    event = _changed.pop(_real(path), None)
    if event is not None:
        event.set()


def forget(directory: str | os.PathLike[str]) -> None:
    """Drop what is remembered about the Maildirs under `directory` (its server stopped)."""
    under = _real(str(directory)) + os.sep
    for path in [p for p in _changed if p.startswith(under)]:
        del _changed[path]
    for path in [p for p in _uid_lists if _real(p).startswith(under)]:
        del _uid_lists[path]


class MailboxData(MailboxDataInterface[Message]):
    """One folder of a user's Maildir, shared by the sessions of that user that open it."""

    def __init__(self, mailbox_id: ObjectId, maildir: Maildir, path: str) -> None:
        super().__init__()
        self._mailbox_id = mailbox_id
        self._maildir = maildir
        self._path = path
        self._uid_validity = 0
        self._next_uid = 0
        self._flags: tuple[float, MaildirFlags] | None = None
        self._messages_lock = subsystem.get().new_rwlock()
        self._selected_set = SelectedSet()

    @classmethod
    def _get_object_id(cls, rec: Record, field: str) -> ObjectId | None:
        return ObjectId.maybe(rec.fields.get(field))

    @property
    def mailbox_id(self) -> ObjectId:
        return self._mailbox_id

    @property
    def maildir(self) -> Maildir:
        return self._maildir

    @property
    def readonly(self) -> bool:
        return False

    @property
    def uid_validity(self) -> int:
        return self._uid_validity

    @property
    def maildir_flags(self) -> MaildirFlags:
        """The folder's keywords, read again when another session added one."""
        try:
            stamp = os.stat(MaildirFlags.get_file(self._path)).st_mtime_ns
        except FileNotFoundError:
            stamp = 0
        if self._flags is None or self._flags[0] != stamp:
            self._flags = (stamp, MaildirFlags.file_read(self._path))
        return self._flags[1]

    async def _define_keywords(self, flags: Iterable[Flag]) -> MaildirFlags:
        """The folder's keywords, with those of `flags` it did not know yet added (RFC 3501 2.3.2)."""
        if self.maildir_flags.unknown(flags):
            async with MaildirFlags.with_write(self._path) as defined:
                defined.add_keywords(flags)
            self._flags = None
        return self.maildir_flags

    @property
    def permanent_flags(self) -> frozenset[Flag]:
        return self.maildir_flags.permanent_flags

    @property
    def messages_lock(self) -> ReadWriteLock:
        return self._messages_lock

    @property
    def selected_set(self) -> SelectedSet:
        return self._selected_set

    async def _get_maildir_msg(self, uid: int) -> tuple[Record, Any]:
        record = (await read_uid_list(self._path)).get(uid)
        async with self.messages_lock.read_lock():
            maildir_msg = self._maildir.get_message_metadata(record.key)
        return record, maildir_msg

    async def update_selected(self, selected: SelectedMailbox, *, wait_on: Event | None = None) -> SelectedMailbox:
        if wait_on is not None:
            real = _real(self._path)
            changed = _changed.get(real)
            if changed is None:
                changed = _changed[real] = subsystem.get().new_event()
            # A message delivered since the last look, but before the event above was there to be set,
            # must not wait for the next look: wait only when every file already has a UID.
            known = {rec.key for rec in (await read_uid_list(self._path)).records}
            if all(key in known for key in await self._get_keys()):
                await wait_on.or_event(changed).wait(timeout=_IDLE_CHECK)
            await self.reset()  # number the messages that arrived while waiting
        messages = [msg async for msg in self.messages()]
        if any(msg.recent for msg in messages):
            if selected.readonly:  # EXAMINE: shown \Recent, never claimed
                recent = {msg.uid for msg in messages if msg.recent}
            else:
                recent = await self._claim({msg.uid: msg for msg in messages if msg.recent})
            for uid in recent:
                selected.session_flags.add_recent(uid)
            if not selected.readonly:
                messages = [msg async for msg in self.messages()]
        selected.set_messages(messages)
        return selected

    async def _claim(self, candidates: dict[int, Message]) -> set[int]:
        """Move the candidates' files from new/ to cur/; the UIDs of those this session got first."""
        by_key = {msg.key: uid for uid, msg in candidates.items()}
        async with self.messages_lock.write_lock():
            claimed = self._maildir.claim_new(set(k for k in by_key if k is not None))
        return {by_key[key] for key in claimed}

    async def claim_recent(self, selected: SelectedMailbox) -> None:
        await self.update_selected(selected)

    async def append(self, append_msg: AppendMessage, *, recent: bool = False) -> Message:
        maildir = self._maildir
        email_id = ObjectId.random_email_id()
        thread_id = ObjectId.random_thread_id()
        flags = await self._define_keywords(append_msg.flag_set)
        async with self.messages_lock.write_lock():
            maildir_msg = Message.to_maildir(append_msg, flags)
            info = maildir_msg.get_info() or "2,"
            filename = write_message_file(maildir.path, "new", bytes(append_msg.literal), info,
                                          maildir_msg.get_date())
            fsync_directory(os.path.join(maildir.path, "new"))
        key = filename.split(maildir.colon)[0]
        async with UidList.with_write(self._path) as uidl:
            new_rec = Record(uidl.next_uid, {"E": str(email_id), "T": str(thread_id)}, filename)
            uidl.next_uid += 1
            uidl.set(new_rec)
        return Message.from_maildir(new_rec.uid, maildir_msg, maildir, key, email_id, thread_id, flags)

    async def copy(self, uid: int, destination: MailboxData, *, recent: bool = False) -> int | None:
        """COPY (RFC 3501 6.4.7): the message's bytes, flags and internal date, durable before the OK."""
        try:
            record, maildir_msg = await self._get_maildir_msg(uid)
            async with self.messages_lock.read_lock():
                raw = self._maildir.get_bytes(record.key)
        except (KeyError, FileNotFoundError):
            return None
        flags = self.maildir_flags.from_maildir(maildir_msg.get_flags())
        dest_flags = await destination._define_keywords(flags)
        info = "2," + dest_flags.to_maildir(flags)
        dest_path = destination._maildir.path
        async with destination.messages_lock.write_lock():
            filename = write_message_file(dest_path, "new", raw, info, maildir_msg.get_date())
            fsync_directory(os.path.join(dest_path, "new"))
        async with UidList.with_write(destination._path) as uidl:
            new_rec = Record(uidl.next_uid, record.fields, filename)
            uidl.next_uid += 1
            uidl.set(new_rec)
        return new_rec.uid

    async def move(self, uid: int, destination: MailboxData, *, recent: bool = False) -> int | None:
        """MOVE (RFC 6851): the file is renamed into the destination; into this folder, it gets a new UID."""
        if destination is self:  # one lock, taken once: pymap took it twice and hung the session
            new_uid = await self.copy(uid, destination)
            if new_uid is not None:
                await self.delete([uid])
            return new_uid
        try:
            record, maildir_msg = await self._get_maildir_msg(uid)
        except (KeyError, FileNotFoundError):
            return None
        flags = self.maildir_flags.from_maildir(maildir_msg.get_flags())
        dest_flags = await destination._define_keywords(flags)
        if flags.isdisjoint(self.maildir_flags.keywords) or dest_flags.to_maildir(flags) == \
                self.maildir_flags.to_maildir(flags):
            async with destination.messages_lock.write_lock(), self.messages_lock.write_lock():
                try:
                    name = self._maildir.move_message(record.key, destination._maildir, "new")
                except (KeyError, FileNotFoundError):
                    return None
            async with UidList.with_write(destination._path) as uidl:
                new_rec = Record(uidl.next_uid, record.fields, name)
                uidl.next_uid += 1
                uidl.set(new_rec)
            return new_rec.uid
        # The folders give the keywords different letters: a copy with the right letters, then delete.
        new_uid = await self.copy(uid, destination)
        if new_uid is not None:
            await self.delete([uid])
        return new_uid

    async def get(self, uid: int, cached_msg: CachedMessage) -> Message:
        try:
            record, maildir_msg = await self._get_maildir_msg(uid)
        except (KeyError, FileNotFoundError):
            return Message.copy_expunged(cached_msg)
        return Message.from_maildir(uid, maildir_msg, self._maildir, record.key, self._get_object_id(record, "E"),
                                    self._get_object_id(record, "T"), self.maildir_flags)

    async def update(self, uid: int, cached_msg: CachedMessage, flag_set: frozenset[Flag], mode: FlagOp) -> Message:
        try:
            record, maildir_msg = await self._get_maildir_msg(uid)
        except (KeyError, FileNotFoundError):
            msg = Message.copy_expunged(cached_msg)
            msg.permanent_flags = mode.apply(msg.permanent_flags, flag_set)
            return msg
        flags = self.maildir_flags if mode == FlagOp.DELETE else await self._define_keywords(flag_set)
        new_flags = mode.apply(flags.from_maildir(maildir_msg.get_flags()), flag_set)
        maildir_msg.set_flags(flags.to_maildir(new_flags))
        try:
            self._maildir.update_metadata(record.key, maildir_msg)
        except (KeyError, FileNotFoundError):
            pass
        return Message.from_maildir(uid, maildir_msg, self._maildir, record.key, self._get_object_id(record, "E"),
                                    self._get_object_id(record, "T"), flags)

    async def delete(self, uids: Iterable[int]) -> None:
        records = (await read_uid_list(self._path)).get_all(uids)
        async with self.messages_lock.write_lock():
            for rec in records.values():
                try:
                    self._maildir.remove(rec.key)
                except (KeyError, FileNotFoundError):
                    pass

    async def cleanup(self) -> None:
        self._maildir.clean()
        keys = await self._get_keys()
        async with UidList.with_write(self._path) as uidl:
            for rec in list(uidl.records):
                info = keys.get(rec.key)
                if info is None:
                    uidl.remove(rec.uid)
                else:
                    uidl.set(Record(rec.uid, rec.fields, rec.key + ":" + info))

    async def messages(self) -> AsyncIterable[Message]:
        uid_list = await read_uid_list(self._path)
        async with self.messages_lock.read_lock():
            listing = self._maildir.listing()
            flags = self.maildir_flags
            for rec in sorted(uid_list.records, key=lambda rec: rec.uid):
                maildir_msg = listing.metadata(rec.key)
                if maildir_msg is not None:
                    yield Message.from_maildir(rec.uid, maildir_msg, self._maildir, rec.key,
                                               self._get_object_id(rec, "E"), self._get_object_id(rec, "T"), flags)

    async def reset(self) -> MailboxData:
        """Give every new file of the folder its UID, in arrival order (RFC 3501 2.3.1.1)."""
        keys = await self._get_keys()
        uid_list = await read_uid_list(self._path)
        known = {rec.key for rec in uid_list.records}
        if any(key not in known for key in keys):  # else no write lock, no file rewrite: the common case
            async with UidList.with_write(self._path) as uidl:
                known = {rec.key for rec in uidl.records}
                for key, info in keys.items():
                    if key not in known:
                        fields = {"E": str(ObjectId.random_email_id()), "T": str(ObjectId.random_thread_id())}
                        uidl.set(Record(uidl.next_uid, fields, key + ":" + info))
                        uidl.next_uid += 1
            uid_list = uidl
        self._uid_validity = uid_list.uid_validity
        self._next_uid = uid_list.next_uid
        return self

    async def snapshot(self) -> MailboxSnapshot:
        exists = recent = unseen = 0
        first_unseen: int | None = None
        async for msg in self.messages():
            exists += 1
            if msg.recent:
                recent += 1
            if Seen not in msg.permanent_flags:
                unseen += 1
                if first_unseen is None:
                    first_unseen = exists
        return MailboxSnapshot(self.mailbox_id, self.readonly, self.uid_validity, self.permanent_flags,
                               self.session_flags, exists, recent, unseen, first_unseen, self._next_uid)

    async def _get_keys(self) -> dict[str, str]:
        async with self.messages_lock.read_lock():
            return self._maildir.listing().keys_by_arrival()
