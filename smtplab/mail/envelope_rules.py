"""The envelope rules both SMTP handlers share (split from `mail/handlers.py`): which MAIL and RCPT
addresses are acceptable (SMTPUTF8, RFC 6531; DSN parameters, RFC 3461), who the client is, and the reply to
a command the server could not complete.
"""

from __future__ import annotations

import errno
from typing import Any

from aiosmtpd.smtp import Envelope, Session

from ..auth import policy
from ..net import dsn_parameters, replies
from ..net.smtp import LabSMTP

__all__ = ["STORAGE_FULL", "accept_recipient", "accept_sender", "failure_reply", "peer_ip", "split_address",
           "unique_recipients", "utf8_refusal"]

# The disk (or the user's quota) is full: RFC 5321 section 4.2.2's 452, RFC 3463's X.3.1 "mail system full".
STORAGE_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def utf8_refusal(envelope: Envelope, address: str) -> str | None:
    """Refuse a non-ASCII address unless MAIL asked for SMTPUTF8 (RFC 6531 section 3.4), and any that is not UTF-8."""
    if address.isascii():
        return None
    try:
        address.encode("utf-8")  # aiosmtpd kept undecodable bytes as lone surrogates
    except UnicodeEncodeError:
        return replies.NOT_UTF8
    return None if envelope.smtp_utf8 else replies.NEEDS_SMTPUTF8


async def refusal_before_rules(server: Any, envelope: Envelope, command: str, address: str) -> str | None:
    """What both kinds of server answer at MAIL or RCPT before their own rules: an injected fault, then a
    non-ASCII address without SMTPUTF8."""
    fault = await server.fault_point(command, address if command == "RCPT" else "")  # a fault names recipients
    return fault or utf8_refusal(envelope, address)


def failure_reply(error: BaseException) -> str:
    """The reply for a command the server could not complete: what the client should do, never why inside."""
    if isinstance(error, OSError) and error.errno in STORAGE_FULL:  # nothing kept: the client retries
        return replies.STORAGE_FULL
    if isinstance(error, OSError) and error.errno == errno.EFBIG:  # larger than a file may be here
        return replies.TOO_BIG_FOR_SYSTEM
    if isinstance(error, policy.UnparsableMessage):  # RFC 3463 X.6.0: the same bytes would fail again
        return replies.UNPARSABLE
    return replies.LOCAL_ERROR


def peer_ip(session: Session) -> str:
    """The client's address: aiosmtpd types `Session.peer` as a string, but it is the socket's (address, port)."""
    peer: Any = session.peer
    return str(peer[0]) if peer else "unknown"


def split_address(address: str) -> tuple[str, str]:
    """Split a mailbox into local part and domain ("" when there is none).

    A quoted local part may hold an @ itself (RFC 5321 section 4.1.2): "user@elsewhere"@example.net is
    a mailbox at example.net, and "user@elsewhere" alone has no domain at all.
    """
    local, at, domain = address.rpartition("@")
    if not at or '"' in domain:
        return address, ""
    return local, domain


def unique_recipients(addresses: list[str]) -> list[str]:
    """Drop repeated recipients (compared without case): one copy per mailbox, as Postfix's cleanup does."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def accept_sender(server: LabSMTP, envelope: Envelope, address: str, options: list[str]) -> str:
    try:  # RFC 3461 RET and ENVID, in the client's case (aiosmtpd upper-cases `options`)
        ret, envid = dsn_parameters.parse_mail_parameters(server.command_params)
    except dsn_parameters.DsnSyntaxError as exc:
        return str(exc)
    envelope.smtplab_dsn = dsn_parameters.DsnRequest(ret, envid)  # type: ignore[attr-defined]
    envelope.mail_from = address
    envelope.mail_options.extend(options)
    return replies.OK_SENDER


def accept_recipient(server: LabSMTP, envelope: Envelope, address: str, options: list[str]) -> str:
    try:  # RFC 3461 NOTIFY and ORCPT
        notify, orcpt = dsn_parameters.parse_rcpt_parameters(server.command_params)
    except dsn_parameters.DsnSyntaxError as exc:
        return str(exc)
    request = getattr(envelope, "smtplab_dsn", None)
    if request is not None:
        if notify:
            request.notify.setdefault(address, notify)
        if orcpt:
            request.orcpt.setdefault(address, orcpt)
    envelope.rcpt_tos.append(address)
    envelope.rcpt_options.extend(options)
    return replies.OK_RECIPIENT
