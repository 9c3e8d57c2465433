"""Delivery status notifications: the SMTP DSN extension's parameters (RFC 3461) and the notifications
themselves (RFC 3464 inside a RFC 6522 multipart/report).

At submission a client may ask, per recipient, to hear of success, delay and/or failure (NOTIFY), give
the address as it first wrote it (ORCPT), choose whether a failure returns the whole message or its
headers (RET) and give the transaction an id of its own (ENVID). The lab keeps them in the queue, passes
them on to a next hop that offers DSN, and the relay honours them when it writes notifications.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.utils import format_datetime, make_msgid
from typing import Any

__all__ = ["build_dsn", "DsnRequest", "NOTIFY_CHOICES", "xtext_encode", "xtext_decode", "parse_mail_parameters",
           "parse_rcpt_parameters", "DSN_KEYWORDS"]

NOTIFY_CHOICES = ("SUCCESS", "FAILURE", "DELAY")
DSN_KEYWORDS = ("RET", "ENVID", "NOTIFY", "ORCPT")
_ENVID_MAX = 100  # RFC 3461 section 4.4: at most 100 characters (after xtext decoding)
_ORCPT_MAX = 500  # RFC 3461 section 4.2


@dataclass(frozen=True)
class DsnRequest:
    """What a sender asked of notifications for one message (RFC 3461); empty values mean "not given"."""

    ret: str = ""  # FULL or HDRS
    envid: str = ""  # decoded from xtext
    notify: dict[str, str] = field(default_factory=dict)  # recipient -> "SUCCESS,DELAY" / "NEVER"
    orcpt: dict[str, str] = field(default_factory=dict)  # recipient -> "rfc822;bob@example.net" (decoded)


class DsnSyntaxError(ValueError):
    """A DSN parameter is malformed; its text is the SMTP reply to give (RFC 3461 section 5)."""


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 section 4's xtext ("+" and two upper-case hex digits for a special character)."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "+":
            digits = text[i + 1:i + 3]
            if len(digits) != 2 or any(d not in "0123456789ABCDEF" for d in digits):
                raise DsnSyntaxError(f"501 5.5.4 Bad xtext {text!r}: '+' must be followed by two upper-case hex "
                                     "digits (RFC 3461 section 4)")
            out.append(chr(int(digits, 16)))
            i += 3
            continue
        if not 33 <= ord(char) <= 126 or char == "=":
            raise DsnSyntaxError(f"501 5.5.4 Bad xtext {text!r}: {char!r} must be written as +{ord(char):02X} "
                                 "(RFC 3461 section 4)")
        out.append(char)
        i += 1
    return "".join(out)


def xtext_encode(text: str) -> str:
    """Encode `text` as RFC 3461 xtext (printable ASCII but "+" and "=" as is, the rest as +XX of UTF-8)."""
    out = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if 33 <= byte <= 126 and byte not in (0x2B, 0x3D) else f"+{byte:02X}")
    return "".join(out)


def _pairs(params: Sequence[str], keywords: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for param in params:
        keyword, _, value = param.partition("=")
        keyword = keyword.upper()
        if keyword not in keywords:
            continue
        if keyword in found:
            raise DsnSyntaxError(f"501 5.5.4 {keyword} given twice (RFC 3461 section 4)")
        if not value:
            raise DsnSyntaxError(f"501 5.5.4 {keyword} needs a value (RFC 3461 section 4)")
        found[keyword] = value
    return found


def parse_mail_parameters(params: Sequence[str]) -> tuple[str, str]:
    """Return (RET, ENVID) from MAIL FROM's parameters (as the client wrote them); raise DsnSyntaxError."""
    found = _pairs(params, ("RET", "ENVID"))
    ret = found.get("RET", "").upper()
    if ret and ret not in ("FULL", "HDRS"):
        raise DsnSyntaxError("501 5.5.4 RET must be FULL or HDRS (RFC 3461 section 4.3)")
    envid = xtext_decode(found["ENVID"]) if "ENVID" in found else ""
    if len(envid) > _ENVID_MAX:
        raise DsnSyntaxError(f"501 5.5.4 ENVID longer than {_ENVID_MAX} characters (RFC 3461 section 4.4)")
    return ret, envid


