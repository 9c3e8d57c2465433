"""Read a message's Received headers as the route it took (RFC 5321 section 4.4).

Each relay prepends one Received header, so the newest is on top: reading them bottom-up retraces
the journey from the sender's mail client to the recipient's mailbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime

__all__ = ["Hop", "received_hops"]

_FROM = re.compile(r"\bfrom\s+(\S+)(?:\s+\(([^)]*)\))?", re.I)
_BY = re.compile(r"\bby\s+(\S+)", re.I)
_WITH = re.compile(r"\bwith\s+(\S+)", re.I)
_ID = re.compile(r"\bid\s+([^\s;]+)", re.I)
_FOR = re.compile(r"\bfor\s+<?([^\s>;]+)>?", re.I)
_ADDRESS = re.compile(r"\[([0-9A-Fa-f:.]+)\]")


@dataclass(frozen=True)
class Hop:
    """One step of a message's route: who handed it to whom, how and when."""

    from_name: str  # what the client said in EHLO/HELO
    from_address: str  # the client's IP address as the server saw it
    by: str  # the server that received it
    protocol: str  # SMTP / ESMTP / ESMTPS / ESMTPSA (RFC 3848), UTF8SMTP / UTF8SMTPS / UTF8SMTPSA (RFC 6531)
    id: str  # the receiving server's queue id
    recipient: str
    when: datetime | None

    @property
    def encrypted(self) -> bool:
        return self.protocol.upper() in ("ESMTPS", "ESMTPSA", "UTF8SMTPS", "UTF8SMTPSA", "SMTPS")

    @property
    def authenticated(self) -> bool:
        return self.protocol.upper().endswith("A")

    def __str__(self) -> str:
        when = f"{self.when:%H:%M:%S}" if self.when else "?"
        return f"{when}  {self.from_name} [{self.from_address}] -> {self.by}  with {self.protocol}  id {self.id}"


def received_hops(message: Message) -> list[Hop]:
    """Return the hops of `message`, oldest first (the bottom Received header first)."""
    hops = []
    for header in reversed(message.get_all("Received") or []):
        text = " ".join(str(header).split())
        clause, _, date = text.rpartition(";")
        if not clause:
            clause, date = text, ""
        from_match = _FROM.search(clause)
        comment = from_match.group(2) or "" if from_match else ""
        address = _ADDRESS.search(comment)
        try:
            when = parsedate_to_datetime(date.strip()) if date.strip() else None
        except (TypeError, ValueError):
            when = None
        hops.append(Hop(
            from_name=from_match.group(1) if from_match else "",
            from_address=address.group(1) if address else "",
            by=_group(_BY, clause), protocol=_group(_WITH, clause), id=_group(_ID, clause),
            recipient=_group(_FOR, clause), when=when,
        ))
    return hops


def _group(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    return match.group(1) if match else ""
