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
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from . import replies
from .faults import Fault
from .trace import Trace

__all__ = ["LabSMTP", "SubmissionHandler", "InboundHandler", "new_queue_id", "Postmaster"]

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
    def deliver_local(self, domain: str, address: str, content: bytes) -> None: ...
    async def store_local(self, domain: str, address: str, content: bytes) -> None: ...
    def enqueue(self, host: str, sender: str, recipients: list[str], content: bytes, queue_id: str) -> None: ...
    async def enqueue_async(self, host: str, sender: str, recipients: list[str], content: bytes,
                            queue_id: str) -> None: ...
    def fault_for(self, host: str, stage: str, recipient: str = "") -> Fault | None: ...


class LabSMTP(SMTP):
    """aiosmtpd's SMTP protocol that records every line to the lab trace and adds enhanced codes."""

    # RFC 5321 section 4.5.3.1.6: a text line is at most 1000 octets with its CRLF (aiosmtpd allows 1001).
    line_length_limit = 1000

    def __init__(
        self, handler: Any, *, trace: Trace, host_name: str, port_name: str,
        peer_name: Callable[[str], str], faults: Callable[[str, str, str], Fault | None] | None = None,
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
        line = _UNPRINTABLE.sub("?", replies.enhance(line))
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
        await super().smtp_STARTTLS(arg)

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


def _received(server: LabSMTP, session: Session, queue_id: str, recipients: list[str], now: float,
              peer_name: str) -> bytes:
    """Build the RFC 5321 §4.4 trace header, with the RFC 3848 protocol keyword."""
    helo = session.host_name or "unknown"
    address = session.peer[0] if session.peer else "unknown"
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    if session.ssl is not None:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    reverse = peer_name if peer_name and peer_name != "client" else "unknown"
    rcpt = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    value = (
        f"from {helo} ({reverse} [{address}])\r\n\tby {server.hostname} (smtplab) with {protocol} id {queue_id}"
        f"{rcpt}; {format_datetime(_aware(now))}"
    )
    return f"Received: {value}\r\n".encode()


def _aware(ts: float) -> Any:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).astimezone()


def _ehlo_responses(server: LabSMTP, responses: list[str]) -> list[str]:
    server.command_size_limits["MAIL"] = 510 + (26 if server.data_size_limit else 0)
    # aiosmtpd advertises "AUTH" even with every mechanism excluded (an MX offers none).
    kept = [r for r in responses[:-1] if r.strip() != "250-AUTH"]
    out = kept + ["250-ENHANCEDSTATUSCODES", "250-PIPELINING"]
    return out + [responses[-1]]


