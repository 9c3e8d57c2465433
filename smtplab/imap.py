"""An IMAP server per provider: pymap's maildir backend embedded on the lab's loop, traced.

pymap reads the same Maildirs the MX hosts deliver into. Every line in both directions goes to the
lab trace (literals collapsed to a byte count); passwords are checked by pymap against its own
users file, which the lab writes from the scenario.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from argparse import Namespace
from collections.abc import AsyncIterator, Callable
from mailbox import MaildirMessage
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any

from pymap.backend.maildir import Config, Login
from pymap.backend.maildir.io import FileWriteable
from pymap.backend.maildir.mailbox import LoadedMessage, MailboxData
from pymap.backend.maildir.mailbox import Message as _MaildirMessage
from pymap.backend.maildir.uidlist import Record, UidList
from pymap.parsing.specials.fetchattr import FetchRequirement
from pymap.mime import MessageContent
from pymap.concurrent import Subsystem
from pymap.context import subsystem
from pymap.imap import IMAPServer
from pymap.user import Passwords, UserMetadata
from proxyprotocol.reader import ProxyProtocolReader
from pysasl.hashing import BuiltinHash

from .trace import Trace

__all__ = ["ImapService", "has_idlers", "mailbox_changed"]

# The lab's passwords are shown to learners anyway; a modest PBKDF2 cost keeps start-up fast.
_HASH_ROUNDS = 2000
# The largest literal a client may send (APPENDLIMIT, RFC 7889): a message the lab's SMTP servers
# accept (10 MiB) fits; a client that announces more is told so instead of being read into memory.
MAX_LITERAL = 16 * 1024 * 1024


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


class _LabConfig(Config):
    def __init__(self, host_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._host_name = host_name

    @property
    def greeting(self) -> bytes:
        return f"{self._host_name} IMAP4rev1 ready (smtplab, pymap)".encode()


class _TracedReader:
    """Wrap a StreamReader and record each line the client sends; refuse what is too big to read."""

    def __init__(self, reader: asyncio.StreamReader, record: Callable[[str, str], None],
                 bye: Callable[[str], None]) -> None:
        self._reader = reader
        self._record = record
        self._bye = bye

    async def readline(self) -> bytes:
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than the stream limit (64 KiB); pymap would log a traceback
            self._record("C", "<a line of more than 64 KiB without a line end>")
            self._bye("[LIMIT] Command line too long, closing connection")
            raise EOFError from None
        if line:
            self._record("C", _display(line))
        return line

    async def readexactly(self, n: int) -> bytes:
        if n > MAX_LITERAL:  # pymap would wait for (and buffer) every byte of a {N+} literal
            self._bye(f"[LIMIT] Literal of {n} bytes is over the limit of {MAX_LITERAL}, closing connection")
            raise EOFError
        data = await self._reader.readexactly(n)
        self._record("C", f"<literal: {n} bytes>")
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class _TracedWriter:
    """Wrap a StreamWriter and record each line the server sends (literals collapsed).

    A line that announces a literal is recorded once the literal is written, tagged with the
    Message-ID found in it, so a FETCH of a message's headers or body belongs to that message.
    """

    _literal = re.compile(rb"\{(\d+)\}\r\n$")
    _message_id = re.compile(rb"^message-id:[ \t]*(?:\r\n)?[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
    _head_limit = 64 * 1024  # the header block is all we look at

    def __init__(self, writer: asyncio.StreamWriter, record: Callable[..., None]) -> None:
        self._writer = writer
        self._record = record
        self._buffer = b""
        self._skip = 0
        self._pending = ""  # the line announcing the literal being written
        self._head = bytearray()

    def write(self, data: bytes) -> None:
        # Record first, then send: a client that already has its answer must find it in the trace.
        try:
            self._record_lines(bytes(data))
        finally:
            self._writer.write(data)

    def _record_lines(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._skip:
                taken = min(self._skip, len(self._buffer))
                if len(self._head) < self._head_limit:
                    self._head += self._buffer[:taken]
                self._buffer = self._buffer[taken:]
                self._skip -= taken
                if self._skip:
                    return
                self._flush_literal()
            index = self._buffer.find(b"\n")
            if index < 0:
                return
            line, self._buffer = self._buffer[: index + 1], self._buffer[index + 1:]
            match = self._literal.search(line)
            if match:
                self._skip = int(match.group(1))
                self._pending = _display(line) + f" <literal: {self._skip} bytes>"
                if not self._skip:
                    self._flush_literal()
            else:
                self._record("S", _display(line))

    def _flush_literal(self) -> None:
        head = bytes(self._head).split(b"\r\n\r\n", 1)[0]
        found = self._message_id.search(head)
        ids = (found.group(1).decode("utf-8", "replace"),) if found else ()
        self._record("S", self._pending, ids)
        self._pending, self._head = "", bytearray()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


def _display(line: bytes) -> str:
    return line.rstrip(b"\r\n").decode("utf-8", "replace")


class ImapService:
    """pymap serving one provider's Maildirs on one loopback address."""

    def __init__(
        self,
        base_dir: Path,
        host_name: str,
        address: str,
        ssl_context: Any,
        trace: Trace,
        peer_name: Callable[[str], str] = lambda addr: "client",
    ) -> None:
        self.base_dir = base_dir
        self.host_name = host_name
        self.address = address
        self.port = 0
        self._trace = trace
        self._peer_name = peer_name
        self._config = _LabConfig(
            host_name,
            args=Namespace(passlib_cfg=None, proxy_protocol=None, debug=False),
            host=address, port=0, base_dir=str(base_dir), layout="++", colon=None,
            ssl_context=ssl_context, hash_context=BuiltinHash(rounds=_HASH_ROUNDS),
            subsystem=Subsystem.for_asyncio(), cpu_subsystem=Subsystem.for_asyncio(),
            invalid_user_sleep=0.2, reject_dnsbl=False, max_append_len=MAX_LITERAL,
        )
        self._login = Login(self._config)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[Any] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def add_user(self, address: str, password: str, mailbox_path: str) -> None:
        """Register `address` (the login name) with `password` and its Maildir (relative path)."""
        self._config.apply_context()
        hashed = await Passwords(self._config).hash_password(password)
        identity = await self._login.authorize(_Admin(), address)
        await identity.set(
            UserMetadata(self._config, address, password=hashed, params={"mailbox_path": mailbox_path})  # type: ignore[arg-type]
        )

    async def start(self, port: int = 0) -> None:
        server = IMAPServer(self._login, self._config)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: Any) -> None:
            # Runs for the whole connection (the PROXY-protocol reader starts it as its own task).
            self._config.apply_context()
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            peer = writer.get_extra_info("peername")
            conn = self._trace.new_conn_id("imap")
            fields = dict(
                conn=conn, client=f"{peer[0]}:{peer[1]}", server=f"{self.address}:{self.port}",
                peer=self._peer_name(peer[0]), port_name="imap",
            )
            tls = {"on": False}

            def record(direction: str, text: str, message_ids: tuple[str, ...] = ()) -> None:
                self._trace.record("imap", "line", self.host_name, text, direction=direction, tls=tls["on"],
                                   message_ids=message_ids, **fields)

            traced_writer = _TracedWriter(writer, record)
            original_start_tls = writer.start_tls

            async def start_tls(context: Any, **kw: Any) -> None:
                await original_start_tls(context, **kw)
                tls["on"] = True
                self._trace.record("imap", "tls", self.host_name, "TLS handshake done: the wire is encrypted from here",
                                   tls=True, **fields)

            traced_writer.start_tls = start_tls  # type: ignore[attr-defined]
            self._writers.add(writer)
            self._trace.record("imap", "connect", self.host_name, f"connection from {peer[0]}:{peer[1]}", **fields)
            try:
                # pymap trusts loopback clients with plaintext LOGIN; in the lab every client is on
                # loopback, so treat them as the remote clients they stand for (LOGINDISABLED until TLS).
                def bye(text: str) -> None:
                    traced_writer.write(f"* BYE {text}\r\n".encode())

                reader = _TracedReader(reader, record, bye)  # type: ignore[assignment]
                await server(reader, traced_writer, _Remote(sock_info))  # type: ignore[arg-type]
            except Exception as exc:  # a pymap bug ends this connection only: in the trace, not on stderr
                self._trace.record("imap", "error", self.host_name, f"connection failed: {exc!r}", **fields)
            finally:
                self._writers.discard(writer)
                self._trace.record("imap", "close", self.host_name, "connection closed", tls=tls["on"], **fields)
                if task is not None:
                    self._tasks.discard(task)

        callback = ProxyProtocolReader(self._config.proxy_protocol).get_callback(serve)
        self._server = await asyncio.start_server(callback, self.address, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # no graceful TLS shutdown: a stopped server just goes away
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        under = _real(str(self.base_dir)) + os.sep
        for path in [p for p in _changed if p.startswith(under)]:  # nobody idles here any more
            del _changed[path]
        for path in [p for p in _uid_lists if _real(p).startswith(under)]:
            del _uid_lists[path]

    @property
    def running(self) -> bool:
        return self._server is not None


class _Remote:
    """A SocketInfo view that never counts as 'from localhost'."""

    def __init__(self, info: Any) -> None:
        self._info = info

    @property
    def from_localhost(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._info, name)


class _Admin:
    """The identity the lab uses to create users (pymap lets 'admin' write any user)."""

    name = "smtplab-admin"
    roles = frozenset({"admin"})
