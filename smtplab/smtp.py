"""The lab's SMTP servers: aiosmtpd with a traced protocol and two handlers.

`SubmissionHandler` is the MSA (RFC 6409): STARTTLS, then AUTH, then only the user's own address as
sender; accepted mail goes to the relay queue. `InboundHandler` is an MX: it accepts mail for its
provider's users only and delivers into their Maildirs. Both refuse bare LF / CR in DATA.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from asyncio import sslproto

from aiosmtpd.smtp import SMTP, TLSSetupException, syntax

from . import replies
from .faults import Fault
from .trace import Trace
from .wire import TapProtocol, WireTap

__all__ = ["LabSMTP", "new_queue_id", "Postmaster"]

# aiosmtpd logs a deprecation notice about `login_data` on every AUTH; the lab's trace is the log.
logging.getLogger("mail.log").setLevel(logging.ERROR)

MAX_RECIPIENTS = 100  # RFC 5321 §4.5.3.1.8: at least 100 must be accepted
DATA_SIZE_LIMIT = 10 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_ENHANCED = re.compile(r"([245])\d\d[ -]\1\.\d{1,3}\.\d{1,3}(?: |$)")  # "250 2.1.0 ..." (RFC 3463)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*([^()]*)\Z")
_TRACE_LINE_CAP = 8192


_ids = random.Random(secrets.randbits(64))  # queue ids need to differ, not to be secret


def new_queue_id() -> str:
    """Return a short queue id like Postfix's (hex, upper case)."""
    return f"{_ids.getrandbits(40):010X}"


class Postmaster(Protocol):
    """What the handlers need from the lab (implemented by Lab)."""

    def now(self) -> float: ...
    def check_password(self, address: str, password: str) -> bool: ...
    def user_exists(self, address: str) -> bool: ...
    def peer_name(self, address: str) -> str: ...
    async def store_local(self, recipients: list[str], content: bytes, folder: str = "INBOX") -> None: ...
    def enqueue(self, host: str, sender: str, recipients: list[str], content: bytes, queue_id: str) -> None: ...
    async def enqueue_async(self, host: str, sender: str, recipients: list[str], content: bytes,
                            queue_id: str) -> None: ...
    def fault_for(self, host: str, stage: str, recipient: str = "") -> Fault | None: ...
    async def keys_ready(self) -> None: ...


