"""The learner's mail clients: `send` (a real MUA's submission), IMAP and POP3 logins.

The line-at-a-time SMTP conversation (`SmtpSession`, `lab.session`) is `net/session.py`.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from ..errors import HostUnreachable, SendError
from ..i18n import _
from .dsn_parameters import xtext_encode
from .replies import Reply

__all__ = ["SendResult", "NamedSMTP", "submit", "CLIENT_NAME"]

CLIENT_NAME = "client.local"  # what the learner's MUA says in EHLO


@dataclass(frozen=True)
class SendResult:
    """What happened when a message was submitted."""

    queue_id: str
    message_id: str
    reply: Reply
    sender: str
    recipients: tuple[str, ...]
    refused: Mapping[str, Reply]  # recipients the submission server refused at RCPT, with its reply

    def __str__(self) -> str:
        text = f"{self.reply.code} {self.reply.enhanced} {self.reply.text}".replace("  ", " ")
        for rcpt, reply in self.refused.items():
            text += "\n" + _("refused {recipient}: {code} {enhanced} {text}").format(
                recipient=rcpt, code=reply.code, enhanced=reply.enhanced, text=reply.text)
        return text


def build_message(sender: str, recipients: Iterable[str], subject: str, body: str, *,
                  headers: Mapping[str, str] | None = None, now: float | None = None) -> EmailMessage:
    """Build an RFC 5322 message the way a mail client would."""
    from datetime import datetime

    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    when = datetime.fromtimestamp(now, tz=UTC) if now is not None else datetime.now(UTC)
    message["Date"] = format_datetime(when)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "smtplab.local")
    for name, value in (headers or {}).items():
        if name in message:
            del message[name]
        message[name] = value
    message.set_content(body)
    return message


class NamedSMTP(smtplib.SMTP):
    """smtplib's client that connects to an address but checks the server's certificate against a host
    name, as a relay does after an MX lookup (the certificate names the MX host, RFC 8461 section 4.1,
    RFC 7672 section 3.2.3); `server_name` "" checks against what it connected to, like smtplib."""

    def __init__(self, host: str = "", port: int = 0, *, server_name: str = "", **kwargs: Any) -> None:
        self.server_name = server_name
        super().__init__(host, port, **kwargs)

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> tuple[int, bytes]:
        reply = super().connect(host, port, source_address)
        if self.server_name:
            # STARTTLS checks the certificate against `_host`, which connect() just set to the address.
            self._host = self.server_name  # type: ignore[attr-defined]
        return reply


def submit(address: str, port: int, context: ssl.SSLContext, login: str, password: str, sender: str,
           recipients: list[str], message: EmailMessage | bytes, *, mail_options: list[str] | None = None,
           rcpt_options: list[str] | None = None) -> SendResult:
    """Submit like a real MUA: EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT..., DATA (RFC 6409)."""
    # On the wire every line ends in CRLF (RFC 5321 section 2.3.8); policy.SMTP writes it so.
    # RFC 6531: an address that is not ASCII needs SMTPUTF8, and headers in UTF-8 rather than encoded words.
    utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
    raw = message.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP) if isinstance(message, EmailMessage) \
        else message
    message_id = ""
    if isinstance(message, EmailMessage):
        message_id = str(message.get("Message-ID", ""))
    refused: dict[str, Reply] = {}
    try:
        connected = smtplib.SMTP(address, port, local_hostname=CLIENT_NAME, timeout=30)
    except (ConnectionRefusedError, TimeoutError) as exc:  # TimeoutError is socket.timeout too
        raise HostUnreachable(
            _("nothing answered on {address}:{port} ({error}): the submission host is down or not listening; start it "
              "again with lab.host(name).up() (lab.hosts shows which hosts are down)").format(
            address=address, port=port, error=type(exc).__name__)) from None
    except smtplib.SMTPConnectError as exc:  # a greeting other than 220 (RFC 5321 §3.1: 554 or 421)
        reply = _reply(exc.smtp_code, exc.smtp_error)
        raise SendError(_("the server refused the session: {code} {enhanced} {text}").format(
            code=reply.code, enhanced=reply.enhanced, text=reply.text), reply) from None
    except smtplib.SMTPServerDisconnected:
        raise HostUnreachable(_("{address}:{port} closed the connection before greeting; is a fault injected there? "
                                "(lab.host(name).faults)").format(address=address, port=port)) from None
    with connected as client:
        client.ehlo()
        client.starttls(context=context)
        client.ehlo()
        try:
            if login.isascii() and password.isascii():
                client.login(login, password)
            else:  # smtplib encodes SASL answers as ASCII; PLAIN carries UTF-8 (RFC 4616 section 2)
                token = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
                code, msg = client.docmd("AUTH", "PLAIN " + token)
                if code != 235:
                    raise smtplib.SMTPAuthenticationError(code, msg)
        except smtplib.SMTPAuthenticationError as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            raise SendError(_("the server refused the login of {login}: {code} {enhanced} {text}. Check the password "
                              "in lab.users[{login!r}].password").format(
                login=login, code=reply.code, enhanced=reply.enhanced, text=reply.text), reply) from None
        code, msg = client.mail(sender, (["SMTPUTF8"] if utf8 else []) + (mail_options or []))
        if code != 250:
            client.rset()
            reply = _reply(code, msg)
            raise SendError(_("MAIL FROM:<{sender}> refused: {code} {enhanced} {text}").format(
                sender=sender, code=code, enhanced=reply.enhanced, text=reply.text), reply)
        accepted = []
        for rcpt in recipients:
            orcpt = [f"ORCPT=rfc822;{xtext_encode(rcpt)}"] if rcpt_options else []
            code, msg = client.rcpt(rcpt, (rcpt_options or []) + orcpt)
            if code in (250, 251):
                accepted.append(rcpt)
            else:
                refused[rcpt] = _reply(code, msg)
        if not accepted:
            client.rset()
            first = next(iter(refused.values()))
            raise SendError(_("every recipient was refused: {refusals}").format(refusals="; ".join(
                f"{r}: {rep.code} {rep.enhanced} {rep.text}" for r, rep in refused.items())), first)
        try:
            code, msg = client.data(raw)
        except smtplib.SMTPDataError as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            raise SendError(_("the message was refused: {code} {enhanced} {text}").format(
                code=reply.code, enhanced=reply.enhanced, text=reply.text), reply) from None
    reply = _reply(code, msg)
    if code != 250:
        raise SendError(_("the message was refused: {code} {enhanced} {text}").format(
            code=reply.code, enhanced=reply.enhanced, text=reply.text), reply)
    queue_id = reply.text.rsplit(" ", 1)[-1] if "queued as" in reply.text else ""
    return SendResult(queue_id, message_id, reply, sender, tuple(accepted), refused)


def _reply(code: int, msg: bytes | str) -> Reply:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
    lines = text.split("\n") or [""]
    return Reply.parse([f"{code}{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)])


def dsn_options(notify: str | Iterable[str] | None, ret: str | None, envid: str | None
                ) -> tuple[list[str], list[str]]:
    """MAIL and RCPT parameters asking for delivery status notifications (RFC 3461), as a DSN-aware mail
    client writes them: `notify` "SUCCESS,DELAY,FAILURE" (or a list of those words) or "NEVER"."""
    mail = [f"RET={ret.upper()}"] if ret else []
    if envid:
        mail.append(f"ENVID={xtext_encode(envid)}")
    words = [notify] if isinstance(notify, str) else list(notify or [])
    rcpt = [f"NOTIFY={','.join(w.strip().upper() for w in ','.join(words).split(','))}"] if words else []
    return mail, rcpt


def send_from_lab(lab: Any, sender: str, recipients: str | Iterable[str], subject: str, body: str, *,
                  password: str | None = None, headers: Mapping[str, str] | None = None,
                  wait: bool = True, notify: str | Iterable[str] | None = None, ret: str | None = None,
                  envid: str | None = None) -> SendResult:
    """Implementation of Lab.send (kept here so lab.py stays small)."""
    rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
    user = lab.user(sender)
    host = lab.submission_host(sender)
    message = build_message(sender, rcpts, subject, body, headers=headers, now=lab.clock.now())
    mail_options, rcpt_options = dsn_options(notify, ret, envid)
    result = submit(host.address, host.ports["submission"], lab.services.client_context, user.login,
                    password if password is not None else user.password, sender, rcpts, message,
                    mail_options=mail_options, rcpt_options=rcpt_options)
    if wait and result.queue_id:
        # Wait for the whole queue, not just this id: a bounce it caused is a queue entry of its own.
        lab.wait_for_delivery()
    return result


def open_pop3(lab: Any, address: str) -> Any:
    """Return a poplib connection to `address`'s POP3 port, after STLS (RFC 2595), logged in as that user."""
    import poplib

    user, host = lab.user(address), lab.imap_host(address)
    client = poplib.POP3(host.address, host.ports["pop3"], timeout=30)
    try:
        client.stls(lab.services.client_context)
        client.user(user.login)
        client.pass_(user.password)
    except BaseException:
        client.close()
        raise
    return client


def open_imap(lab: Any, address: str, *, starttls: bool = True) -> Any:
    """Return an imaplib connection to `address`'s IMAP host, logged in as that user."""
    import imaplib

    user = lab.user(address)
    host = lab.imap_host(address)
    try:
        client = imaplib.IMAP4(host.address, host.ports["imap"], timeout=30)
    except (ConnectionRefusedError, TimeoutError) as exc:
        raise HostUnreachable(_("{name} did not accept the IMAP connection ({error}): is it down? Start it with "
                                "lab.host({name!r}).up()").format(name=host.name, error=type(exc).__name__)) from None
    if starttls:
        client.starttls(ssl_context=lab.services.client_context)
    if user.login.isascii() and user.password.isascii():
        client.login(user.login, user.password)
    else:  # imaplib sends LOGIN's strings as ASCII; AUTHENTICATE PLAIN carries UTF-8 (RFC 4616, josé@ejemplo.es)
        client.authenticate("PLAIN", lambda _: f"\0{user.login}\0{user.password}".encode())
    return client
