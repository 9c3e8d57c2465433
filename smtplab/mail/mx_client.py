"""The relay's SMTP client: one delivery attempt to one MX with smtplib, in a worker thread.

It connects from the sending host's address, says EHLO (or HELO), takes STARTTLS when offered (or as the
TLS policy demands), passes on the DSN parameters to a next hop that offers DSN, and returns what the MX
answered per recipient (`Outcome`). Before it connects and before each MAIL it announces the work it does
(smtplab.trace.ring), so the MX that accepts the connection knows which relay attempt it serves.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..net.client import NamedSMTP
from ..net.dsn_parameters import xtext_encode
from ..trace.ring import announce_connection, withdraw_connection
from .queue import Outcome, QueueEntry, TlsRequirement

__all__ = ["smtp_deliver", "dsn_parameters", "DsnParameters", "endpoint_of", "quit_all", "is_protocol_error",
           "PROTOCOL_ERROR_NOTE"]

PROTOCOL_ERROR_NOTE = ("a protocol error on that connection, not a verdict on the recipient or the message: "
                       "retried later on a new connection")


def is_protocol_error(code: int, text: str) -> bool:
    """True for a 5xx that says the conversation went wrong, not that the mail is unwanted.

    500-504 are syntax and command-sequence replies (RFC 5321 section 4.2.2: "503 Bad sequence of
    commands"); they describe this connection's state (e.g. a transaction the server failed to close),
    so bouncing on them would return good mail. Where the enhanced code (RFC 3463) puts the reply under
    addressing (X.1.x, e.g. 501 5.1.3 bad address syntax) or content (X.6.x, e.g. 500 5.6.7 non-ASCII
    without SMTPUTF8), the reply is about the mail after all, and stays permanent.
    """
    if code not in (500, 501, 502, 503, 504):
        return False
    parts = text.split(" ", 1)[0].split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return parts[1] not in ("1", "6")
    return True


DsnParameters = tuple[list[str], dict[str, list[str]]]


def dsn_parameters(entry: QueueEntry, rcpts: list[str]) -> DsnParameters:
    """The RFC 3461 parameters to pass on to a next hop that offers DSN: RET and ENVID on MAIL (section
    4.3/4.4), NOTIFY and ORCPT on each RCPT (4.1/4.2), xtext-encoded as on the wire at submission."""
    mail = ([f"RET={entry.ret}"] if entry.ret else []) + ([f"ENVID={xtext_encode(entry.envid)}"] if entry.envid else [])
    per_rcpt: dict[str, list[str]] = {}
    for r in entry.recipients:
        if r.address in rcpts:
            options = [f"NOTIFY={r.notify}"] if r.notify else []
            if r.orcpt:
                kind, _, original = r.orcpt.partition(";")
                options.append(f"ORCPT={kind};{xtext_encode(original)}")
            per_rcpt[r.address] = options
    return mail, per_rcpt


def smtp_deliver(exchange: str, address: str, port: int, source: str, helo: str, context: ssl.SSLContext, sender: str,
                  rcpts: list[str], content: bytes, client: smtplib.SMTP | None = None,
                  keep: bool = False, *, link: Callable[[str], None] | None = None,
                  dsn: DsnParameters | None = None,
                  require: TlsRequirement | None = None) -> tuple[Outcome, smtplib.SMTP | None]:
    """Deliver one message to one MX with smtplib (runs in a worker thread).

    `client` is a connection an earlier delivery left open to the same MX (past EHLO and STARTTLS).
    With `keep`, the connection is returned open, ready for the next MAIL, instead of closed by QUIT.
    The outcome names the relay's end of the connection, so the MX's side of it can be found in the trace.
    `link(endpoint)` is told that end just before MAIL; `dsn` holds the DSN parameters for a next hop
    that offers DSN (RFC 3461 section 5.2: to one that does not, they are not sent).
    """
    local: list[str] = []
    outcome, kept = _smtp_attempt(exchange, address, port, source, helo, context, sender, rcpts, content, client,
                                  keep, local, link, dsn or ([], {}), require)
    return (replace(outcome, client=local[-1]) if local else outcome), kept


def endpoint_of(client: smtplib.SMTP) -> str:
    try:
        host, port = client.sock.getsockname()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return ""
    return f"{host}:{port}"


def _smtp_attempt(exchange: str, address: str, port: int, source: str, helo: str, context: ssl.SSLContext,
                  sender: str, rcpts: list[str], content: bytes, client: smtplib.SMTP | None, keep: bool,
                  local: list[str], link: Callable[[str], None] | None,
                  dsn: DsnParameters, require: TlsRequirement | None = None) -> tuple[Outcome, smtplib.SMTP | None]:
    replies: dict[str, tuple[int, str]] = {}
    kept: smtplib.SMTP | None = None

    def mail(client: smtplib.SMTP) -> tuple[int, bytes]:
        if link is not None:
            link(local[-1])
        return _mail(client, sender, rcpts, content, dsn[0] if client.has_extn("dsn") else [])

    try:
        if client is not None:
            local.append(endpoint_of(client))
            try:
                code, msg = mail(client)
            except (smtplib.SMTPServerDisconnected, OSError):
                client.close()  # the MX closed the idle connection meanwhile: open a new one
                client = None
        if client is None:
            client = _LabClient(server_name=exchange, local_hostname=helo, timeout=20, source_address=(source, 0))
            failure = _open(client, exchange, address, port, context, rcpts, local, require)
            if failure is not None:
                client.close()
                return failure, None
            code, msg = mail(client)
        offers_dsn = client.has_extn("dsn")
        try:
            # The connection is kept for the next message only if it is surely back in its initial state:
            # every reply was a success or an ordinary refusal, and no transaction is left open. After a
            # failure reply to the final dot RFC 5321 section 4.1.1.4 says the transaction is over, but a
            # server that fails at end-of-data may not have reset it (then the next MAIL meets "503 nested
            # MAIL"): RSET first (section 4.1.1.5), and a protocol error of any kind means a new connection.
            clean = True
            sane = not is_protocol_error(code, msg.decode("utf-8", "replace"))
            if code != 250:
                text = msg.decode("utf-8", "replace")
                outcome = Outcome({r: (code, text) for r in rcpts}, True, dsn=offers_dsn)
            else:
                accepted = []
                for rcpt in rcpts:
                    code, msg = client.rcpt(rcpt, dsn[1].get(rcpt, []) if offers_dsn else [])
                    replies[rcpt] = (code, msg.decode("utf-8", "replace"))
                    sane = sane and not is_protocol_error(*replies[rcpt])
                    if code in (250, 251):
                        accepted.append(rcpt)
                clean = False
                if accepted:
                    answer: bytes | str
                    try:
                        code, answer = client.data(content)
                        clean = code == 250
                    except smtplib.SMTPDataError as exc:
                        code, answer = exc.smtp_code, exc.smtp_error
                    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)
                    sane = sane and not is_protocol_error(code, text)
                    for rcpt in accepted:
                        replies[rcpt] = (code, text)
                outcome = Outcome(replies, True, dsn=offers_dsn)
            try:
                if keep and sane and (clean or client.rset()[0] == 250):
                    kept = client
                else:
                    client.quit()
            except (smtplib.SMTPException, OSError):
                pass
            return outcome, kept
        finally:
            if kept is None:
                client.close()
    except ConnectionRefusedError:
        return Outcome({}, False, "451 4.4.1 connection refused (host down?)"), None
    except TimeoutError:
        return Outcome({}, False, "451 4.4.2 connection timed out"), None
    except smtplib.SMTPServerDisconnected as exc:
        # Anything not yet confirmed with 250 after DATA is not delivered: retry it all.
        return Outcome({}, False, f"451 4.4.2 connection dropped: {exc or 'server closed the connection'}"), None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        return Outcome({}, False, f"451 4.4.0 {type(exc).__name__}: {exc}"), None


def _mail(client: smtplib.SMTP, sender: str, rcpts: list[str], content: bytes,
          options: list[str]) -> tuple[int, bytes]:
    """MAIL FROM, with SMTPUTF8 when the message needs it and the MX offers it (RFC 6531 section 3.4), and
    the `options` (DSN's RET and ENVID) the MX offers."""
    envelope_utf8 = not (sender.isascii() and all(r.isascii() for r in rcpts))
    end = content.find(b"\r\n\r\n")
    header_utf8 = not (content if end < 0 else content[:end]).isascii()
    if envelope_utf8 and not client.has_extn("smtputf8"):
        # A non-ASCII address cannot be downgraded: nothing is sent, the message goes back to its sender.
        return 553, b"5.6.7 The next hop does not offer SMTPUTF8: a non-ASCII address cannot be relayed (RFC 6531)"
    client.command_encoding = "ascii"  # smtplib keeps "utf-8" from an earlier SMTPUTF8 transaction
    if (envelope_utf8 or header_utf8) and client.has_extn("smtputf8"):
        return client.mail(sender, ["SMTPUTF8", *options])  # smtplib then sends the commands as UTF-8
    return client.mail(sender, options)


def _open(client: smtplib.SMTP, exchange: str, address: str, port: int, context: ssl.SSLContext,
          rcpts: list[str], local: list[str], require: TlsRequirement | None = None) -> Outcome | None:
    """Connect, EHLO (or HELO) and STARTTLS when offered; return the refusal as an outcome, if any."""
    code, msg = client.connect(address, port)
    local.append(endpoint_of(client))
    if code != 220:
        return Outcome({r: (code, msg.decode("utf-8", "replace")) for r in rcpts}, True)
    code, msg = client.ehlo()
    if code != 250:
        code, msg = client.helo()  # RFC 5321 section 3.2: fall back to HELO
        if code != 250:
            return Outcome({r: (code, msg.decode("utf-8", "replace")) for r in rcpts}, True)
    offered = client.has_extn("starttls")
    refusal = require.refusal(None) if require is not None and not offered else None
    if offered:
        # Opportunistic TLS between MTAs (RFC 3207, RFC 7435): encrypted, the MX's name not insisted on
        # unless a policy (MTA-STS, DANE) says what its certificate must be.
        client.starttls(context=context)
        refusal = require.refusal(client.sock) if require is not None else None  # type: ignore[arg-type]
        if refusal is None:
            client.ehlo()
    if refusal:  # the policy forbids this MX: say goodbye without a transaction, and defer
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return Outcome({}, False, refusal)
    return None


class _LabClient(NamedSMTP):
    """smtplib's client, announcing the work it does before it connects and before each MAIL, so the MX
    that accepts the connection (and reads the MAIL) knows which attempt it serves (smtplab.trace.ring)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.bind(self.source_address or ("", 0))
            local = sock.getsockname()
            announce_connection(f"{local[0]}:{local[1]}")
            try:
                sock.connect((host, port))
            except BaseException:
                withdraw_connection(f"{local[0]}:{local[1]}")
                raise
        except BaseException:
            sock.close()
            raise
        return sock

    def mail(self, sender: str, options: Any = ()) -> tuple[int, bytes]:
        if self.sock is not None:
            local = self.sock.getsockname()
            announce_connection(f"{local[0]}:{local[1]}")
        return super().mail(sender, options)


def quit_all(clients: list[smtplib.SMTP]) -> None:
    for client in clients:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            client.close()