class _BaseHandler:
    def __init__(self, lab: Postmaster, host_name: str, domains: tuple[str, ...]) -> None:
        self.lab = lab
        self.host_name = host_name
        self.domains = domains

    async def handle_EHLO(self, server: LabSMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        if _CONTROL.search(hostname):  # it would end up in the Received header
            session.extended_smtp = False
            return [replies.BAD_HELLO.format(command="EHLO")]
        session.host_name = hostname
        fault = await server.fault_point("EHLO")
        if fault:
            return [fault]
        return _ehlo_responses(server, responses)

    async def handle_HELO(self, server: LabSMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        if _CONTROL.search(hostname):
            return replies.BAD_HELLO.format(command="HELO")
        session.host_name = hostname
        fault = await server.fault_point("EHLO")
        return fault or f"250 {server.hostname}"

    async def handle_exception(self, error: Exception) -> str:
        # Answer with a proper reply instead of a traceback on stderr; the trace shows it.
        if type(error).__name__ == "TLSSetupException":
            return "454 4.7.0 TLS handshake failed"
        if isinstance(error, ValueError) and "limit" in str(error):  # asyncio's line limit, e.g. an AUTH answer
            return replies.LINE_TOO_LONG
        text = f"{type(error).__name__}: {error}".encode("ascii", "replace").decode()
        return f"451 4.3.0 Local error in processing ({text})"

    async def handle_NOOP(self, server: LabSMTP, session: Session, envelope: Envelope, arg: str) -> str:
        return replies.OK

    def _bad_content(self, envelope: Envelope) -> str | None:
        """Return the refusal for content no MTA should pass on (bare CR/LF, NUL), or None."""
        content = envelope.original_content or b""
        rest = content.replace(b"\r\n", b"")  # what is left of a line end is a bare CR or LF
        if b"\r" in rest or b"\n" in rest:
            return replies.BARE_LF
        if b"\0" in content:
            return replies.NUL_IN_DATA
        return None


class SubmissionHandler(_BaseHandler):
    """MSA: authenticated users send as themselves; everything is queued for the relay."""

    def authenticator(self, server: LabSMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace").strip().lower()
        password = auth_data.password.decode("utf-8", "replace")
        domain = login.rpartition("@")[2]
        if domain in self.domains and self.lab.check_password(login, password):
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        fault = await server.fault_point("MAIL")
        if fault:
            return fault
        user = str(session.auth_data or "")
        if address in ("<>", ""):
            return replies.NULL_SENDER_SUBMISSION
        if address.lower() != user:
            return replies.SENDER_NOT_OWNED.format(user=user)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        _start_transaction(server)
        return replies.OK_SENDER

    async def handle_RCPT(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        fault = await server.fault_point("RCPT", address)
        if fault:
            return fault
        local, domain = _split_address(address)
        if not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
            return replies.BAD_DESTINATION
        if domain.startswith("["):
            # RFC 5321 section 4.1.3: mail to an address literal goes straight to that IP address,
            # and the lab never connects off the machine; only names in the lab DNS are routed.
            return replies.ADDRESS_LITERAL
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS
        domain = domain.lower()
        if domain in self.domains and not self.lab.user_exists(address):
            return replies.USER_UNKNOWN.format(address=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RECIPIENT

    async def handle_DATA(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        fault = await server.fault_point("end-of-data")
        if fault:
            return fault
        refusal = self._bad_content(envelope)
        if refusal:
            return refusal
        queue_id = new_queue_id()
        content = _complete_headers(envelope.original_content or b"", self.lab.now(), self.host_name)
        recipients = _unique(envelope.rcpt_tos)
        header = _received(server, session, queue_id, recipients, self.lab.now(),
                           self.lab.peer_name(session.peer[0]))
        content = header + content
        # Written to the spool before the 250 (RFC 5321 section 6.1), from a disk thread.
        await self.lab.enqueue_async(self.host_name, envelope.mail_from or "", recipients, content, queue_id)
        _link_transaction(server, queue_id, content)
        return replies.OK_QUEUED.format(queue_id=queue_id)


class InboundHandler(_BaseHandler):
    """MX: accept mail for this provider's users only, deliver into their Maildirs."""

    async def handle_MAIL(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        fault = await server.fault_point("MAIL")
        if fault:
            return fault
        # Keep "<>" as is: aiosmtpd treats an empty mail_from as "no MAIL yet" (503 at RCPT).
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        _start_transaction(server)
        return replies.OK_SENDER

    async def handle_RCPT(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        fault = await server.fault_point("RCPT", address)
        if fault:
            return fault
        local, domain = _split_address(address)
        if not local or not domain:
            return replies.BAD_DESTINATION
        if domain.lower() not in self.domains:
            return replies.RELAY_DENIED.format(domain=domain)
        if not self.lab.user_exists(address):
            return replies.USER_UNKNOWN.format(address=address)
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RECIPIENT

    async def handle_DATA(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        fault = await server.fault_point("end-of-data")
        if fault:
            return fault
        refusal = self._bad_content(envelope)
        if refusal:
            return refusal
        queue_id = new_queue_id()
        recipients = _unique(envelope.rcpt_tos)
        received = _received(server, session, queue_id, recipients, self.lab.now(),
                             self.lab.peer_name(session.peer[0]))
        content = received + (envelope.original_content or b"")
        sender = "" if envelope.mail_from in ("<>", None) else envelope.mail_from
        return_path = f"Return-Path: <{sender}>\r\n".encode()  # RFC 5321 section 4.4
        for rcpt in recipients:
            # The 250 goes out only once the message is safely on disk (RFC 5321 section 6.1).
            await self.lab.store_local(rcpt.rpartition("@")[2].lower(), rcpt, return_path + content)
        _link_transaction(server, queue_id, content)
        return replies.OK_DELIVERED.format(queue_id=queue_id)


def _split_address(address: str) -> tuple[str, str]:
    """Split a mailbox into local part and domain ("" when there is none).

    A quoted local part may hold an @ itself (RFC 5321 section 4.1.2): "user@elsewhere"@example.net is
    a mailbox at example.net, and "user@elsewhere" alone has no domain at all.
    """
    local, at, domain = address.rpartition("@")
    if not at or '"' in domain:
        return address, ""
    return local, domain


def _unique(addresses: list[str]) -> list[str]:
    """Drop repeated recipients (compared without case): one copy per mailbox, as Postfix's cleanup does."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def _start_transaction(server: LabSMTP) -> None:
    # The first transaction of a connection owns its greeting, EHLO and STARTTLS too.
    server.txn_first_seq = server.conn_first_seq if server.txn_count == 0 else server._trace.last_seq
    server.txn_count += 1


def _link_transaction(server: LabSMTP, queue_id: str, content: bytes) -> None:
    """Tie this transaction's trace span to the queue id and the Message-ID."""
    first = server.txn_first_seq or 1
    last = server._trace.last_seq + 1  # include the 250 reply about to be pushed
    server._trace.link(queue_id, server.conn_id, first, last)
    message_id = _header(content, b"message-id")
    if message_id:
        server._trace.link(message_id, server.conn_id, first, last)


def _header(content: bytes, name: bytes) -> str:
    head = content.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("utf-8", "replace")
    return ""


def _complete_headers(content: bytes, now: float, host_name: str) -> bytes:
    """Add Date and Message-ID when the client left them out (RFC 6409 §8.2-8.3)."""
    extra = b""
    if not _header(content, b"date"):
        extra += f"Date: {format_datetime(_aware(now))}\r\n".encode()
    if not _header(content, b"message-id"):
        extra += f"Message-ID: {make_msgid(domain=host_name)}\r\n".encode()
    return extra + content
