"""A raw SMTP conversation for the learner, one line at a time, as with telnet: `lab.session(...)`."""

from __future__ import annotations

import base64
import socket
import ssl
from typing import Any

from ..errors import HostUnreachable, SessionError
from ..i18n import _
from .client import CLIENT_NAME
from .replies import Reply

__all__ = ["SmtpSession", "open_session"]


class SmtpSession:
    """A raw SMTP conversation, one line at a time, as with telnet - wrong lines included.

    `send(line)` writes one line (CRLF added) and returns the server's Reply. After a 354 reply the
    session is in DATA mode: lines get no reply until the lone '.', which returns the final reply.
    After a 220 reply to STARTTLS the session switches to TLS by itself, like a real client.
    """

    def __init__(self, address: str, port: int, *, context: ssl.SSLContext, server_name: str,
                 timeout: float = 5.0, source: str | None = None, service: str = "smtp") -> None:
        self.address = address
        self.port = port
        self.server_name = server_name
        self._context = context
        self._timeout = timeout
        self.in_data = False
        self.encrypted = False
        self.closed = False
        self.service = service
        # What the conversation has achieved so far (drives `suggestions()`).
        self.said_hello = False
        self.authenticated = False
        self.has_sender = False
        self.recipients = 0
        self.transcript: list[str] = []
        self._buffer = b""
        try:
            self._sock = socket.create_connection((address, port), timeout=timeout,
                                                  source_address=(source, 0) if source else None)
        except (ConnectionRefusedError, TimeoutError) as exc:
            raise HostUnreachable(_("{server_name} ({address}:{port}) did not accept the connection ({error}): is it "
                                    "down? Start it with lab.host({server_name!r}).up()").format(
                server_name=server_name, address=address, port=port, error=type(exc).__name__)) from None
        local = self._sock.getsockname()
        self.local_port: int = local[1]  # finds this conversation in lab.trace
        self.local_endpoint = f"{local[0]}:{local[1]}"  # the client endpoint the server's trace shows
        self.conn = ""  # the trace's connection id, e.g. "smtp-7" (set by lab.session)
        self.greeting = self._read_reply()

    def send(self, line: str | bytes) -> Reply | None:
        """Send one line and return the reply (None while in DATA mode, until the lone '.')."""
        if self.closed:
            raise SessionError(_("this session is closed; open a new one with lab.session(...)"))
        raw = line if isinstance(line, bytes) else line.encode("utf-8")
        if b"\r" in raw or b"\n" in raw:
            raise SessionError(_("send one line at a time (no CR or LF inside); use send_raw() for raw bytes"))
        self._write(raw + b"\r\n")
        self.transcript.append("C: " + raw.decode("utf-8", "replace"))
        if self.in_data and raw != b".":
            return None
        reply = self._read_reply()
        if self.in_data:  # that was the lone dot: the transaction is over, whatever the reply
            self.in_data = False
            self.has_sender, self.recipients = False, 0
            return reply
        return self._after(raw, reply)

    def send_raw(self, data: bytes, *, expect_reply: bool = True) -> Reply | None:
        """Send bytes exactly as given (no CRLF added): for line-ending experiments."""
        if self.closed:
            raise SessionError(_("this session is closed; open a new one with lab.session(...)"))
        self._write(data)
        self.transcript.append("C: " + repr(data))
        if not expect_reply:
            return None
        reply = self._read_reply()
        if self.in_data:  # whatever ended the message, the server has answered it: the transaction is over
            self.in_data = False
            self.has_sender, self.recipients = False, 0
        return reply

    def data(self, message: str | bytes) -> Reply:
        """Send DATA, the message (dot-stuffed, CRLF line ends) and the lone dot; return the final reply."""
        if self.in_data:
            raise SessionError(_("already inside DATA: send the message lines with send(), then '.'"))
        reply = self.send("DATA")
        assert reply is not None
        if reply.code != 354:
            return reply
        text = message.decode("utf-8") if isinstance(message, bytes) else message
        text = text.replace("\r\n", "\n")
        if text.endswith("\n"):
            text = text[:-1]  # the last line's own line end; not an extra empty line
        for line in text.split("\n"):
            self.send("." + line if line.startswith(".") else line)  # RFC 5321 §4.5.2 dot-stuffing
        final = self.send(".")
        assert final is not None
        return final

    def ehlo(self, name: str = CLIENT_NAME) -> Reply:
        return self._must(self.send(f"EHLO {name}"))

    def starttls(self) -> Reply:
        return self._must(self.send("STARTTLS"))

    def auth_plain(self, login: str, password: str) -> Reply:
        token = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        return self._must(self.send(f"AUTH PLAIN {token}"))

    def mail(self, sender: str) -> Reply:
        return self._must(self.send(f"MAIL FROM:<{sender}>"))

    def rcpt(self, recipient: str) -> Reply:
        return self._must(self.send(f"RCPT TO:<{recipient}>"))

    def quit(self) -> Reply:
        reply = self._must(self.send("QUIT"))
        self.close()
        return reply

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._sock.close()
            except OSError:
                pass

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("TLS" if self.encrypted else "plain")
        return f"<SmtpSession {self.server_name} {self.address}:{self.port} {state}>"

    # --- internals ---
    def _must(self, reply: Reply | None) -> Reply:
        if reply is None:
            raise SessionError(_("no reply: the session is in DATA mode; end the message with '.'"))
        return reply

    def suggestions(self) -> list[str]:
        """Return the commands a well-behaved client would send next, most likely first."""
        if self.closed:
            return []
        if self.in_data:
            return ["message", "."]
        if not self.said_hello:
            return ["EHLO"]
        needs_tls = self.service == "submission" and not self.encrypted
        if needs_tls:
            return ["STARTTLS", "QUIT"]
        if self.service == "submission" and not self.authenticated:
            return ["AUTH", "QUIT"]
        if not self.has_sender:
            return ["MAIL", "QUIT", "NOOP"]
        if not self.recipients:
            return ["RCPT", "RSET"]
        return ["DATA", "RCPT", "RSET"]

    def _after(self, raw: bytes, reply: Reply) -> Reply:
        command = raw.split(b" ", 1)[0].upper()
        ok = 200 <= reply.code < 300
        if command in (b"EHLO", b"HELO") and ok:
            self.said_hello, self.has_sender, self.recipients = True, False, 0
        elif command == b"AUTH" and reply.code == 235:
            self.authenticated = True
        elif command == b"MAIL" and ok:
            self.has_sender = True
        elif command == b"RCPT" and ok:
            self.recipients += 1
        elif command == b"RSET" and ok:
            self.has_sender, self.recipients = False, 0
        if reply.code == 354:
            self.in_data = True
        elif command == b"STARTTLS" and reply.code == 220:
            self._sock = self._context.wrap_socket(self._sock, server_hostname=self.server_name)
            self._buffer = b""
            self.encrypted = True
            self.said_hello = False  # RFC 3207 section 4.2: forget everything, say EHLO again
            self.transcript.append("*  TLS handshake done: the wire is encrypted from here")
        elif reply.code == 221 or reply.code == 421:
            self.close()
        return reply

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise SessionError(_("the connection is gone ({exc}); open a new session").format(exc=exc)) from None

    def _read_line(self) -> bytes:
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise SessionError(
                    _("no reply within {timeout:g} s: the server is waiting for more (in DATA, end the message with a "
                      "line holding only '.')").format(timeout=self._timeout)
                ) from None
            except OSError as exc:
                self.close()
                raise SessionError(_("the connection is gone ({exc})").format(exc=exc)) from None
            if not chunk:
                self.close()
                raise SessionError(_("the server closed the connection"))
            self._buffer += chunk
        line, _newline, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def _read_reply(self) -> Reply:
        lines = []
        while True:
            line = self._read_line().decode("utf-8", "replace")
            lines.append(line)
            self.transcript.append("S: " + line)
            if len(line) < 4 or line[3] != "-":
                break
        return Reply.parse(lines)