def parse_rcpt_parameters(params: Sequence[str]) -> tuple[str, str]:
    """Return (NOTIFY, ORCPT) from RCPT TO's parameters: NOTIFY normalised ("SUCCESS,DELAY", "NEVER"),
    ORCPT decoded ("rfc822;bob@example.net"); raise DsnSyntaxError."""
    found = _pairs(params, ("NOTIFY", "ORCPT"))
    notify = ""
    if "NOTIFY" in found:
        words = [w.strip().upper() for w in found["NOTIFY"].split(",")]
        if words == ["NEVER"]:
            notify = "NEVER"
        elif not words or len(set(words)) != len(words) or any(w not in NOTIFY_CHOICES for w in words):
            raise DsnSyntaxError("501 5.5.4 NOTIFY must be NEVER, or one or more of SUCCESS, FAILURE, DELAY "
                                 "separated by commas (RFC 3461 section 4.1)")
        else:
            notify = ",".join(w for w in NOTIFY_CHOICES if w in words)
    orcpt = ""
    if "ORCPT" in found:
        kind, semicolon, original = found["ORCPT"].partition(";")
        if not semicolon or not kind or not original:
            raise DsnSyntaxError("501 5.5.4 ORCPT must be address-type;xtext, e.g. ORCPT=rfc822;bob@example.net "
                                 "(RFC 3461 section 4.2)")
        decoded = xtext_decode(original)
        if len(decoded) > _ORCPT_MAX:
            raise DsnSyntaxError("501 5.5.4 ORCPT too long (RFC 3461 section 4.2)")
        orcpt = f"{kind.lower()};{decoded}"
    return notify, orcpt


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, tz=UTC))


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Mail Relayed: no further notification",
}
_EXPLANATIONS = {
    "failed": ["I'm sorry to have to inform you that your message could not",
               "be delivered to one or more recipients. It's attached below."],
    "delayed": ["Your message could not be delivered yet. The mail system will keep trying."],
    "delivered": ["Your message was successfully delivered to the destination(s) listed below."],
    "relayed": ["Your message was passed on to a mail server that does not send delivery notifications:",
                "there will be no further notice about the recipient(s) below."],
}
_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0", "delivered": "2.0.0", "relayed": "2.0.0"}


def build_dsn(
    *, reporting_host: str, original_sender: str, failed: Sequence[Any], original: bytes,
    arrival: float, now: float, queue_id: str, action: str = "failed", envid: str = "", ret: str = "",
) -> bytes:
    """Return the bytes of a DSN telling `original_sender` what became of the recipients in `failed`
    (RecipientStatus-like: address, last_reply, via, final_status, orcpt) - `action` is RFC 3464's
    failed, delayed, delivered or relayed."""
    report = EmailMessage()
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_host}>"
    report["To"] = original_sender
    report["Subject"] = _SUBJECTS[action]
    report["Date"] = _date(now)
    report["Message-ID"] = make_msgid(domain=reporting_host)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: never answer this automatically
    lines = [f"This is the mail system at host {reporting_host}.", "", *_EXPLANATIONS[action], ""]
    for r in failed:
        via = f" (reply from {r.via})" if r.via else ""
        lines.append(f"<{r.address}>{via}: {r.last_reply}")
    report.set_content("\n".join(lines) + "\n")

    # RFC 3464 section 2.2: the per-message fields, Original-Envelope-Id first when the sender gave one.
    per_message = Message()
    if envid:
        per_message["Original-Envelope-Id"] = envid
    per_message["Reporting-MTA"] = f"dns; {reporting_host}"
    per_message["X-Postfix-Queue-ID"] = queue_id
    per_message["Arrival-Date"] = _date(arrival)
    blocks = [per_message]
    for r in failed:
        block = Message()
        orcpt = getattr(r, "orcpt", "")
        if orcpt:  # RFC 3464 section 2.3.1: the ORCPT as given; absent when the sender gave none
            kind, _, original_address = orcpt.partition(";")
            block["Original-Recipient"] = f"{kind}; {original_address}"
        block["Final-Recipient"] = f"rfc822; {r.address}"
        block["Action"] = action
        block["Status"] = r.final_status or _DEFAULT_STATUS[action]
        if r.via:
            block["Remote-MTA"] = f"dns; {r.via}"
        code = r.last_reply.split(" ", 1)[0]
        if code.isdigit():
            block["Diagnostic-Code"] = f"smtp; {r.last_reply}"
        elif r.last_reply:
            block["Diagnostic-Code"] = f"X-smtplab; {r.last_reply}"
        block["Last-Attempt-Date"] = _date(now)
        blocks.append(block)
    status = EmailMessage()
    status.set_type("message/delivery-status")
    status.set_payload(list[Message | str](blocks))
    status["Content-Description"] = "Delivery report"
    report.make_mixed()
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")
    report.attach(status)
    if ret == "FULL" and action == "failed":
        # RFC 3461 section 4.3: RET=FULL returns the whole message, and only with a failure.
        whole = MIMEMessage(message_from_bytes(original, policy=policy.compat32))
        whole["Content-Description"] = "Undelivered message"
        report.attach(whole)  # type: ignore[arg-type]
    else:
        end = original.find(b"\r\n\r\n")  # only the header is copied, however big the message
        head = original if end < 0 else original[:end]
        headers = message_from_bytes(head + b"\r\n\r\n", policy=policy.compat32)
        returned = EmailMessage()
        returned.set_type("text/rfc822-headers")
        returned.set_payload(headers.as_string())
        returned["Content-Description"] = "Message headers" if action != "failed" else "Undelivered message headers"
        report.attach(returned)
    return report.as_bytes(policy=policy.SMTP)
