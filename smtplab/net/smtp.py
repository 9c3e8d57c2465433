"""The lab's SMTP server protocol: aiosmtpd's `SMTP`, traced line by line as the server reads it.

`LabSMTP` records every line both ways (one parser: the reader aiosmtpd reads from is wrapped), adds
enhanced status codes, fires injected faults and taps the raw bytes for `lab.wire`. What the server decides
about mail is in its handler (smtplab/mail/handlers.py: the submission MSA and the inbound MX). The reader it
wraps, and what it records of the lines read, are in `net/smtp_reader.py`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import secrets
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from ..i18n import N_, lazy
from ..trace.events import Close, Connect, FaultFired, Note, ServerError, TlsStarted
from ..trace.ring import Trace
from . import replies
from .dsn_parameters import DSN_KEYWORDS
from .faults import Fault
from .smtp_reader import LineTooLong, ReadTracing, TracedReader
from .wire import WireTap

__all__ = ["LabSMTP", "LineTooLong", "new_queue_id"]

# aiosmtpd logs a deprecation notice about `login_data` on every AUTH; the lab's trace is the log.
logging.getLogger("mail.log").setLevel(logging.ERROR)

MAX_RECIPIENTS = 100  # RFC 5321 §4.5.3.1.8: at least 100 must be accepted
DATA_SIZE_LIMIT = 10 * 1024 * 1024
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")  # no argument or EHLO name may hold one
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_ENHANCED = re.compile(r"([245])\d\d[ -]\1\.\d{1,3}\.\d{1,3}(?: |$)")  # "250 2.1.0 ..." (RFC 3463)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*([^()]*)\Z")
_FEED_CHUNK = 32 * 1024  # bytes aiosmtpd's reader gets per turn of the loop (see LabSMTP._feed)


_ids = random.Random(secrets.randbits(64))  # queue ids need to differ, not to be secret


def new_queue_id() -> str:
    """Return a short queue id like Postfix's (hex, upper case)."""
    return f"{_ids.getrandbits(40):010X}"


