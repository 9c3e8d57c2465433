"""What an eavesdropper on the wire sees: the raw bytes of a connection, before and after STARTTLS.

Before STARTTLS every command, every reply, every base64 password crosses in clear text. After it,
only TLS records cross: a 5-byte header (type, version, length) and bytes that mean nothing without the
session keys. The tap records the real bytes at the TCP transport, below TLS, so this view is not a
simulation: it is what `tcpdump -A` on the loopback interface would print.

One `WireTap` per connection (SMTP, IMAP, DNS over TCP) or per DNS question over UDP, each with the
endpoints, the time every chunk of bytes crossed and how the connection ended: enough for `views/pcap.py` to
write the packets a capture on the loopback interface would have held.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from asyncio import sslproto
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["WireTap", "Chunk", "End", "WireStore", "TLS_TYPES", "start_server"]

TLS_TYPES = {20: "change cipher spec", 21: "alert", 22: "handshake", 23: "application data"}
LIMIT = 256 * 1024  # bytes kept per connection
_GONE_LOCK = threading.Lock()
CHUNK_LIMIT = 8192  # chunks kept per connection: past it, bytes join the last chunk (one time for both)


class Chunk(NamedTuple):
    """Bytes that crossed in one direction (immutable; a named tuple: one is made per read and write)."""

    direction: str  # "C" client to server, "S" server to client
    data: bytes
    encrypted: bool
    time: float = 0.0  # when the bytes crossed (the tap's clock: the lab's clock in a lab)


class End(NamedTuple):
    """A side closing its half of the connection (`FIN`) or resetting it (`RST`), after `after` chunks."""

    direction: str
    kind: str  # "FIN" or "RST"
    time: float
    after: int


@dataclass
class WireTap:
    """The raw bytes of one connection, in both directions, in order, with their times."""

    conn: str
    host: str
    chunks: list[Chunk] = field(default_factory=list)
    encrypted: bool = False
    size: int = 0
    client: tuple[str, int] = ("", 0)
    server: tuple[str, int] = ("", 0)
    transport: str = "tcp"  # "tcp" or "udp" (one DNS question and its answer)
    service: str = ""  # the server's port name: "smtp", "submission", "imap", "dns", ...
    opened: float = 0.0  # when the TCP handshake was done (the server accepted)
    closed: float = 0.0  # when the connection was gone (0: still open)
    ends: list[End] = field(default_factory=list)
    dropped: int = 0  # bytes that crossed after the LIMIT and were not kept
    also: list[str] = field(default_factory=list)  # further trace connection ids (DNS questions over TCP)
    clock: Callable[[], float] = time.time
    _gone: threading.Event | None = field(default=None, init=False, repr=False, compare=False)

    # --- recording ---
    def record(self, direction: str, data: bytes) -> None:
        if not data:
            return
        if self.size >= LIMIT:
            self.dropped += len(data)
            return
        kept = bytes(data[: LIMIT - self.size])
        self.dropped += len(data) - len(kept)
        self.size += len(kept)
        now = self.clock()
        if len(self.chunks) >= CHUNK_LIMIT and self.chunks[-1].direction == direction \
                and self.chunks[-1].encrypted == self.encrypted:
            last = self.chunks.pop()  # a client writing byte by byte must not cost an object per byte
            self.chunks.append(Chunk(direction, last.data + kept, self.encrypted, last.time))
        else:
            self.chunks.append(Chunk(direction, kept, self.encrypted, now))

    def end(self, direction: str, kind: str = "FIN") -> None:
        """Record that `direction`'s side sent FIN (its last byte is out) or RST; only the first of each side."""
        if any(e.direction == direction or e.kind == "RST" for e in self.ends):
            return
        self.ends.append(End(direction, kind, self.clock(), len(self.chunks)))

    def lost(self, error: Exception | None) -> None:
        """The connection is gone; a reset by the peer is the client's RST."""
        if isinstance(error, (ConnectionResetError, BrokenPipeError)):
            self.end("C", "RST")
        with _GONE_LOCK:
            self.closed = self.clock()
            if self._gone is not None:
                self._gone.set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the connection is gone (True), or `timeout` seconds passed (False). From any thread but
        the lab's loop; a UDP tap never closes."""
        with _GONE_LOCK:
            if self.closed:
                return True
            if self._gone is None:
                self._gone = threading.Event()  # made only when someone waits: most taps never need one
            gone = self._gone
        return gone.wait(timeout)

    def name(self, conn: str) -> None:
        """Give the tap the trace connection id `conn` (the first one names it, later ones are kept too)."""
        if not self.conn:
            self.conn = conn
        elif conn != self.conn and conn not in self.also:
            self.also.append(conn)

    @property
    def conns(self) -> tuple[str, ...]:
        """Every trace connection id whose bytes this tap holds."""
        return (self.conn, *self.also) if self.conn else tuple(self.also)

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def attach(self, transport: Any) -> None:
        """Tap a server-side TCP transport: every byte read or written, at the socket, below any TLS.

        Reads go through a `TapProtocol` put in front of the transport's protocol, now and whenever
        the protocol is replaced (STARTTLS puts an SSL protocol there: the tap stays below it); writes,
        closes and aborts are recorded by wrapping the transport's own methods (of this transport only).
        """
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.client, self.server = (peer[0], peer[1]), (sock[0], sock[1])
        self.opened = self.clock()
        self.tap_writes(transport)
        set_protocol, close, abort = transport.set_protocol, transport.close, transport.abort

        def tapped_set_protocol(protocol: Any) -> None:
            if isinstance(protocol, TapProtocol):
                set_protocol(protocol)
                return
            if isinstance(protocol, sslproto.SSLProtocol):  # TLS starts (STARTTLS, STLS, implicit TLS)
                self.encrypted = True
            set_protocol(TapProtocol(protocol, self))

        def tapped_close() -> None:
            self.end("S")
            close()

        def tapped_abort() -> None:
            self.end("S", "RST")
            abort()

        transport.set_protocol = tapped_set_protocol
        tapped_set_protocol(transport.get_protocol())
        transport.close, transport.abort = tapped_close, tapped_abort

    def tap_writes(self, transport: Any) -> None:
        """Record everything written to the raw transport (plain replies, later TLS records)."""
        write = transport.write

        def tapped(data: bytes) -> None:
            self.record("S", data)
            write(data)

        def tapped_lines(list_of_data: Iterable[bytes]) -> None:
            data = b"".join(list_of_data)
            self.record("S", data)
            write(data)

        transport.write = tapped
        transport.writelines = tapped_lines

    # --- reading ---
    def merged(self) -> list[Chunk]:
        """The chunks with consecutive ones of the same direction and encryption joined (times of the first)."""
        out: list[Chunk] = []
        for chunk in list(self.chunks):
            if out and out[-1].direction == chunk.direction and out[-1].encrypted == chunk.encrypted:
                last = out.pop()
                out.append(Chunk(last.direction, last.data + chunk.data, last.encrypted, last.time))
            else:
                out.append(chunk)
        return out

    def render(self, *, hex_bytes: int = 16) -> str:
        """The eavesdropper's view: clear text as lines, TLS as records with their first bytes."""
        lines = []
        for chunk in self.merged():
            if not chunk.encrypted:
                text = chunk.data.decode("latin-1")
                for line in text.replace("\r\n", "\n").rstrip("\n").split("\n"):
                    lines.append(f"{chunk.direction}: {line}")
                continue
            for kind, length, head in tls_records(chunk.data):
                preview = " ".join(f"{b:02x}" for b in head[:hex_bytes])
                lines.append(f"{chunk.direction}: [TLS {kind}, {length} bytes] {preview} ...")
        if self.dropped:
            lines.append(f"... ({self.dropped} more bytes not kept: the tap keeps {LIMIT} per connection)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def tls_records(data: bytes) -> list[tuple[str, int, bytes]]:
    """Split a TLS byte stream into (record type, payload length, first bytes) by the record headers."""
    out = []
    offset = 0
    while offset + 5 <= len(data):
        kind = TLS_TYPES.get(data[offset], f"type {data[offset]}")
        length = int.from_bytes(data[offset + 3: offset + 5], "big")
        out.append((kind, length, data[offset: offset + 5 + min(length, 32)]))
        offset += 5 + length
    if offset < len(data):
        out.append(("fragment", len(data) - offset, data[offset:]))
    return out


class TapProtocol(asyncio.Protocol):
    """Sits between the raw transport and a protocol (plain, or TLS), recording the bytes that arrive."""

    def __init__(self, inner: Any, tap: WireTap) -> None:
        self.inner = inner
        self.tap = tap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.tap.record("C", data)
        feed: Callable[[bytes], None] | None = getattr(self.inner, "data_received", None)
        if not hasattr(self.inner, "get_buffer") and feed is not None:
            feed(data)
            return
        view = memoryview(data)
        while view:  # a BufferedProtocol (Python's SSLProtocol) takes data into its own buffer
            buffer = self.inner.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            self.inner.buffer_updated(n)
            view = view[n:]

    def eof_received(self) -> bool | None:
        self.tap.end("C")
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tap.lost(exc)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class WireStore:
    """The taps a lab keeps: the newest `keep[service]` of each service (others: `default`), thread-safe."""

    def __init__(self, keep: dict[str, int] | None = None, default: int = 200) -> None:
        self._keep = dict(keep or {})
        self._default = default
        self._taps: dict[str, OrderedDict[int, WireTap]] = {}
        self._lock = threading.Lock()

    def add(self, tap: WireTap) -> None:
        with self._lock:
            kept = self._taps.setdefault(tap.service, OrderedDict())
            kept[id(tap)] = tap
            while len(kept) > self._keep.get(tap.service, self._default):
                kept.popitem(last=False)

    def get(self, conn: str) -> WireTap | None:
        for tap in self.taps():
            if conn in tap.conns:
                return tap
        return None

    def taps(self, conns: Iterable[str] | None = None) -> list[WireTap]:
        """The kept taps in the order their connections opened (only those holding one of `conns`)."""
        with self._lock:
            taps = [tap for kept in self._taps.values() for tap in kept.values()]
        if conns is not None:
            wanted = set(conns)
            taps = [tap for tap in taps if wanted.intersection(tap.conns)]
        return sorted(taps, key=lambda tap: tap.opened)


async def start_server(client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any], host: str,
                       port: int, *, ssl_context: ssl.SSLContext | None = None,
                       new_tap: Callable[[], WireTap] | None = None, limit: int = 2 ** 16) -> asyncio.Server:
    """`asyncio.start_server`, with each connection's bytes tapped below TLS, implicit TLS included.

    With `ssl=`, asyncio puts TLS on the socket before any protocol of ours sees it, so a tap could only
    record the plain text. Here the server accepts plain TCP; each connection gets its tap (`new_tap()`,
    which registers it with the lab), then TLS (`ssl_context`: implicit TLS, RFC 8314, e.g. 465, 993,
    995) the way asyncio would put it there, then the stream protocol that calls `client_connected_cb`.
    A STARTTLS later on the connection (`writer.start_tls`) is tapped as well.
    """
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        app = asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)
        if new_tap is None and ssl_context is None:
            return app
        return _Accept(loop, app, ssl_context, new_tap)

    return await loop.create_server(factory, host, port)


class _Accept(asyncio.Protocol):
    """The first protocol of an accepted connection: puts the tap on it, then TLS, then the stream protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: asyncio.BaseProtocol,
                 ssl_context: ssl.SSLContext | None, new_tap: Callable[[], WireTap] | None) -> None:
        self.loop, self.app, self.ssl_context, self.new_tap = loop, app, ssl_context, new_tap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.new_tap is not None:
            self.new_tap().attach(transport)
        protocol: asyncio.BaseProtocol = self.app
        if self.ssl_context is not None:
            waiter = self.loop.create_future()
            # A failed handshake closes the connection; nobody else awaits the waiter, so read its result here.
            waiter.add_done_callback(lambda done: done.cancelled() or done.exception())
            protocol = sslproto.SSLProtocol(self.loop, self.app, self.ssl_context, waiter, server_side=True)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
