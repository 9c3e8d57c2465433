"""What an eavesdropper on the wire sees: the raw bytes of an SMTP connection, before and after STARTTLS.

Before STARTTLS every command, every reply, every base64 password crosses in clear text. After it,
only TLS records cross: a 5-byte header (type, version, length) and bytes that mean nothing without the
session keys. The tap records the real bytes at the TCP transport, below TLS, so this view is not a
simulation: it is what `tcpdump -A` on the loopback interface would print.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WireTap", "Chunk", "TLS_TYPES"]

TLS_TYPES = {20: "change cipher spec", 21: "alert", 22: "handshake", 23: "application data"}
LIMIT = 256 * 1024  # bytes kept per connection


@dataclass(frozen=True)
class Chunk:
    direction: str  # "C" client to server, "S" server to client
    data: bytes
    encrypted: bool


@dataclass
class WireTap:
    """The raw bytes of one connection, in both directions, in order."""

    conn: str
    host: str
    chunks: list[Chunk] = field(default_factory=list)
    encrypted: bool = False
    size: int = 0

    def record(self, direction: str, data: bytes) -> None:
        if self.size >= LIMIT or not data:
            return
        data = bytes(data[: LIMIT - self.size])
        self.size += len(data)
        if self.chunks and self.chunks[-1].direction == direction and self.chunks[-1].encrypted == self.encrypted:
            last = self.chunks.pop()
            self.chunks.append(Chunk(direction, last.data + data, self.encrypted))
        else:
            self.chunks.append(Chunk(direction, data, self.encrypted))

    def tap_writes(self, transport: Any) -> None:
        """Record everything written to the raw transport (plain replies, later TLS records)."""
        write = transport.write

        def tapped(data: bytes) -> None:
            self.record("S", data)
            write(data)

        transport.write = tapped

    def render(self, *, hex_bytes: int = 16) -> str:
        """The eavesdropper's view: clear text as lines, TLS as records with their first bytes."""
        lines = []
        for chunk in self.chunks:
            if not chunk.encrypted:
                text = chunk.data.decode("latin-1")
                for line in text.replace("\r\n", "\n").rstrip("\n").split("\n"):
                    lines.append(f"{chunk.direction}: {line}")
                continue
            for kind, length, head in tls_records(chunk.data):
                preview = " ".join(f"{b:02x}" for b in head[:hex_bytes])
                lines.append(f"{chunk.direction}: [TLS {kind}, {length} bytes] {preview} ...")
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
    """Sits between the raw transport and the TLS protocol, recording the ciphertext that arrives."""

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
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
