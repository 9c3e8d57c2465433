"""Delivery status notifications: the message the relay sends back to the sender (RFC 3464 inside a
RFC 6522 multipart/report) when a recipient's mail was delivered, is delayed or failed, as the submission's
DSN parameters asked (RFC 3461; parsed in smtplab/net/dsn_parameters.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.utils import format_datetime, make_msgid
from typing import Any

__all__ = ["build_dsn"]

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
