"""Fixes to pymap 0.36.7's maildir backend, applied when smtplab.imap is imported.

pymap is pinned and dormant; each fix below names what pymap does and why the lab changes it. A pymap
upgrade must re-check every one of them: tests/test_imap.py exercises each (the UID-list cache at
scale in tests/test_load.py).

- Literals keep the stored CRLF line ends (pymap re-serialised each message with bare LF).
- A mailbox's UID list is parsed again only when its file changed (pymap re-read it per message).
- A Maildir is listed once per command, not stat()ed three times per message per command.
- New messages get their UIDs in arrival order, not directory order.
- IDLE is woken by a delivery instead of looking once a second.
- State files are written beside their target, never renamed across file systems.
- COPY copies the message, not only its flags (pymap wrote an empty file: copy-then-delete lost mail).
- A mailbox name is a name, never a path: "." or "/" once reached the provider's directory.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from mailbox import MaildirMessage
from tempfile import NamedTemporaryFile
from typing import Any

from pymap.backend.maildir.io import FileWriteable
from pymap.backend.maildir.layout import _BaseLayout
from pymap.backend.maildir.mailbox import LoadedMessage, MailboxData
from pymap.backend.maildir.mailbox import Message as _MaildirMessage
from pymap.backend.maildir.uidlist import Record, UidList
from pymap.context import subsystem

from .disk import fsync_directory
from .store import write_message_file
from pymap.exceptions import MailboxError
from pymap.mime import MessageContent
from pymap.parsing.response import ResponseCode
from pymap.parsing.specials.fetchattr import FetchRequirement

__all__ = ["has_idlers", "mailbox_changed", "forget"]


async def _load_content_crlf(self: Any, requirement: FetchRequirement) -> LoadedMessage:
    """Serve a message's bytes exactly as stored, with CRLF line ends.

    pymap 0.36.7 re-serialises each message through email.message (bytes(MaildirMessage)), which
    emits bare LF: IMAP literals must use CRLF (RFC 3501 section 2.2), and that re-parse is slow.
    """
    if self._key is None or self._maildir is None or requirement.has_none(FetchRequirement.CONTENT):
        return LoadedMessage(self, requirement, None)
    try:
        raw = self._maildir.get_bytes(self._key)
    except (KeyError, FileNotFoundError):
        return LoadedMessage(self, requirement, None)
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return LoadedMessage(self, requirement, MessageContent.parse(raw))


_MaildirMessage.load_content = _load_content_crlf  # type: ignore[method-assign]

# Parsed UID lists by mailbox path, with the (inode, mtime, size) of the file they were read from.
_uid_lists: dict[str, tuple[tuple[int, int, int], UidList]] = {}


async def _read_uid_list(path: str) -> UidList:
    """Return the mailbox's UID list, parsing the file again only when it changed.

    pymap replaces the file (a new inode) on every write, so (inode, mtime, size) tells when the parsed
    copy is stale. The copy returned is shared: read it, never change it.
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


async def _get_maildir_msg_cached(self: Any, uid: int) -> tuple[Record, Any]:
    """Look up one message by UID, reading the mailbox's UID list only when the file changed.

    pymap 0.36.7 re-reads and parses the whole UID list for every message a FETCH or SEARCH touches,
    so reading a mailbox costs O(n^2): 5,000 messages took minutes.
    """
    record = (await _read_uid_list(self._path)).get(uid)
    async with self.messages_lock.read_lock():
        maildir_msg = self._maildir.get_message_metadata(record.key)
    return record, maildir_msg


