"""Delivery status notifications (bounces), RFC 3464 inside a RFC 6522 multipart/report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from typing import Any

__all__ = ["build_dsn"]


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, tz=timezone.utc))


def build_dsn(
    *, reporting_host: str, original_sender: str, failed: Sequence[Any], original: bytes,
    arrival: float, now: float, queue_id: str, action: str = "failed",
) -> bytes:
    """Return the bytes of a DSN telling `original_sender` which recipients failed and why."""
    report = EmailMessage()
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_host}>"
    report["To"] = original_sender
    report["Subject"] = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail (still being retried)"
    report["Date"] = _date(now)
    report["Message-ID"] = make_msgid(domain=reporting_host)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: never answer this automatically
    lines = [
        f"This is the mail system at host {reporting_host}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
    ] if action == "failed" else [
        f"This is the mail system at host {reporting_host}.",
        "",
        "Your message could not be delivered yet. The mail system will keep trying.",
        "",
    ]
    for r in failed:
        via = f" (reply from {r.via})" if r.via else ""
        lines.append(f"<{r.address}>{via}: {r.last_reply}")
    report.set_content("\n".join(lines) + "\n")

    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_host}"
    per_message["X-Postfix-Queue-ID"] = queue_id
    per_message["Arrival-Date"] = _date(arrival)
    blocks = [per_message]
    for r in failed:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {r.address}"
        block["Original-Recipient"] = f"rfc822; {r.address}"
        block["Action"] = action
        block["Status"] = r.final_status or ("5.0.0" if action == "failed" else "4.0.0")
        if r.via:
            block["Remote-MTA"] = f"dns; {r.via}"
        code = r.last_reply.split(" ", 1)[0]
        if code.isdigit():
            block["Diagnostic-Code"] = f"smtp; {r.last_reply}"
        else:
            block["Diagnostic-Code"] = f"X-smtplab; {r.last_reply}"
        block["Last-Attempt-Date"] = _date(now)
        blocks.append(block)
    status = EmailMessage()
    status.set_type("message/delivery-status")
    status.set_payload(blocks)
    status["Content-Description"] = "Delivery report"
    report.make_mixed()
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")
    report.attach(status)
    headers = message_from_bytes(original.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=policy.compat32)
    returned = EmailMessage()
    returned.set_type("text/rfc822-headers")
    returned.set_payload(headers.as_string())
    returned["Content-Description"] = "Undelivered message headers"
    report.attach(returned)
    return report.as_bytes(policy=policy.SMTP)
