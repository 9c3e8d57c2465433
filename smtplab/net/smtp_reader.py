"""What the lab's SMTP server reads, traced line by line (split from `net/smtp.py`).

`TracedReader` is the StreamReader aiosmtpd reads from: each line it hands over is recorded as the server read
it (one parser, so the trace and the server cannot disagree). `ReadTracing` is the side of `LabSMTP` it
reports to: the trace plumbing, where a transaction (its correlation) starts, how a message body, an
over-long line and an unfinished line are kept for the trace, and how an AUTH answer is read whole.
"""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode, b64encode
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import MISSING

from ..i18n import N_, lazy
from ..trace.events import ClientLine, FaultFired, SmtpData, SmtpDataEnd
from ..trace.ring import Trace, enter_correlation
from . import replies
from .faults import Fault

__all__ = ["LineTooLong", "ReadTracing", "TracedReader"]

_BODY_KEPT = 1_000_000  # bytes of a message body the trace keeps


class LineTooLong(ValueError):
    """A client line longer than the server reads (RFC 5321 §4.5.3.1.4-6); raised instead of asyncio's
    ValueError, so the handler can tell it from any other error by its type."""


class TracedReader:
    """The StreamReader aiosmtpd reads from, recording each line as the server reads it (one parser).

    aiosmtpd reads commands with `readuntil()` (up to LF), the message after its 354 with
    `readuntil(b"\\r\\n")`, an AUTH answer with `readline()`, and drains an over-long line with
    `read(n)`. Whatever it read is what the trace shows, so the trace and the server cannot disagree.
    """

    def __init__(self, reader: asyncio.StreamReader, protocol: ReadTracing) -> None:
        self._inner = reader
        self._protocol = protocol

    # aiosmtpd swaps the reader's transport after STARTTLS and clears its buffer (RFC 3207 §4.2).
    @property
    def _transport(self) -> Any:
        return self._inner._transport  # type: ignore[attr-defined]

    @_transport.setter
    def _transport(self, transport: Any) -> None:
        self._inner._transport = transport  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        protocol = self._protocol
        protocol._enter()
        body = separator == b"\r\n"
        if body and protocol._body is None:
            await protocol._body_starts()
        try:
            line = await self._inner.readuntil(separator)
        except asyncio.LimitOverrunError:
            protocol._overrun = True
            raise
        except asyncio.IncompleteReadError as error:
            protocol._unfinished(error.partial, body)
            raise
        if body:
            protocol._body_line(line)
        else:
            protocol._command_line(line)
        return line

    async def readline(self) -> bytes:
        self._protocol._enter()
        try:
            line = await self._inner.readline()  # an AUTH answer (RFC 4954 §4)
        except ValueError as error:  # longer than the reader's limit: asyncio discarded it
            text = "<an answer longer than the line limit>"
            self._protocol._record("line", text, "C", payload=ClientLine(text, complete=False))
            raise LineTooLong(str(error)) from error
        if line:
            self._protocol._record("line", _show(line), "C", payload=ClientLine(_show(line), line.endswith(b"\n")))
        return line

    async def read(self, n: int = -1) -> bytes:
        data = await self._inner.read(n)
        return self._protocol._drained(data)


