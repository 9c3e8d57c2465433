"""One POP3 session, RFC 1939's three states: AUTHORIZATION, TRANSACTION and (at QUIT) UPDATE.

The commands of RFC 1939, CAPA (RFC 2449) and STLS (RFC 2595), each answered by a method of the same
name; every line both ways goes to the lab trace (message bodies as their size, PASS as a mark). The
listener that makes a session per connection is smtplab.net.pop3.Pop3Service.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import TYPE_CHECKING

from ..i18n import N_, lazy
from ..trace.events import ClientLine, Close, Connect, Note, TlsStarted
from .maildrop import Maildrop, MaildropMessage, uidl_of

if TYPE_CHECKING:
    from .pop3 import Pop3Service

__all__ = ["Pop3Session", "MAX_LINE", "IDLE_TIMEOUT"]

MAX_LINE = 255  # RFC 2449 section 4: a command is at most 255 octets with its CRLF
IDLE_TIMEOUT = 600.0  # RFC 1939 section 3: an autologout timer of at least 10 minutes
FAILED_LOGIN_DELAY = 0.2  # slows password guessing across users of a shared host
BAD_COMMAND_LIMIT = 20  # then the server hangs up, so a confused client cannot loop forever
_NUMBER = re.compile(r"[1-9][0-9]{0,8}\Z")
_COUNT = re.compile(r"[0-9]{1,9}\Z")
CRLF = b"\r\n"


class Pop3Session:
    """One POP3 conversation: AUTHORIZATION, then TRANSACTION, then UPDATE at QUIT (RFC 1939 section 3)."""

    def __init__(self, service: Pop3Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.tls = False
        self.state = "AUTHORIZATION"
        self.user = ""
        self.messages: list[MaildropMessage] = []
        self.lock: Maildrop | None = None
        self.bad = 0
        self._buffer = b""
        self._discarding = False
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.fields = dict(conn=service.trace.new_conn_id("pop3"), client=f"{peer[0]}:{peer[1]}",
                           server=f"{service.address}:{service.port}", peer=service.peer_name(peer[0]),
                           port_name=service.port_name)
        self.corr = service.trace.new_correlation("pop3")  # one unit of work per session
        self.record("connect", lazy(N_("connection from {client}"), client=f"{peer[0]}:{peer[1]}"),
                    payload=Connect(self.fields["client"], self.fields["server"]))

    def record(self, kind: str, text: str, direction: str = "", message_ids: tuple[str, ...] = (), *,
               payload: object = None) -> None:
        """Trace one event; a protocol line's payload is parsed from the line (smtplab.trace.events)."""
        if kind == "state" and payload is None:
            payload = Note()
        self.service.trace.record("pop3", kind, self.service.host_name, text, direction=direction, tls=self.tls,
                                  message_ids=message_ids, payload=payload, corr=self.corr, **self.fields)

    def unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    async def start_tls(self, how: str) -> bool:
        try:
            await self.writer.start_tls(self.service.ssl_context)
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
            self.record("error", lazy(N_("TLS handshake failed: {error}"), error=exc), payload=Close(repr(exc)))
            return False
        self.tls = True
        ssl_object = self.writer.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else "TLS"
        cipher = ssl_object.cipher() if ssl_object is not None else None
        self.record("tls", lazy(N_("{version} handshake done ({how}): the wire is encrypted from here"), version=version,
                                 how=how),
                    payload=TlsStarted(version or "TLS", cipher[0] if cipher else ""))
        return True

    async def send(self, line: str, message_ids: tuple[str, ...] = ()) -> None:
        self.record("line", line, "S", message_ids)
        self.writer.write(line.encode("utf-8", "replace") + b"\r\n")
        await self.writer.drain()

    async def send_lines(self, first: str, lines: list[str]) -> None:
        """A multi-line response (RFC 1939 section 3): the status, the lines, then "." alone."""
        for line in [first, *lines, "."]:
            self.record("line", line, "S")
        body = "".join(("." + line if line.startswith(".") else line) + "\r\n" for line in lines)
        self.writer.write(f"{first}\r\n{body}.\r\n".encode("utf-8", "replace"))
        await self.writer.drain()

    async def read_line(self) -> bytes | None:
        """The next command line; None at end of input; b"" for a line over MAX_LINE (discarded)."""
        while True:
            index = self._buffer.find(b"\n")
            if index >= 0:
                line, self._buffer = self._buffer[: index + 1], self._buffer[index + 1:]
                if self._discarding or len(line) > MAX_LINE:
                    self._discarding = False
                    return b""
                return line
            if len(self._buffer) > MAX_LINE:
                self._buffer, self._discarding = b"", True
            chunk = await asyncio.wait_for(self.reader.read(4096), self.service.idle_timeout)
            if not chunk:
                return None
            self._buffer += chunk

    async def run(self) -> None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls = True
            cipher = ssl_object.cipher()
            self.record("tls", lazy(N_("{version} handshake done (implicit TLS, RFC 8314): the wire is encrypted from here"),
                                     version=ssl_object.version()),
                        payload=TlsStarted(ssl_object.version() or "TLS", cipher[0] if cipher else ""))
        await self.send(f"+OK {self.service.host_name} POP3 server ready (smtplab)")
        while True:
            try:
                line = await self.read_line()
            except TimeoutError:  # RFC 1939 section 3: close, no UPDATE, no response
                self.record("state", lazy(N_("autologout after {seconds} s idle: nothing deleted"),
                                          seconds=f"{self.service.idle_timeout:g}"))
                return
            if line is None:
                if self._buffer:
                    text = lazy(N_("{line}  (no line end: connection closed)"), line=_show(self._buffer[:200]))
                    self.record("line", text, "C", payload=ClientLine(text, complete=False))
                if self.state == "TRANSACTION":
                    self.record("state", lazy(N_("the client left without QUIT: no UPDATE, nothing deleted")))
                return
            if not line:
                text = lazy(N_("<a line of more than {limit} octets>"), limit=MAX_LINE)
                self.record("line", text, "C", payload=ClientLine(text, complete=False))
                if not await self.refuse(f"-ERR line too long: a command is at most {MAX_LINE} octets "
                                         "(RFC 2449 section 4)"):
                    return
                continue
            seen = _show(line)  # for the trace; the command itself is read from the line as sent
            keyword, _, argument = line.rstrip(b"\r\n").decode("utf-8", "replace").partition(" ")
            keyword = keyword.upper()
            self.record("line", lazy(N_("PASS <password hidden>")) if keyword == "PASS" else seen, "C")
            if not await self.dispatch(keyword, argument):
                return

    async def refuse(self, line: str) -> bool:
        """Answer a bad command with `line`; False (after saying so) when there were too many."""
        self.bad += 1
        if self.bad >= BAD_COMMAND_LIMIT:
            await self.send("-ERR too many bad commands, closing connection")
            return False
        await self.send(line)
        return True

    async def dispatch(self, keyword: str, argument: str) -> bool:
        """Answer one command; False once the connection is to close."""
        everywhere = {"CAPA": self.capa, "QUIT": self.quit, "NOOP": self.noop}
        authorization = {"USER": self.user_, "PASS": self.pass_, "STLS": self.stls, "APOP": self.apop}
        transaction = {"STAT": self.stat, "LIST": self.list_, "RETR": self.retr, "TOP": self.top,
                       "DELE": self.dele, "RSET": self.rset, "UIDL": self.uidl}
        handler = everywhere.get(keyword) or (authorization if self.state == "AUTHORIZATION" else transaction).get(keyword)
        if handler is None:
            if keyword in authorization or keyword in transaction:
                return await self.refuse(f"-ERR {keyword} is not valid in the {self.state} state (RFC 1939 section 3)")
            if keyword == "LAST":  # RFC 1460's, dropped by RFC 1725: fetchmail still probes for it
                return await self.refuse("-ERR unknown command: LAST is obsolete (RFC 1725), use UIDL")
            return await self.refuse("-ERR unknown command")
        return await handler(argument)

    # --- any state ---
    async def capa(self, argument: str) -> bool:
        # RFC 2449 section 5; USER only where a password may be sent, STLS only before TLS (RFC 2595 section 4).
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.tls:
            lines.insert(0, "USER")
        elif self.state == "AUTHORIZATION":
            lines.append("STLS")
        lines.append("IMPLEMENTATION smtplab")
        await self.send_lines("+OK Capability list follows", lines)
        return True

    async def noop(self, argument: str) -> bool:
        if self.state != "TRANSACTION":
            await self.send("-ERR NOOP is not valid in the AUTHORIZATION state (RFC 1939 section 3)")
            return True
        await self.send("+OK")
        return True

    async def quit(self, argument: str) -> bool:
        host = self.service.host_name
        if self.state != "TRANSACTION":
            await self.send(f"+OK {host} POP3 server signing off")
            return False
        self.state = "UPDATE"
        assert self.lock is not None
        loop = asyncio.get_running_loop()
        removed, marked, failed = await loop.run_in_executor(None, self.lock.update, self.messages)
        left = sum(1 for m in self.messages if not m.deleted)
        self.record("state", lazy(N_("UPDATE: {removed} message(s) removed, {marked} marked as read; maildrop unlocked"),
                                  removed=removed, marked=marked))
        self.unlock()
        if failed:
            await self.send(f"-ERR [SYS/TEMP] {failed} deleted message(s) not removed")
        else:
            await self.send(f"+OK {host} POP3 server signing off ({left} message(s) left)")
        return False

    # --- AUTHORIZATION ---
    def password_allowed(self) -> bool:
        return self.tls

    async def user_(self, argument: str) -> bool:
        if not self.password_allowed():
            # RFC 2595 section 4 / RFC 3206: no password in clear; Dovecot gives the same answer.
            await self.send("-ERR [AUTH] Plaintext authentication disallowed before STLS: send STLS first")
            return True
        if not argument.strip():
            await self.send("-ERR USER needs a name: USER alice@example.org")
            return True
        self.user = argument.strip().lower()
        await self.send("+OK send PASS")  # the same for every name: no hint of who exists
        return True

    async def pass_(self, argument: str) -> bool:
        if not self.password_allowed():
            await self.send("-ERR [AUTH] Plaintext authentication disallowed before STLS: send STLS first")
            return True
        if not self.user:
            await self.send("-ERR give USER first")
            return True
        user, self.user = self.user, ""
        root = self.service.maildrop(user)
        if root is None or not self.service.check_password(user, argument):
            await asyncio.sleep(FAILED_LOGIN_DELAY)
            return await self.refuse("-ERR [AUTH] invalid user name or password")
        lock = Maildrop(root)
        if not lock.acquire():
            await self.send("-ERR [IN-USE] maildrop already locked: another POP3 session is open")
            return True
        self.lock = lock
        self.messages = await asyncio.get_running_loop().run_in_executor(None, lock.scan)
        self.state = "TRANSACTION"
        count, octets = self.totals()
        self.record("state", lazy(N_("maildrop of {user} locked: {count} message(s), {octets} octets"), user=user,
                                  count=count, octets=octets))
        await self.send(f"+OK maildrop locked and ready: {count} message(s) ({octets} octets)")
        return True

    async def stls(self, argument: str) -> bool:
        if self.tls:
            await self.send("-ERR TLS is already active")
            return True
        await self.send("+OK Begin TLS negotiation")
        if self._buffer:  # RFC 2595 / RFC 3207 section 4.2: plaintext sent after STLS is an injection
            self.record("state", lazy(N_("{octets} octets sent after STLS before the handshake: discarded"),
                                      octets=len(self._buffer)),
                    payload=Note(warning=True))
            self._buffer = b""
        if not await self.start_tls("STLS, RFC 2595"):
            return False
        self.user = ""  # RFC 2595 section 4: forget what came before TLS
        return True

    async def apop(self, argument: str) -> bool:
        await self.send("-ERR APOP is not offered here (the greeting has no timestamp): use USER and PASS")
        return True

    # --- TRANSACTION ---
    def totals(self) -> tuple[int, int]:
        kept = [m for m in self.messages if not m.deleted]
        return len(kept), sum(m.size for m in kept)

    async def message(self, argument: str) -> MaildropMessage | None:
        """The message numbered `argument`, or None after answering -ERR (RFC 1939 section 5)."""
        if not _NUMBER.match(argument):
            await self.send("-ERR give a message number (1, 2, ...)")
            return None
        number = int(argument)
        if number > len(self.messages):
            await self.send(f"-ERR no such message: the maildrop has {len(self.messages)}")
            return None
        found = self.messages[number - 1]
        if found.deleted:
            await self.send(f"-ERR message {number} is deleted (RSET takes that back)")
            return None
        return found

    async def stat(self, argument: str) -> bool:
        count, octets = self.totals()
        await self.send(f"+OK {count} {octets}")
        return True

    async def list_(self, argument: str) -> bool:
        if argument:
            found = await self.message(argument)
            if found is not None:
                await self.send(f"+OK {argument} {found.size}", (found.message_id,) if found.message_id else ())
            return True
        count, octets = self.totals()
        lines = [f"{i} {m.size}" for i, m in enumerate(self.messages, 1) if not m.deleted]
        await self.send_lines(f"+OK {count} message(s) ({octets} octets)", lines)
        return True

    async def uidl(self, argument: str) -> bool:
        if argument:
            found = await self.message(argument)
            if found is not None:
                await self.send(f"+OK {argument} {uidl_of(found.key)}")
            return True
        lines = [f"{i} {uidl_of(m.key)}" for i, m in enumerate(self.messages, 1) if not m.deleted]
        await self.send_lines("+OK unique-id listing follows", lines)
        return True

    async def dele(self, argument: str) -> bool:
        found = await self.message(argument)
        if found is not None:
            found.deleted = True
            await self.send(f"+OK message {argument} deleted (removed at QUIT)",
                            (found.message_id,) if found.message_id else ())
        return True

    async def rset(self, argument: str) -> bool:
        for m in self.messages:
            m.deleted = False
        count, octets = self.totals()
        await self.send(f"+OK maildrop has {count} message(s) ({octets} octets)")
        return True

    async def retr(self, argument: str) -> bool:
        found = await self.message(argument)
        if found is not None:
            await self.send_message(found, None)
        return True

    async def top(self, argument: str) -> bool:
        number, _, lines = argument.partition(" ")
        if not _COUNT.match(lines.strip()):
            await self.send("-ERR usage: TOP message-number lines (RFC 1939 section 7)")
            return True
        found = await self.message(number)
        if found is not None:
            await self.send_message(found, int(lines))
        return True

    async def send_message(self, found: MaildropMessage, body_lines: int | None) -> None:
        assert self.lock is not None
        data = await asyncio.get_running_loop().run_in_executor(None, self.lock.read, found)
        ids = (found.message_id,) if found.message_id else ()
        if data is None:
            await self.send("-ERR [SYS/TEMP] that message was removed by another client (IMAP) meanwhile")
            return
        if body_lines is None:
            found.retrieved = True
            status = f"+OK {found.size} octets"
        else:  # TOP: the header, the empty line, then that many body lines (RFC 1939 section 7)
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lines = body.split(b"\r\n")[:-1]  # the body ends with CRLF: the last piece is empty
                data = head + sep + b"".join(line + b"\r\n" for line in lines[:body_lines])
            status = f"+OK top of message follows ({body_lines} body line(s))"
        # Byte-stuffing (RFC 1939 section 3): a line starting with "." gets one more in front.
        stuffed = (b"." if data.startswith(b".") else b"") + data.replace(b"\r\n.", b"\r\n..")
        self.record("line", status, "S", ids)
        self.record("line", lazy(N_("<message: {lines} lines, {size} octets>"), lines=data.count(CRLF), size=len(data)),
                    "S", ids)
        self.record("line", ".", "S", ids)
        self.writer.write(status.encode() + b"\r\n" + stuffed + b".\r\n")
        await self.writer.drain()


def _show(line: bytes) -> str:
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else f"<{ord(c):02X}>" for c in text)