def open_session(lab: Any, host_name: str, service: str | None = None, timeout: float = 5.0, *,
                 source: str | None = None) -> SmtpSession:
    host = lab.host(host_name)
    if service is None:
        service = "submission" if "submission" in host.ports else "smtp"
    if service not in host.ports:
        raise SessionError(_("{name} runs no {service} service; it runs {ports}").format(
            name=host.name, service=service, ports=', '.join(host.ports)))
    if service not in ("smtp", "submission"):
        smtp = [s for s in host.ports if s in ("smtp", "submission")]
        raise SessionError(_("a session speaks SMTP in clear text first (STARTTLS when asked): {name}'s {service} is "
                             "not that; it runs {ports} (for submissions, TLS from the first byte, use "
                             "smtplib.SMTP_SSL); try service={suggestion!r}").format(
            name=host.name, service=service, ports=', '.join(host.ports), suggestion=smtp[0] if smtp else 'smtp'))
    session = SmtpSession(host.address, host.ports[service], context=lab.services.client_context, server_name=host.name,
                          timeout=timeout, service=service, source=source)
    # The server recorded the connection before it greeted us: find its id in the trace.
    session.conn = next((e.conn for e in reversed(lab.trace.events())
                         if e.kind == "connect" and e.client == session.local_endpoint), "")
    return session