class _Listing:
    """One look at a Maildir's new/ and cur/ (two directory reads): message key -> (subdir, file name).

    pymap 0.36.7 answers every command in a selected mailbox (NOOP, SEARCH, FETCH ...) by listing the
    Maildir through the standard library and then stat()ing each message through `Maildir._lookup`,
    which itself re-checks both directories: three system calls per message per command, and a write
    lock on the UID list even when nothing changed. A client that polls a mailbox of a few hundred
    messages kept the lab's loop busy. This reads each directory once; a message's date (its file's
    mtime, which never changes) is stat()ed once per file name and remembered.
    """

    def __init__(self, maildir: Any, dates: dict[str, float]) -> None:
        self.entries: dict[str, tuple[str, str]] = {}
        colon = maildir.colon
        for subdir in ("new", "cur"):
            try:
                with os.scandir(os.path.join(maildir._path, subdir)) as entries:
                    for entry in entries:  # like mailbox.Maildir._refresh: files only, key before the colon
                        if not entry.is_dir():
                            self.entries[entry.name.split(colon)[0]] = (subdir, entry.name)
            except FileNotFoundError:
                continue
        seen = {f"{subdir}/{name}" for subdir, name in self.entries.values()}
        for subpath in [p for p in dates if p not in seen]:  # renamed or gone: forget
            del dates[subpath]
        self._maildir, self._dates = maildir, dates

    def metadata(self, key: str) -> MaildirMessage | None:
        """The message's flags and date without reading it (like pymap's `get_message_metadata`)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        subdir, name = entry
        subpath = f"{subdir}/{name}"
        date = self._dates.get(subpath)
        if date is None:
            try:
                date = os.path.getmtime(os.path.join(self._maildir._path, subpath))
            except FileNotFoundError:
                return None
            self._dates[subpath] = date
        msg = MaildirMessage()
        msg.set_subdir(subdir)
        if self._maildir.colon in name:
            msg.set_info(name.rsplit(self._maildir.colon, 1)[-1])
        msg.set_date(date)
        return msg


def _listing(self: Any) -> _Listing:
    dates = self.__dict__.setdefault("_lab_dates", {})
    return _Listing(self._maildir, dates)


async def _get_keys_listed(self: Any) -> dict[str, str]:
    """Every message key with its Maildir info (flags), from one listing of new/ and cur/, oldest first.

    pymap gives new messages their UIDs in this order; in directory order (pymap's), a message that
    arrived later could get a lower UID than one before it, which RFC 3501 2.3.1.1 rules out for
    messages added one after the other.
    """
    async with self.messages_lock.read_lock():
        listing = _listing(self)
    found = []
    for key in listing.entries:
        msg = listing.metadata(key)
        if msg is not None:
            found.append((msg.get_date(), key, msg.get_info()))
    found.sort()
    return {key: info for _, key, info in found}


async def _messages_listed(self: Any) -> AsyncIterator[Any]:
    """pymap's `MailboxData.messages`, reading the Maildir once per call instead of once per message."""
    uid_list = await _read_uid_list(self._path)
    async with self.messages_lock.read_lock():
        listing = _listing(self)
        for rec in list(uid_list.records):
            maildir_msg = listing.metadata(rec.key)
            if maildir_msg is None:
                continue
            yield _MaildirMessage.from_maildir(
                rec.uid, maildir_msg, self._maildir, rec.key, self._get_object_id(rec, "E"),
                self._get_object_id(rec, "T"), self.maildir_flags)


_original_reset = MailboxData.reset


async def _reset_when_changed(self: Any) -> Any:
    """pymap's `MailboxData.reset`, which gives new files UIDs, without the UID list's write lock
    (and its file rewrite) when every message already has one: the common case for every command."""
    keys = await self._get_keys()
    uid_list = await _read_uid_list(self._path)
    known = {rec.key for rec in uid_list.records}
    if all(key in known for key in keys):
        self._uid_validity = uid_list.uid_validity
        self._next_uid = uid_list.next_uid
        return self
    return await _original_reset(self)


# An IDLE session (RFC 2177) waits on its mailbox's event; a delivery sets it. pymap's maildir backend
# only looks again once a second, so a message took up to a second to show in Thunderbird or K-9.
_changed: dict[str, Any] = {}  # real path of a Maildir folder -> pymap Event set by its next delivery
_IDLE_CHECK = 1.0  # seconds between looks while idle even without a delivery (changes made by hand)


@functools.lru_cache(maxsize=1024)
def _real(path: str) -> str:
    return os.path.realpath(path)


def has_idlers(path: str) -> bool:
    """Whether an IMAP session is idling on the Maildir folder at `path` (any thread may ask)."""
    return _real(path) in _changed


def mailbox_changed(path: str) -> None:
    """Wake the IMAP sessions idling on the Maildir folder at `path`. Call on the lab's loop."""
    event = _changed.pop(_real(path), None)
    if event is not None:
        event.set()


async def _update_selected_woken(self: Any, selected: Any, *, wait_on: Any = None) -> Any:
    """pymap's `MailboxData.update_selected`, woken by a delivery instead of polling once a second."""
    if wait_on is not None:
        real = _real(self._path)
        changed = _changed.get(real)
        if changed is None:
            changed = _changed[real] = subsystem.get().new_event()
        # A message delivered since pymap last looked, but before the event above was there to be set,
        # must not wait for the next look: wait only when every file in the Maildir already has a UID.
        known = {rec.key for rec in (await _read_uid_list(self._path)).records}
        if all(key in known for key in await self._get_keys()):
            await wait_on.or_event(changed).wait(timeout=_IDLE_CHECK)
        await self.reset()  # number the messages that arrived while waiting
    selected.set_messages([msg async for msg in self.messages()])
    return selected


MailboxData._get_maildir_msg = _get_maildir_msg_cached  # type: ignore[method-assign]
MailboxData._get_keys = _get_keys_listed  # type: ignore[method-assign]
MailboxData.messages = _messages_listed  # type: ignore[method-assign,assignment]
MailboxData.reset = _reset_when_changed  # type: ignore[method-assign]
MailboxData.update_selected = _update_selected_woken  # type: ignore[method-assign]


def _file_write_in_place(self: Any) -> None:
    """Write one of pymap's state files (UID list, flags, users) through a temporary file beside it.

    pymap 0.36.7 writes the temporary file in the system's temporary directory, then renames it into
    the mailbox: that rename fails (EXDEV) when the lab directory is on another file system than
    /tmp, e.g. a persistent lab in a home directory on its own volume.
    """
    file_path = self.get_file(self.path)
    with NamedTemporaryFile("w", dir=os.path.dirname(file_path), prefix="tmp-pymap-", delete=False) as tmp:
        self.write(tmp)
    os.replace(tmp.name, file_path)
    self._touched = False


FileWriteable.file_write = _file_write_in_place  # type: ignore[method-assign]


def forget(directory: str | os.PathLike[str]) -> None:
    """Drop what is remembered about the Maildirs under `directory` (its lab stopped)."""
    under = _real(str(directory)) + os.sep
    for path in [p for p in _changed if p.startswith(under)]:  # nobody idles there any more
        del _changed[path]
    for path in [p for p in _uid_lists if _real(p).startswith(under)]:
        del _uid_lists[path]


# A folder name part becomes one directory entry `.part` of the user's Maildir (Maildir++). 255 bytes is
# the usual file-name limit; the whole name keeps well under it.
_MAX_NAME_BYTES = 200
_FORBIDDEN = frozenset("\\\0") | frozenset(chr(c) for c in range(32)) | {"\x7f"}


class InvalidMailboxName(MailboxError):
    """A mailbox name that is not a name (empty parts, a path, control characters): a tagged NO [CANNOT]."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name, f"Invalid mailbox name: {why}.".encode(), ResponseCode.of(b"CANNOT"))


def check_mailbox_name(name: str, delimiter: str) -> list[str]:
    """The parts of folder `name` split at `delimiter` ("/"), or InvalidMailboxName.

    pymap 0.36.7 joined the parts into a path unchecked: with the Maildir++ layout (".Part.Sub" on
    disk) the name "." became "..", the provider's directory (DELETE "." removed every user's mail and
    the password files). RFC 3501 5.1 leaves names to the server; this one refuses an empty level
    ("", "/", "a//b"), a "." in a level (on disk it is Maildir++'s own separator, so "." and ".."
    would leave the Maildir and "a.b" would be read back as "a/b"), a backslash, control characters
    (RFC 9051 5.1 asks servers to refuse them) and a name over 200 bytes.
    """
    if name == "INBOX":
        return []
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise InvalidMailboxName(name[:40], f"longer than {_MAX_NAME_BYTES} bytes")
    parts = name.split(delimiter)
    if any(not part for part in parts):
        raise InvalidMailboxName(name, f"an empty level between {delimiter!r} separators")
    if any(ch in _FORBIDDEN for ch in name):
        raise InvalidMailboxName(name, "no backslash or control character in a folder name")
    if any("." in part for part in parts):
        raise InvalidMailboxName(name, f"no '.' in a folder name (folders nest with {delimiter!r})")
    return parts


def _split_checked(cls: Any, name: str, delimiter: str) -> list[str]:
    return check_mailbox_name(name, delimiter)


_BaseLayout._split = classmethod(_split_checked)  # type: ignore[method-assign,assignment]


async def _copy_with_content(self: Any, uid: int, destination: MailboxData, *, recent: bool = False) -> int | None:
    """pymap's `MailboxData.copy`, writing the message's bytes too (RFC 3501 6.4.7: COPY copies the message).

    pymap 0.36.7 built the copy from the message's metadata alone, so the new file was empty: in mutt,
    "save to folder" (COPY, then delete the original) destroyed the message. The copy keeps the
    original's bytes, flags and internal date (its file's mtime), and is durable before the OK.
    """
    try:
        record, maildir_msg = await self._get_maildir_msg(uid)
        async with self.messages_lock.read_lock():
            raw = self._maildir.get_bytes(record.key)
    except (KeyError, FileNotFoundError):
        return None
    dest_maildir = destination._maildir
    subdir = "new" if recent else "cur"
    info = maildir_msg.get_info() or "2,"  # pymap names copies key + ":" + info
    async with destination.messages_lock.write_lock():
        dest_filename = write_message_file(dest_maildir._path, subdir, raw, info, maildir_msg.get_date())
        fsync_directory(os.path.join(dest_maildir._path, subdir))
    async with UidList.with_write(destination._path) as uidl:
        new_rec = Record(uidl.next_uid, record.fields, dest_filename)
        uidl.next_uid += 1
        uidl.set(new_rec)
    return new_rec.uid


MailboxData.copy = _copy_with_content  # type: ignore[method-assign]