class ReadTracing:
    """`LabSMTP`'s side of the traced reader: what it records of the lines the server read.

    A mixin of `LabSMTP`, which sets these attributes in its `__init__` and `connection_made`."""

    _trace: Trace
    _host_name: str
    _client: str
    _fields: dict[str, str]
    _encrypted: bool
    _faults: Callable[[str, str, str], Fault | None] | None
    corr: str
    _parent: str
    _ctx_corr: str
    _txn_done: bool
    _after_dot: bool
    _body: list[bytes] | None
    _body_size: int
    _body_lines: int
    _overrun: bool
    _long: bytearray | None
    _long_size: int
    _reader: Any
    transport: Any
    push: Callable[[Any], Awaitable[None]]

    # --- trace plumbing ---
    def _record(self, kind: str, text: str, direction: str = "", *, payload: object = None, **extra: Any) -> int:
        event = self._trace.record(
            "smtp", kind, self._host_name, text, payload=payload, corr=self.corr, direction=direction,
            tls=self._encrypted, **self._fields, **extra,
        )
        return event.seq

    def _enter(self) -> None:
        """Make this connection's work the handler task's current work (its DNS questions inherit it)."""
        if self._ctx_corr != self.corr:
            self._ctx_corr = self.corr
            enter_correlation(self._trace, self.corr)

    # --- an AUTH answer (aiosmtpd's SMTP.challenge_auth, overridden) ---
    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> Any:
        """Send a 334 challenge and read the client's answer (RFC 4954 section 4), the whole line whatever its size.

        aiosmtpd reads the answer with StreamReader.readline(), which, when a line outgrows the reader's
        buffer, throws away what it holds and raises: the rest of the line then arrived as a "command" and
        got a reply of its own, so every later reply answered the wrong command.
        """
        data = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (b64encode(data) if encode_to_b64 else data))
        line = await self._read_whole_line()
        if line is None:
            await self.push(replies.AUTH_LINE_TOO_LONG)
            return MISSING
        blob = line.strip()
        if blob == b"*":  # RFC 4954 section 4: the client cancels the exchange
            await self.push("501 5.7.0 Auth aborted")
            return MISSING
        try:
            return b64decode(blob, validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return MISSING

    async def _read_whole_line(self) -> bytes | None:
        """Read up to the next LF; None when the line was longer than the reader's limit (all of it is consumed)."""
        too_long = False
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as error:
                await self._reader.read(error.consumed)  # drain what is buffered (traced), read on to the line end
                too_long = True
                continue
            return None if too_long else line

    # --- what the reader saw (called by TracedReader) ---
    def _command_line(self, line: bytes) -> None:
        if self._long is not None:  # the end of an over-long line aiosmtpd drained: it answers 500
            size = self._long_size + len(line)
            head = _show(bytes(self._long))
            self._long, self._long_size, self._overrun = None, 0, False
            self._record("line", lazy(N_("{line}... ({size} bytes: longer than a command line may be)"), line=head, size=size),
                         "C",
                         payload=ClientLine(head, complete=False))
            return
        verb = line[:5].rstrip(b"\r\n").upper()
        if verb.startswith(b"MAIL") and verb[4:5] in (b"", b" "):
            self._transaction_starts()
        self._record("line", _show(line), "C")

    def _transaction_starts(self) -> None:
        """A MAIL command: a new unit of work when the last one finished or the client announced another."""
        announced = self._trace.claim(("conn", self._client))
        if announced and not self._parent and not self._txn_done:  # the first transaction owns the greeting
            self._parent = announced
            self._trace.link(announced, self.corr)
        elif self._txn_done or (announced and announced != self._parent):
            self._parent = announced or ""
            self.corr = self._trace.new_correlation("smtp", self._parent)
            self._txn_done = False
            self._enter()

    async def _body_starts(self) -> None:
        self._body, self._body_size, self._body_lines, self._overrun = [], 0, 0, False
        fault = self._faults(self._host_name, "body", "") if self._faults else None
        if fault is not None and fault.drop and self.transport is not None:
            self._record("fault", lazy(N_("injected fault fires: {fault}"), fault=fault.describe()),
                     payload=FaultFired(fault.describe()))
            self.transport.abort()  # type: ignore[attr-defined]  # hang up in the middle of the message
            raise asyncio.CancelledError

    def _body_line(self, line: bytes) -> None:
        if line == b".\r\n" and not self._overrun:  # the lone dot (RFC 5321 §4.5.2)
            self._flush_body()
            self._record("line", ".", "C", payload=SmtpDataEnd())
            self._after_dot = True
            return
        self._overrun = False
        self._keep(line)
        self._body_lines += 1

    def _keep(self, data: bytes) -> None:
        """Remember message bytes for the trace (the first megabyte; the rest is only counted)."""
        assert self._body is not None
        room = _BODY_KEPT - min(self._body_size, _BODY_KEPT)
        if room > 0 and data:
            self._body.append(data[:room])
        self._body_size += len(data)

    def _drained(self, data: bytes) -> bytes:
        """aiosmtpd drains a line longer than the reader's limit; keep the unfinished line bounded."""
        if self._body is not None:  # in DATA: aiosmtpd answers 500 at the dot whatever the line held
            self._keep(data)
            # Its own buffer of the unfinished line would grow with the line (issue: 128 MB without CRLF
            # held 128 MB): the line is over the limit already, so it needs none of these bytes.
            return b""
        if self._long is None:
            self._long = bytearray()
        if len(self._long) < 200:
            self._long += data[: 200 - len(self._long)]
        self._long_size += len(data)
        return data

    def _unfinished(self, partial: bytes, body: bool) -> None:
        """The client's input ended in the middle of a line (or of a message)."""
        if body and self._body is not None:
            if partial:
                self._keep(partial)
            self._flush_body(closed=True)
        elif partial:
            text = _show(partial)
            self._record("line", lazy(N_("{line}  (no line end: connection closed)"), line=text), "C",
                         payload=ClientLine(text, complete=False))

    def _flush_body(self, *, closed: bool = False) -> None:
        kept = b"".join(self._body or ())
        text = kept.decode("utf-8", "replace").replace("\r\n", "\n")
        if text.endswith("\n"):
            text = text[:-1]
        if self._body_size > len(kept):
            text += f"\n... ({self._body_size - len(kept)} more bytes not kept in the trace)"
        if closed:
            text += "\n... (the connection closed before the final dot)"
        self._record("data", text, "C", payload=SmtpData(self._body_size, self._body_lines, len(kept)))
        self._body = None


def _show(line: bytes) -> str:
    """Render one received line; stray CR or LF are made visible (they matter for smuggling)."""
    body = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
    text = body.decode("utf-8", "replace")
    text = text.replace("\r", "<CR>").replace("\n", "<LF>")
    if line.endswith(b"\n") and not line.endswith(b"\r\n"):
        text += "<LF>"
    return text
