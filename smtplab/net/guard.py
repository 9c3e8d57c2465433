"""Who may connect to a lab: on a shared host, only its own Unix user; and never too many at once.

On a JupyterHub host dozens of users share one loopback network: any of them can list every lab's
ports (`/proc/net/tcp`) and connect. Inside a lab every address is trusted as drawn (that is the
lesson); across Unix users nothing is. So on Linux a lab accepts a TCP connection only when the
client's socket belongs to the lab's own user: the kernel knows each socket's owner (sock_diag over
netlink, the interface `ss` uses; `/proc/net/tcp` as a fallback), and a connection from another user
is closed at once and traced as refused. A scenario opens the lab on purpose for a teacher's shared
demo: `Scenario.from_dict({..., "options": {"allow_other_users": True}})`.

What this cannot cover: UDP has no connection to check (the lab DNS answers any user's UDP question:
the zones are public anyway); another user can still bind a lab address (127.0.x.y) as a client, and
reach a lab opened with `allow_other_users`. See docs/teaching.md, "Shared host threat model".

Every listener also has a connection limit (above it an SMTP client hears `421 4.7.0`, an IMAP client
`* BYE`, RFC 5321 section 3.8 / RFC 3501 section 7.1.5), a long accept backlog (a burst of hundreds of
connections is greeted, not dropped by the kernel), and log flood control (one line per cause per
interval, however fast the cause repeats). The wait after failed logins is `net/throttle.py`.

Wiring a listener (a new service needs one of these two):

    server = await loop.create_server(guard.protocol_factory(factory, host, "smtp", busy=b"421 ..."),
                                      host=address, port=0, backlog=BACKLOG)
    server = await asyncio.start_server(guard.callback(serve, host, "pop3", busy=b"-ERR ..."),
                                        address, 0, backlog=BACKLOG)

or, inside a connection callback that must stay as it is: `if not guard.admit(writer.transport, ...): return`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..i18n import N_, _, lazy
from ..trace.events import Refused
from ..trace.ring import Trace

__all__ = ["ConnectionGuard", "BACKLOG", "DEFAULT_LIMITS", "peer_uid", "peer_check_available", "FloodControl",
           "limit_log_floods"]

# Connections the kernel may queue for a listener before the lab accepts them (asyncio's default is 100:
# a burst of 500 connections then waits for SYN retransmissions, seconds each). Bounded by somaxconn.
BACKLOG = 1024
# Open connections per listener (per host and service). Above it a new client is told to come back later.
DEFAULT_LIMITS: Mapping[str, int] = {"smtp": 100, "submission": 100, "submissions": 100, "imap": 100, "imaps": 100,
                                     "pop3": 100, "pop3s": 100, "dns": 50, "control": 16}
FALLBACK_LIMIT = 100
LOG_INTERVAL = 10.0  # seconds: one log line (or trace event) per cause per interval

_log = logging.getLogger("smtplab")


# --- whose socket is it? ------------------------------------------------------------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NO_COOKIE = 0xFFFFFFFF
_TCP_LISTEN = 10


def _diag_uid(family: int, src: str, sport: int, dst: str, dport: int) -> int | None:
    """The owner of the TCP socket bound to (src, sport) and connected to (dst, dport), asked of the kernel
    (linux/inet_diag.h: an exact lookup, not a dump of every socket). None when there is no such socket."""
    sockid = (struct.pack("!HH", sport, dport) + socket.inet_pton(family, src).ljust(16, b"\0")
              + socket.inet_pton(family, dst).ljust(16, b"\0") + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE))
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    # A netlink socket per question (a few microseconds): nothing stays open when the lab stops.
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:  # type: ignore[attr-defined]
        sock.settimeout(1.0)
        sock.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + request)
        reply = sock.recv(8192)
    _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", reply)
    if kind == _NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", reply, 16)
        if -error in (2, 111):  # ENOENT / ECONNREFUSED: no such socket (it closed meanwhile)
            return None
        raise OSError(-error, os.strerror(-error))
    # struct inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid
    state = reply[17]
    (uid,) = struct.unpack_from("=I", reply, 16 + 4 + 48 + 12)
    return None if state == _TCP_LISTEN else uid


def _proc_address(family: int, address: str, port: int) -> str:
    """An endpoint as /proc/net/tcp writes it: the address's 32-bit words in host order, in hex; the port."""
    raw = socket.inet_pton(family, address)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _proc_uid(family: int, src: str, sport: int, dst: str, dport: int) -> int | None:
    """The same question answered from /proc/net/tcp (or tcp6): slower (a line per socket on the host)."""
    local, remote = _proc_address(family, src, sport), _proc_address(family, dst, dport)
    with open("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == local and fields[2] == remote and int(fields[3], 16) != _TCP_LISTEN:
                return int(fields[7])
    return None


_lookups: list[Callable[[int, str, int, str, int], int | None]] = [_diag_uid, _proc_uid]


def peer_uid(sock: socket.socket | Any) -> int | None:
    """The Unix user owning the other end of an accepted loopback TCP connection (None: unknown, e.g.
    it closed already). Linux only; raises OSError when the kernel cannot be asked at all."""
    peer = sock.getpeername()
    here = sock.getsockname()
    error: OSError | None = None
    for lookup in list(_lookups):
        try:
            return lookup(sock.family, peer[0], peer[1], here[0], here[1])
        except OSError as exc:  # e.g. netlink not allowed in this container: the next way
            error = exc
            if len(_lookups) > 1:
                _lookups.remove(lookup)
    assert error is not None
    raise error


_available: bool | None = None


def peer_check_available() -> bool:
    """True where a socket's owner can be found (Linux with sock_diag or /proc/net/tcp); checked once."""
    global _available
    if _available is None:
        _available = False
        if sys.platform.startswith("linux"):
            try:
                with socket.create_server(("127.0.0.1", 0)) as listener, \
                        socket.create_connection(listener.getsockname()[:2], timeout=2):
                    accepted, _address = listener.accept()
                    with accepted:
                        _available = peer_uid(accepted) == os.geteuid()
            except OSError:
                _available = False
    return _available


# --- log flood control -----------------------------------------------------------------------------

class FloodControl:
    """Let one event per cause through per interval; count the rest and say how many were held back."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[Any, float] = {}
        self._held: dict[Any, int] = {}
        self._lock = threading.Lock()

    def allow(self, cause: Any) -> tuple[bool, int]:
        """(whether to report `cause` now, how many reports of it were held back since the last one)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(cause)
            if last is not None and now - last < self.interval:
                self._held[cause] = self._held.get(cause, 0) + 1
                return False, 0
            if len(self._last) > 1024:  # causes come and go: forget the old ones
                self._last.clear()
            self._last[cause] = now
            return True, self._held.pop(cause, 0)


class _FloodFilter(logging.Filter):
    """A logging filter: the same message (and exception type) from the same place once per interval."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        super().__init__()
        self.flood = FloodControl(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        allowed, held = self.flood.allow((record.name, record.msg if isinstance(record.msg, str) else "",
                                          record.pathname, record.lineno, exc_type))
        if allowed and held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.flood.interval:g} s not logged)"
        return allowed


_filtered_loggers: set[str] = set()


def limit_log_floods(loop: asyncio.AbstractEventLoop, interval: float = LOG_INTERVAL) -> None:
    """Rate-limit what a lab's loop and servers log: one line per cause per interval.

    When the process runs out of file descriptors, asyncio's accept loop (3.11-3.13) reports the same
    EMFILE up to `backlog` times per wake-up and re-arms itself as often: a lab once wrote 126,040
    tracebacks in 35 s. The loop's exception handler (a public hook) and a filter on the servers'
    loggers keep the first of each and a count of the rest.
    """
    flood = FloodControl(interval)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        allowed, held = flood.allow((context.get("message"), type(exc), getattr(exc, "errno", None)))
        if not allowed:
            return
        if held:
            context = {**context, "message": f"{context.get('message')} ({held} more like this in the last "
                                             f"{interval:g} s not logged)"}
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    for name in ("mail.log", "pymap", "smtplab"):  # the lab's servers' loggers (aiosmtpd logs to mail.log)
        if name not in _filtered_loggers:
            _filtered_loggers.add(name)
            logging.getLogger(name).addFilter(_FloodFilter(interval))


# --- the guard ----------------------------------------------------------------------------------

class _Listener:
    """One listening service of one host: its open connections, so a limit can be kept."""

    __slots__ = ("host", "service", "busy", "limits", "open")

    def __init__(self, host: str, service: str, busy: bytes | None, limits: Mapping[str, int]) -> None:
        self.host, self.service, self.busy, self.limits = host, service, busy, limits
        self.open: set[asyncio.BaseTransport] = set()

    @property
    def limit(self) -> int:  # read at each connection: a change to guard.limits applies at once
        return self.limits.get(self.service, FALLBACK_LIMIT)

    def full(self) -> bool:
        if len(self.open) < self.limit:
            return False
        self.open = {t for t in self.open if not t.is_closing()}  # closed since: no callback needed
        return len(self.open) >= self.limit


class ConnectionGuard:
    """Admit a lab's TCP connections: from its own Unix user only (unless opened), and not too many."""

    def __init__(self, trace: Trace, *, allow_other_users: bool = False,
                 limits: Mapping[str, int] | None = None, peer_name: Callable[[str], str] = lambda a: "client") -> None:
        self.trace = trace
        self.uid = os.geteuid() if hasattr(os, "geteuid") else -1
        self.allow_other_users = allow_other_users
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self._peer_name = peer_name
        self._flood = FloodControl()
        # Whether connections are checked: asked once, so a lab on macOS or Windows says why it is open.
        self.checking = not allow_other_users and peer_check_available()
        self.warning = ""
        if not allow_other_users and not self.checking:
            self.warning = _(
                "this system does not tell which user opened a connection (the lab checks that on Linux only): "
                "other users of this machine can connect to this lab's servers. On a shared host run it on Linux.")

    def listener(self, host: str, service: str, busy: bytes | None = None) -> _Listener:
        return _Listener(host, service, busy, self.limits)

    def admit(self, transport: asyncio.BaseTransport, listener: _Listener) -> bool:
        """Decide on a connection just accepted: True to serve it; False when it was refused and closed
        (another user's, or one too many: the busy line is sent first, then the connection closed)."""
        if self.checking:
            sock = transport.get_extra_info("socket")
            try:
                uid = peer_uid(sock) if sock is not None else None
            except OSError as exc:
                uid = None
                self._refused(transport, listener, "owner-unknown", lazy(N_("its owner could not be checked ({error})"), error=exc))
                return False
            if uid != self.uid:
                who = lazy(N_("it closed before its owner could be checked")) if uid is None else lazy(N_(
                    "it belongs to another user of this machine (uid {uid}); this lab serves uid {own} only"), uid=uid, own=self.uid)
                self._refused(transport, listener, ("uid", uid), who)
                return False
        if listener.full():
            if listener.busy is not None:
                transport.write(listener.busy)  # type: ignore[attr-defined]
            self._refused(transport, listener, "busy", lazy(N_("too many connections (limit {limit})"), limit=listener.limit),
                          close=listener.busy is not None)
            return False
        listener.open.add(transport)
        return True

    def _refused(self, transport: Any, listener: _Listener, cause: Any, why: str,
                 close: bool = False) -> None:
        if close:
            transport.close()  # the busy reply is written first, then the connection closed
        else:
            transport.abort()  # nothing is said to another user's connection: closed at once
        peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("sockname") or ("?", 0)
        allowed, held = self._flood.allow((listener.host, listener.service, cause))
        if not allowed:
            return
        client = f"{peer[0]}:{peer[1]}"
        said = lazy(N_("{service} connection from {client} refused: {why} ({held} more refused for the same reason "
                       "since the last note)"), service=listener.service, client=client, why=why, held=held) if held \
            else lazy(N_("{service} connection from {client} refused: {why}"), service=listener.service, client=client, why=why)
        self.trace.record("lab", "refused", listener.host, said, payload=Refused(why), client=f"{peer[0]}:{peer[1]}",
                          server=f"{sock[0]}:{sock[1]}", peer=self._peer_name(str(peer[0])), port_name=listener.service)

    def protocol_factory(self, factory: Callable[[], asyncio.Protocol], host: str, service: str, *,
                         busy: bytes | None = None) -> Callable[[], asyncio.Protocol]:
        """Wrap a protocol factory (loop.create_server): a connection is served by `factory()` once admitted."""
        listener = self.listener(host, service, busy)

        def guarded() -> asyncio.Protocol:
            return _Doorkeeper(self, listener, factory)

        return guarded

    def callback(self, serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], host: str,
                 service: str, *, busy: bytes | None = None
                 ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """Wrap an asyncio.start_server callback: it runs only for admitted connections."""
        listener = self.listener(host, service, busy)

        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.admit(writer.transport, listener):
                await serve(reader, writer)

        return guarded


class _Doorkeeper(asyncio.Protocol):
    """Stands at the door of one connection: once admitted, hands the transport to the real protocol and
    steps out of the way (transport.set_protocol), so it costs nothing per byte."""

    def __init__(self, guard: ConnectionGuard, listener: _Listener, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard, self._listener, self._factory = guard, listener, factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(transport, self._listener):
            return
        protocol = self._factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # a refused connection, gone


def warn_once(guard: ConnectionGuard) -> None:
    """Say once, at the start of a lab, that other users can reach it (where that cannot be checked)."""
    if guard.warning:
        warnings.warn(guard.warning, RuntimeWarning, stacklevel=4)