class LabSMTP(ReadTracing, SMTP):
    """aiosmtpd's SMTP protocol that records every line to the lab trace and adds enhanced codes."""

    # RFC 5321 section 4.5.3.1.6: a text line is at most 1000 octets with its CRLF (aiosmtpd allows 1001).
    line_length_limit = 1000
    # The prompts every LOGIN client expects (draft-murchison-sasl-login): "334 VXNlcm5hbWU6" and
    # "334 UGFzc3dvcmQ6"; aiosmtpd's own end in a NUL ("User Name\0"), which some clients print.
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(
        self, handler: Any, *, trace: Trace, host_name: str, port_name: str,
        peer_name: Callable[[str], str], faults: Callable[[str, str, str], Fault | None] | None = None,
        wiretap: Callable[[WireTap], None] | None = None, note: str = "",
        **kwargs: Any,
    ) -> None:
        # RFC 6531: every lab server takes internationalized addresses (josé@ejemplo.es) when asked with SMTPUTF8.
        kwargs.setdefault("enable_SMTPUTF8", True)
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
        self._client = ""
        self._fields: dict[str, str] = {}
        self._encrypted = False
        self._faults = faults
        self._wiretap = wiretap
        self._note = note  # said in the trace when a client connects (e.g. a teaching toggle)
        self.tap: WireTap | None = None
        self._greeted = False
        self._hello = False  # answering EHLO/HELO: those replies carry no enhanced code (RFC 2034)
        # Correlation: the unit of work the connection is doing now (its first transaction owns the
        # greeting and EHLO; a new one starts at a MAIL after a finished transaction, or when the lab
        # client on the other end announced other work), and the work it was announced for.
        self.corr = ""
        self._parent = ""
        self._ctx_corr = ""
        self._txn_done = False
        self._after_dot = False
        # What the server reads of a message body: kept for the trace up to a megabyte, counted beyond.
        self._body: list[bytes] | None = None
        self._body_size = 0
        self._body_lines = 0
        self._overrun = False  # the reader hit the line limit: the rest of that line is drained
        self._long: bytearray | None = None  # the start of an over-long command line, while drained
        self._long_size = 0
        self.command_params: list[str] = []  # the parameters of the last MAIL/RCPT, in the client's case
        self._backlog: collections.deque[bytes] = collections.deque()  # received, not yet given to the reader
        self._feeding = False
        self._eof_waiting = False
        self.handler = handler

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        self._reader = TracedReader(reader, self)  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting_tls = self._original_transport is not None
        if not starting_tls:
            peer = transport.get_extra_info("peername") or ("?", 0)
            sock = transport.get_extra_info("sockname") or ("?", 0)
            self._conn = self._trace.new_conn_id("smtp")
            self._client = f"{peer[0]}:{peer[1]}"
            self._fields = dict(
                conn=self._conn, client=self._client, server=f"{sock[0]}:{sock[1]}",
                peer=self._peer_name(peer[0]), port_name=self._port_name,
            )
            # A lab client (the relay) announced what this connection is for before connecting.
            self._parent = self._trace.claim(("conn", self._client))
            self.corr = self._trace.new_correlation("smtp", self._parent)
            self._record("connect", lazy(N_("connection from {client}"), client=f"{peer[0]}:{peer[1]}"),
                         payload=Connect(self._client, self._fields["server"]))
            if self._note:
                self._record("state", self._note, payload=Note(warning=True))
            implicit = transport.get_extra_info("ssl_object")
            if implicit is not None:  # "submissions" (RFC 8314): the server was created with ssl=
                self._encrypted = True
                cipher = implicit.cipher()
                self._record("tls", lazy(N_("{version} handshake done (implicit TLS, RFC 8314): the wire is "
                                       "encrypted from here"), version=implicit.version()),
                             payload=TlsStarted(implicit.version() or "TLS", cipher[0] if cipher else ""))
            elif self._wiretap is not None:  # (under implicit TLS this transport carries clear text: no tap)
                self.tap = WireTap(self._conn, self._host_name, service=self._port_name)
                self._wiretap(self.tap)
                self.tap.attach(transport)  # below TLS: reads, writes and the close, as on the wire
        if starting_tls:  # nothing sent before the handshake may be read after it (RFC 3207 section 4.2)
            self._backlog.clear()
        super().connection_made(transport)
        if not starting_tls and self._encrypted and self.session is not None:
            self.session.ssl = transport.get_extra_info("ssl_object")  # Received: says ESMTPSA (RFC 3848)
        if starting_tls:
            self._encrypted = True
            cipher = transport.get_extra_info("cipher")
            version = cipher[1] if cipher else "TLS"
            self._record("tls", lazy(N_("{version} handshake done: the wire is encrypted from here"), version=version),
                         payload=TlsStarted(version, cipher[0] if cipher else ""))

    def connection_lost(self, error: Exception | None) -> None:
        if self._conn:
            if self._body is not None:
                self._flush_body(closed=True)
            # A reset right after QUIT is normal (clients drop TLS without close_notify): not news.
            quiet = error is None or isinstance(error, ConnectionResetError)
            self._record("close", lazy(N_("connection closed")) if quiet else lazy(N_("connection closed ({error})"), error=error),
                         payload=Close("" if quiet else str(error)))
            self._conn = ""
        super().connection_lost(error)

    def abort(self) -> None:
        """Drop the connection at once, as a crashed host does: never a graceful TLS shutdown (closing
        would wait up to 30 s for the peer's close_notify); under TLS the plain transport goes too."""
        for transport in (self.transport, self._original_transport):
            if isinstance(transport, asyncio.Transport):
                transport.abort()

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Hand received bytes to aiosmtpd's reader, at most _FEED_CHUNK per turn of the loop.

        aiosmtpd's DATA loop reads every line already buffered without ever yielding: one 256 KB read of
        a big message held the loop for 50-200 ms, and every other session (and the relay) waited. Fed
        in slices, the loop serves the others between two slices (issue 16: nothing blocks the loop)."""
        if not self._backlog and len(data) <= _FEED_CHUNK:
            super().data_received(data)
            return
        view = memoryview(data)
        self._backlog.extend(bytes(view[i:i + _FEED_CHUNK]) for i in range(0, len(view), _FEED_CHUNK))
        if not self._feeding:
            self._feed_next()

    def _feed_next(self) -> None:
        self._feeding = False
        if self.transport is None:  # the connection is gone: the reader has had its end of input
            self._backlog.clear()
            return
        if self._backlog:
            super().data_received(self._backlog.popleft())
        if self._backlog:
            self._feeding = True
            self.loop.call_soon(self._feed_next)
        elif self._eof_waiting:  # the client's end of input comes after its last byte
            self._eof_waiting = False
            self.eof_received()

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
        if self._after_dot:  # the reply to the final dot ends the transaction, whatever it says
            self._after_dot = False
            self._txn_done = True
        self._record("line", line, "S")
        if line.startswith("421"):
            # RFC 5321 section 3.8: 421 means the server closes the channel right after saying so.
            await super().push(line)
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(line)

    def belongs_to(self, *keys: str) -> None:
        """Say that the current transaction was done for a message (its queue id, its Message-ID)."""
        for key in keys:
            if key:
                self._trace.link(key, self.corr)

    async def fault_point(self, stage: str, recipient: str = "") -> str | None:
        """Apply an injected fault at `stage`: stall, hang up, or return the reply to give instead."""
        fault = self._faults(self._host_name, stage, recipient) if self._faults else None
        if fault is None:
            return None
        self._record("fault", lazy(N_("injected fault fires: {fault}"), fault=fault.describe()),
                     payload=FaultFired(fault.describe()))
        if fault.delay:
            await asyncio.sleep(fault.delay)  # a slow server is the fault being shown
        if fault.drop:
            if isinstance(self.transport, asyncio.Transport):
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
        # aiosmtpd's own STARTTLS: the wire tap puts itself between the TCP transport and TLS (WireTap.attach).
        await super().smtp_STARTTLS(arg)

    def _syntax_available(self, method: Any) -> bool:
        # HELP lists only what this server answers: no AUTH on a server that offers no mechanism (an MX), no
        # STARTTLS once TLS is on (RFC 3207 section 4.2: a second one gets 503), as EHLO says.
        name = getattr(method, "__name__", "")
        if (name == "smtp_AUTH" and not self._auth_methods) or (name == "smtp_STARTTLS" and self._tls_protocol):
            return False
        return bool(super()._syntax_available(method))

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if not self._auth_methods:
            # An MX takes mail from anyone and offers no mechanism: say AUTH is not enabled here (as Postfix
            # does), not "encryption required" or "unrecognized type", which would send a client looking.
            if not await self.check_helo_needed("EHLO"):
                await self.push(replies.AUTH_NOT_ENABLED)
            return
        await super().smtp_AUTH(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        address, params = self._split_path(arg)
        self.command_params = (params or "").split()  # as the client wrote them: see _getparams
        return address, params

    def _split_path(self, arg: str) -> tuple[str | None, str | None]:
        # An unclosed "<" or a control character is a malformed address, not something to repair.
        if arg and (CONTROL_CHARACTERS.search(arg) or (arg.lstrip().startswith("<") and ">" not in arg)):
            return None, None
        # The plain <local@domain> of nearly every command skips the e-mail header parser, which
        # costs more than the rest of a MAIL or RCPT; anything unusual still goes through it.
        simple = _SIMPLE_PATH.match(arg) if arg else None
        if simple is not None:
            return simple[1], simple[2]
        return super()._getaddr(arg)

    def _getparams(self, params: Any) -> dict[str, str | bool] | None:
        # DSN (RFC 3461), advertised in EHLO: aiosmtpd answers 555 to any RCPT parameter and to MAIL
        # parameters it does not know, and upper-cases them all. Its check passes over the DSN keywords;
        # the handlers read them from `command_params`, in the client's case (ENVID and ORCPT are
        # case-sensitive xtext), with smtplab.mail.dsn.
        result = super()._getparams(params)
        if result is not None:
            for keyword in DSN_KEYWORDS:
                result.pop(keyword, None)
        return result

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope is not None and self.envelope.rcpt_tos and not arg:
            fault = await self.fault_point("DATA")
            if self.transport is None or self.transport.is_closing():
                return
            if fault:
                await self.push(fault)
                return
        try:
            await super().smtp_DATA(arg)
        except Exception:
            # RFC 5321 §4.1.1.4: once the message is in, any reply to the final dot ends the transaction
            # (the handlers answer failures themselves; this is for whatever else raises). aiosmtpd clears
            # the envelope only on success: without this the next MAIL would get "503 nested MAIL".
            if self.envelope is not None and self.envelope.original_content is not None:
                self._set_post_data_state()
            raise

    def _timeout_cb(self) -> None:
        # RFC 5321 section 4.5.3.2: a server may close an idle session, and should say so with 421.
        if self.transport is not None and not self.transport.is_closing():
            line = replies.TIMEOUT.format(host=self._host_name)
            self._record("line", line, "S")
            if isinstance(self.transport, asyncio.WriteTransport):
                self.transport.write(line.encode() + b"\r\n")
        super()._timeout_cb()

    def eof_received(self) -> bool | None:
        if self._backlog:
            self._eof_waiting = True
            return self._tls_protocol is None
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
        handler = getattr(self.event_handler, "handle_exception", None)
        # aiosmtpd's own fallback answers "500 Error: (Exception) text": internals on the wire, and a 5xx that
        # tells a client to give up on a message the server merely failed to handle.
        reply = await handler(error) if handler is not None else replies.LOCAL_ERROR
        if type(error).__name__ != "TLSSetupException":  # a failed handshake is traced by the TLS code
            self.note_error(error, reply)
        return reply

    def note(self, text: str, payload: object = None) -> None:
        """Write what the server decided (policy, signing) into the trace, beside the protocol lines."""
        self._record("state", text, payload=payload if payload is not None else Note())

    def note_error(self, error: BaseException, reply: str, outcome: str = "") -> None:
        """Write an internal failure into the trace for the teacher: the client only gets a reply code."""
        text = f"{type(error).__name__}: {error}".encode("ascii", "backslashreplace").decode()[:500]
        code = reply[:9].rstrip()
        said = (lazy(N_("internal error ({error}): answered {code} {outcome}"), error=text, code=code, outcome=outcome)
                if outcome else lazy(N_("internal error ({error}): answered {code}"), error=text, code=code))
        self._record("error", said, payload=ServerError(text, code))

    @property
    def conn_id(self) -> str:
        return self._conn