class LabSMTP(SMTP):
    """aiosmtpd's SMTP protocol that records every line to the lab trace and adds enhanced codes."""

    # RFC 5321 section 4.5.3.1.6: a text line is at most 1000 octets with its CRLF (aiosmtpd allows 1001).
    line_length_limit = 1000

    def __init__(
        self, handler: Any, *, trace: Trace, host_name: str, port_name: str,
        peer_name: Callable[[str], str], faults: Callable[[str, str, str], Fault | None] | None = None,
        wiretap: Callable[[WireTap], None] | None = None, note: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, hostname=host_name, ident="ESMTP smtplab", **kwargs)
        # Instance copy: aiosmtpd's class-level dict grows on every EHLO otherwise.
        # 510 + CRLF = 512 octets, the RFC 5321 §4.5.3.1.4 command line limit.
        self.command_size_limits = collections.defaultdict(lambda: 510)
        self.command_size_limit = 510
        self._trace = trace
        self._host_name = host_name
        self._port_name = port_name
        self._peer_name = peer_name
        self._conn = ""
        self._fields: dict[str, str] = {}
        self._inbuf = b""
        self._in_data = False
        self._data_lines: list[bytes] = []
        self._data_bytes = 0
        self._encrypted = False
        self._faults = faults
        self._wiretap = wiretap
        self._note = note  # said in the trace when a client connects (e.g. a teaching toggle)
        self.tap: WireTap | None = None
        self._tls_started = False
        self._greeted = False
        self._body_checked = False
        self._hello = False  # answering EHLO/HELO: those replies carry no enhanced code (RFC 2034)
        self.txn_first_seq = 0  # first trace seq of the current mail transaction
        self.conn_first_seq = 0
        self.txn_count = 0
        self.handler = handler

    # --- trace plumbing ---
    def _record(self, kind: str, text: str, direction: str = "", **extra: Any) -> int:
        event = self._trace.record(
            "smtp", kind, self._host_name, text, direction=direction, tls=self._encrypted,
            **self._fields, **extra,
        )
        return event.seq

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting_tls = self._original_transport is not None
        if not starting_tls:
            peer = transport.get_extra_info("peername") or ("?", 0)
            sock = transport.get_extra_info("sockname") or ("?", 0)
            self._conn = self._trace.new_conn_id("smtp")
            self._fields = dict(
                conn=self._conn, client=f"{peer[0]}:{peer[1]}", server=f"{sock[0]}:{sock[1]}",
                peer=self._peer_name(peer[0]), port_name=self._port_name,
            )
            self.conn_first_seq = self._record("connect", f"connection from {peer[0]}:{peer[1]}")
            if self._note:
                self._record("state", self._note)
            if self._wiretap is not None:
                self.tap = WireTap(self._conn, self._host_name)
                self.tap.tap_writes(transport)
                self._wiretap(self.tap)
        super().connection_made(transport)
        if starting_tls:
            self._encrypted = True
            self._inbuf = b""
            cipher = transport.get_extra_info("cipher")
            version = cipher[1] if cipher else "TLS"
            self._record("tls", f"{version} handshake done: the wire is encrypted from here")

    def connection_lost(self, error: Exception | None) -> None:
        if self._conn:
            if self._inbuf:
                self._record("line", _show(self._inbuf) + "  (no line end: connection closed)", "C")
                self._inbuf = b""
            # A reset right after QUIT is normal (clients drop TLS without close_notify): not news.
            quiet = error is None or isinstance(error, ConnectionResetError)
            self._record("close", "connection closed" + ("" if quiet else f" ({error})"))
            self._conn = ""
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self.tap is not None and not self._tls_started:
            self.tap.record("C", data)  # before STARTTLS the wire carries exactly these bytes
        self._inbuf += data
        while self._conn:
            if self._in_data:
                if not self._body_checked:
                    self._body_checked = True
                    fault = self._faults(self._host_name, "body", "") if self._faults else None
                    if fault is not None and fault.drop and self.transport is not None:
                        self._record("fault", f"injected fault fires: {fault.describe()}")
                        self.transport.abort()  # hang up in the middle of the message
                        self._inbuf = b""
                        return
                # Whole lines at a time, up to the lone dot (a line that is just ".", RFC 5321 4.5.2).
                buffer = self._inbuf
                if buffer.startswith(b".\r\n"):  # the buffer always starts at a line start here
                    end = 0
                else:
                    end = buffer.find(b"\r\n.\r\n") + 2  # 1 when there is no end yet
                if end == 1:
                    end = buffer.rfind(b"\r\n") + 2  # keep the complete lines, wait for the rest
                    if end < 2:
                        break
                    self._keep_data(buffer[:end])
                    self._inbuf = buffer[end:]
                    break
                self._keep_data(buffer[:end])
                self._inbuf = buffer[end + 3:]
                self._flush_data()
                self._record("line", ".", "C")
                self._in_data = False
                continue
            index = self._inbuf.find(b"\n")
            if index < 0:
                if len(self._inbuf) > _TRACE_LINE_CAP:
                    self._record("line", _show(self._inbuf[:200]) + f"... ({len(self._inbuf)} bytes, no line end yet)", "C")
                    self._inbuf = b""
                break
            line, self._inbuf = self._inbuf[: index + 1], self._inbuf[index + 1:]
            self._record("line", _show(line), "C")
        super().data_received(data)

    def _keep_data(self, lines: bytes) -> None:
        """Remember message lines for the trace (the first megabyte; the rest is only counted)."""
        room = 1_000_000 - (self._data_bytes if self._data_bytes < 1_000_000 else 1_000_000)
        if room > 0 and lines:
            self._data_lines.append(lines[:room])
        self._data_bytes += len(lines)

    def _flush_data(self) -> None:
        body = b"".join(self._data_lines)
        text = body.decode("utf-8", "replace")
        if self._data_bytes > len(body):
            text += f"\n... ({self._data_bytes - len(body)} more bytes not kept in the trace)"
        self._record("data", text.replace("\r\n", "\n").rstrip("\n"), "C", )
        self._data_lines = []
        self._data_bytes = 0

    async def push(self, status: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the connection was dropped (e.g. an injected fault): nobody to answer
        line = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        # Replies echo client input (commands, addresses): never send control characters or 8-bit back.
        line = replies.enhance(line)
        if not (line.isascii() and line.isprintable()):
            line = _UNPRINTABLE.sub("?", line)
        if line.startswith("502 5.5.1 Too many unrecognized commands"):
            line = replies.TOO_MANY_BOGUS  # RFC 5321 section 3.8: only a 421 may close the channel
        elif self._greeted and not self._hello and line[3:4] == " " and line[:1] in "245" \
                and not _ENHANCED.match(line):
            line = f"{line[:4]}{line[0]}.0.0 {line[4:]}"  # RFC 2034: every other reply has one
        if not self._greeted:
            self._greeted = True
            fault = await self.fault_point("connect")
            if self.transport is None or self.transport.is_closing():
                return
            if fault:  # refuse service at connect time (RFC 5321 section 3.1: 554 or 421)
                self._record("line", fault, "S")
                await super().push(fault)
                self.transport.close()
                return
        self._record("line", line, "S")
        if line.startswith("421"):
            # RFC 5321 section 3.8: 421 means the server closes the channel right after saying so.
            await super().push(line)
            if self.transport is not None:
                self.transport.close()
            return
        if line.startswith("354"):
            self._in_data = True
            self._body_checked = False
            self._data_lines = []
            self._data_bytes = 0
        await super().push(line)

    async def fault_point(self, stage: str, recipient: str = "") -> str | None:
        """Apply an injected fault at `stage`: stall, hang up, or return the reply to give instead."""
        fault = self._faults(self._host_name, stage, recipient) if self._faults else None
        if fault is None:
            return None
        self._record("fault", f"injected fault fires: {fault.describe()}")
        if fault.delay:
            await asyncio.sleep(fault.delay)  # a slow server is the fault being shown
        if fault.drop:
            if self.transport is not None:
                self.transport.abort()
            # Returned so the caller stops here (nothing delivered); push() sends nothing on a dead line.
            return "421 4.4.2 Connection dropped (injected fault)"
        return fault.reply or None

    # Overrides keep aiosmtpd's @syntax, or HELP would stop listing the command.
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._hello = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._hello = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._hello = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._hello = False

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None and not arg:
            await self.push(replies.TLS_ALREADY_ACTIVE)  # aiosmtpd would start a second TLS layer
            return
        if self.tap is None or arg or not self.tls_context:
            await super().smtp_STARTTLS(arg)
            return
        # aiosmtpd 1.4.6's STARTTLS, with a tap between the TCP transport and TLS so the lab can show
        # the ciphertext an eavesdropper would see.
        await self.push("220 2.0.0 Ready to start TLS")
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(self.loop, self, self.tls_context, waiter, server_side=True)
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._tls_started = True
        self.tap.encrypted = True
        self._original_transport.set_protocol(TapProtocol(self._tls_protocol, self.tap))
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # An unclosed "<" or a control character is a malformed address, not something to repair.
        if arg and (_CONTROL.search(arg) or (arg.lstrip().startswith("<") and ">" not in arg)):
            return None, None
        # The plain <local@domain> of nearly every command skips the e-mail header parser, which
        # costs more than the rest of a MAIL or RCPT; anything unusual still goes through it.
        simple = _SIMPLE_PATH.match(arg) if arg else None
        if simple is not None:
            return simple[1], simple[2]
        return super()._getaddr(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope is not None and self.envelope.rcpt_tos and not arg:
            fault = await self.fault_point("DATA")
            if self.transport is None or self.transport.is_closing():
                return
            if fault:
                await self.push(fault)
                return
        await super().smtp_DATA(arg)

    def _timeout_cb(self) -> None:
        # RFC 5321 section 4.5.3.2: a server may close an idle session, and should say so with 421.
        if self.transport is not None and not self.transport.is_closing():
            line = replies.TIMEOUT.format(host=self._host_name)
            self._record("line", line, "S")
            self.transport.write(line.encode() + b"\r\n")
        super()._timeout_cb()

    def eof_received(self) -> bool | None:
        # A pipelining client (nc, swaks --pipe) may close its sending side right after its last
        # command. aiosmtpd would drop every command still waiting behind a slow one (a DNS lookup);
        # a real server answers them all (RFC 2920), then closes. So: no cancel here, just end of input.
        asyncio.StreamReaderProtocol.eof_received(self)
        # Over TLS a half-close means nothing (asyncio warns on True); on plain TCP keep the write side.
        return self._tls_protocol is None

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, asyncio.IncompleteReadError):  # the client's input ended: the session is over
            if self.transport is not None:
                self.transport.close()
            raise asyncio.CancelledError
        return await super().handle_exception(error)

    def note(self, text: str) -> None:
        """Write what the server decided (policy, signing) into the trace, beside the protocol lines."""
        self._record("state", text)

    @property
    def conn_id(self) -> str:
        return self._conn


def _show(line: bytes) -> str:
    """Render one received line; stray CR or LF are made visible (they matter for smuggling)."""
    body = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
    text = body.decode("utf-8", "replace")
    text = text.replace("\r", "<CR>").replace("\n", "<LF>")
    if line.endswith(b"\n") and not line.endswith(b"\r\n"):
        text += "<LF>"
    return text
