"""The message as the SMTP handlers pass it on (split from `mail/handlers.py`): the Received trace header
(RFC 5321 section 4.4), the Date and Message-ID a submission server completes (RFC 6409 section 8), DKIM signing
on a worker thread, the Return-Path framing of a delivered copy, and the link from a transaction to its trace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

from aiosmtpd.smtp import Session

from ..auth import policy
from ..net.smtp import LabSMTP
from .envelope_rules import peer_ip
from .postmaster import Postmaster

__all__ = ["complete_headers", "frame_for_delivery", "header_date", "header_value", "link_transaction",
           "prepare_submission", "received_header"]


def received_header(server: LabSMTP, session: Session, queue_id: str, recipients: list[str], now: float,
              peer_name: str, envelope_utf8: bool = False) -> bytes:
    """Build the RFC 5321 §4.4 trace header, with the RFC 3848 protocol keyword.

    `peer_name` is the client's forward-confirmed reverse-DNS name ("" when it has none)."""
    helo = session.host_name or "unknown"
    address = peer_ip(session)
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    if envelope_utf8:
        protocol = "UTF8SMTP"  # RFC 6531 section 3.7.3: the SMTPUTF8 variants of the RFC 3848 keywords
    if session.ssl is not None:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    reverse = peer_name or "unknown"  # the forward-confirmed name (iprev), as Postfix writes it
    rcpt = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    value = (
        f"from {helo} ({reverse} [{address}])\r\n\tby {server.hostname} (smtplab) with {protocol} id {queue_id}"
        f"{rcpt}; {header_date(now)}"
    )
    return f"Received: {value}\r\n".encode()


_last_date: tuple[int, str] = (-1, "")


def header_date(ts: float) -> str:
    """RFC 5322 date-time in local time, for Received and Date headers (remembered for the second)."""
    global _last_date
    second = int(ts)
    if _last_date[0] != second:
        _last_date = (second, format_datetime(datetime.fromtimestamp(second, tz=UTC).astimezone()))
    return _last_date[1]


def header_value(content: bytes, name: bytes) -> str:
    end = content.find(b"\r\n\r\n")  # the header alone is copied: a split would copy the whole body too
    head = content if end < 0 else content[:end]
    for line in head.split(b"\r\n"):
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("utf-8", "replace")
    return ""


def link_transaction(server: LabSMTP, session: Session, queue_id: str | None, content: bytes) -> None:
    """Say that this transaction (and so the DNS questions asked for it) was done for the queue id and
    the Message-ID: the correlation was set where the transaction started (smtplab.trace.ring)."""
    server.belongs_to(queue_id or "", header_value(content, b"message-id"))


def prepare_submission(lab: Postmaster, domain: str, host_name: str, original: bytes, now: float, header: bytes,
                        footer: bytes) -> tuple[bytes, bool]:
    """The submitted message as it is queued (on a worker thread): Date and Message-ID completed, signed with
    DKIM, the teaching footer after the signature if asked, the Received header on top; and whether it was signed."""
    content = complete_headers(original, now, host_name)
    signed = policy.sign(lab, domain, content)
    was_signed = signed is not content
    if footer:
        signed = signed.rstrip(b"\r\n") + footer
    return header + signed, was_signed


def frame_for_delivery(parts: tuple[bytes, bytes, bytes, bytes]) -> tuple[bytes, bytes]:
    """(the message as passed on, the message as stored with its Return-Path) from the MX's pieces."""
    return b"".join(parts[1:]), b"".join(parts)


def complete_headers(content: bytes, now: float, host_name: str) -> bytes:
    """Add Date and Message-ID when the client left them out (RFC 6409 §8.2-8.3)."""
    extra = b""
    if not header_value(content, b"date"):
        extra += f"Date: {header_date(now)}\r\n".encode()
    if not header_value(content, b"message-id"):
        extra += f"Message-ID: {make_msgid(domain=host_name)}\r\n".encode()
    return extra + content
