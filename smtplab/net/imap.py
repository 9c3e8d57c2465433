"""An IMAP server per provider: the lab's Maildir backend (:mod:`smtplab.net.imapd`) on pymap's IMAP
protocol layer, embedded on the lab's loop, traced.

It reads the same Maildirs the MX hosts deliver into. Every line in both directions goes to the
lab trace (literals collapsed to a byte count); passwords are checked by pymap against its own
users file, which the lab writes from the scenario.
"""

from __future__ import annotations

import asyncio
import re
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxyprotocol.reader import ProxyProtocolReader
from pymap.concurrent import Subsystem
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import BuiltinHash

from ..i18n import N_, lazy
from ..trace.events import Close, Connect, Note, TlsStarted
from ..trace.ring import Trace
from .guard import BACKLOG, ConnectionGuard
from .imapd import Config, LabImapServer, Limits, Login, forget, has_idlers, mailbox_changed
from .listener import close_listener
from .wire import WireTap

__all__ = ["ImapService", "has_idlers", "mailbox_changed"]

# The lab's passwords are shown to learners anyway; a modest PBKDF2 cost keeps start-up fast.
_HASH_ROUNDS = 2000
# The largest literal a client may send (APPENDLIMIT, RFC 7889): a message the lab's SMTP servers
# accept (10 MiB) fits; a client that announces more is told so instead of being read into memory.
MAX_LITERAL = 16 * 1024 * 1024


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
            self._record("C", lazy(N_("<a line of more than 64 KiB without a line end>")))
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
        self._record("C", lazy(N_("<literal: {n} bytes>"), n=n))
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
        limits: Limits | None = None,
        guard: ConnectionGuard | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self._guard = guard  # who may connect, and how many at once (guard.py)
        self.base_dir = base_dir
        # "imaps" (993's role, RFC 8314): TLS from the first byte, so no STARTTLS and LOGIN at once.
        self.implicit_tls = implicit_tls
        self.port_name = "imaps" if implicit_tls else "imap"
        self.host_name = host_name
        self.address = address
        self.port = 0
        self._trace = trace
        self._peer_name = peer_name
        self.limits = limits or Limits()  # idle, literal and failed-login limits (see smtplab.net.imapd.protocol)
        self._config = _LabConfig(
            host_name,
            args=Namespace(passlib_cfg=None, proxy_protocol=None, debug=False),
            host=address, port=0, base_dir=str(base_dir), layout="++", colon=None,
            ssl_context=ssl_context, tls_enabled=not implicit_tls, hash_context=BuiltinHash(rounds=_HASH_ROUNDS),
            subsystem=Subsystem.for_asyncio(), cpu_subsystem=Subsystem.for_asyncio(),
            invalid_user_sleep=0.0, reject_dnsbl=False, max_append_len=MAX_LITERAL,
        )
        self._login = Login(self._config)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[Any] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.wiretap: Callable[[WireTap], None] | None = None  # the lab's keeper of raw bytes (lab.pcap)
        self._taps: dict[Any, WireTap] = {}

    async def add_user(self, address: str, password: str, mailbox_path: str) -> None:
        """Register `address` (the login name) with `password` and its Maildir (relative path)."""
        self._config.apply_context()
        hashed = await Passwords(self._config).hash_password(password)
        identity = await self._login.authorize(_Admin(), address)  # type: ignore[arg-type]  # pymap reads name, roles
        await identity.set(
            UserMetadata(self._config, address, password=hashed, params={"mailbox_path": mailbox_path})  # type: ignore[arg-type]
        )

    async def start(self, port: int = 0) -> None:
        server = LabImapServer(self._login, self._config, self.limits)
        # RFC 3501 section 7.1.5 (BYE) with RFC 5530's UNAVAILABLE code: one connection too many.
        door = self._guard.listener(self.host_name, self.port_name, b"* BYE [UNAVAILABLE] Too many connections, try again "
                                    b"later\r\n") if self._guard is not None else None

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: Any) -> None:
            tap = self._taps.pop(writer, None)  # put on by accept() below
            if self._guard is not None and door is not None and not self._guard.admit(writer.transport, door):
                return  # another user's connection, or one too many: closed (and traced) by the guard
            # Runs for the whole connection (the PROXY-protocol reader starts it as its own task).
            self._config.apply_context()
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            peer = writer.get_extra_info("peername")
            conn = self._trace.new_conn_id("imap")
            if tap is not None:
                tap.name(conn)
            fields = dict(
                conn=conn, client=f"{peer[0]}:{peer[1]}", server=f"{self.address}:{self.port}",
                peer=self._peer_name(peer[0]), port_name=self.port_name,
                corr=self._trace.new_correlation("imap"),  # one unit of work per session
            )
            tls = {"on": False}
            if self.implicit_tls:  # the server socket did the handshake before this connection was handed over
                tls["on"] = True

            def record(direction: str, text: str, message_ids: tuple[str, ...] = ()) -> None:
                self._trace.record("imap", "line", self.host_name, text, direction=direction, tls=tls["on"],
                                   message_ids=message_ids, **fields)

            traced_writer = _TracedWriter(writer, record)
            original_start_tls = writer.start_tls

            async def start_tls(context: Any, **kw: Any) -> None:
                await original_start_tls(context, **kw)
                tls["on"] = True
                cipher = writer.get_extra_info("cipher")
                self._trace.record("imap", "tls", self.host_name,
                                   lazy(N_("TLS handshake done: the wire is encrypted from here")),
                                   tls=True, payload=TlsStarted(cipher[1] if cipher else "TLS",
                                                                cipher[0] if cipher else ""), **fields)

            traced_writer.start_tls = start_tls  # type: ignore[attr-defined]
            self._writers.add(writer)
            self._trace.record("imap", "connect", self.host_name,
                               lazy(N_("connection from {client}"), client=f"{peer[0]}:{peer[1]}"),
                               payload=Connect(fields["client"], fields["server"]), **fields)
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                cipher = ssl_object.cipher()
                self._trace.record("imap", "tls", self.host_name, lazy(N_("{version} handshake done (implicit TLS, RFC 8314): the wire is encrypted from here"),
                                        version=ssl_object.version()), tls=True,
                                   payload=TlsStarted(ssl_object.version() or "TLS", cipher[0] if cipher else ""),
                                   **fields)
            try:
                # pymap trusts loopback clients with plaintext LOGIN; in the lab every client is on
                # loopback, so treat them as the remote clients they stand for (LOGINDISABLED until TLS).
                def bye(text: str) -> None:
                    traced_writer.write(f"* BYE {text}\r\n".encode())

                reader = _TracedReader(reader, record, bye)  # type: ignore[assignment]
                def login_failed(delay: float) -> None:
                    self._trace.record("imap", "state", self.host_name,
                                       lazy(N_("login failed: answered after {delay} s (the delay doubles with each failure)"),
                                            delay=f"{delay:g}"),
                                       tls=tls["on"], payload=Note(warning=True), **fields)

                await server(reader, traced_writer, _Remote(sock_info), login_failed)  # type: ignore[arg-type]
            except Exception as exc:  # a pymap bug ends this connection only: in the trace, not on stderr
                self._trace.record("imap", "error", self.host_name, lazy(N_("connection failed: {error}"), error=repr(exc)),
                                   payload=Close(repr(exc)), **fields)
            finally:
                self._writers.discard(writer)
                self._trace.record("imap", "close", self.host_name, lazy(N_("connection closed")), tls=tls["on"],
                                   payload=Close(), **fields)
                if task is not None:
                    self._tasks.discard(task)

        callback = ProxyProtocolReader(self._config.proxy_protocol).get_callback(serve)

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The tap goes on before a byte is read; serve() names it. Under implicit TLS (imaps) this
            # transport carries the clear text above TLS, not what crossed the wire: no tap there.
            if self.wiretap is not None and not self.implicit_tls:
                tap = WireTap("", self.host_name, service="imap")
                self.wiretap(tap)
                tap.attach(writer.transport)
                self._taps[writer] = tap
            try:
                await callback(reader, writer)
            except BaseException:
                self._taps.pop(writer, None)
                raise

        self._server = await asyncio.start_server(accept, self.address, port, backlog=BACKLOG,
                                                  ssl=self._config.ssl_context if self.implicit_tls else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is None:
            return
        await close_listener(self._server, self._writers, self._tasks)
        self._server = None
        forget(self.base_dir)

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
