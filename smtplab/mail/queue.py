"""The relay queue's data: a message's recipients and where each stands, and what one attempt returned.

`Relay` (relay.py) keeps a `QueueEntry` per message and shows `QueueItem` snapshots (`lab.queue`);
`mx_client.py` returns an `Outcome` per delivery attempt. The retry schedule and the queue's limits are
the ones real MTAs use (Postfix's defaults).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..i18n import N_, _

__all__ = ["state_name", "STATE_NAMES", "RecipientStatus", "QueueItem", "QueueEntry", "Outcome", "TlsRequirement", "TlsPolicy", "RETRY_SCHEDULE",
           "MAX_QUEUE_LIFETIME", "DELAY_WARNING", "FINAL", "MAX_CONCURRENT_ATTEMPTS", "is_done"]

# Like real MTAs: retry soon, then back off (seconds of lab time after each failed attempt).
RETRY_SCHEDULE = (60, 300, 900, 3600, 3 * 3600, 6 * 3600)
MAX_QUEUE_LIFETIME = 5 * 86400  # Postfix's maximal_queue_lifetime default
DELAY_WARNING = 4 * 3600  # tell the sender once that mail is late (like Postfix's delay_warning_time)
FINAL = ("delivered", "bounced")
# A recipient's state as a learner reads it (the values of RecipientStatus.state stay these identifiers).
STATE_NAMES = {"queued": N_("queued"), "mx-lookup": N_("MX lookup"), "connecting": N_("connecting"),
               "delivered": N_("delivered"), "deferred": N_("deferred"), "bounced": N_("bounced")}


def state_name(state: str) -> str:
    """The name of a queue state ("deferred") in the learner's language."""
    return _(STATE_NAMES[state]) if state in STATE_NAMES else state

# Delivery attempts in flight at once (Postfix: default_destination_concurrency_limit = 20). Without a
# limit a burst of thousands of messages starts thousands of MX lookups at once and they time out.
MAX_CONCURRENT_ATTEMPTS = 10


@dataclass(frozen=True)
class RecipientStatus:
    """Where one recipient of a queued message stands."""

    address: str
    state: str = "queued"  # queued, mx-lookup, connecting, delivered, deferred, bounced
    attempts: int = 0
    last_reply: str = ""
    via: str = ""  # the MX host that gave the last reply
    final_status: str = ""  # RFC 3463 code reported in a DSN, e.g. 5.1.1
    notify: str = ""  # RFC 3461 NOTIFY asked at submission ("SUCCESS,DELAY,FAILURE", "NEVER"; "": not given)
    orcpt: str = ""  # RFC 3461 ORCPT, "rfc822;bob@example.net" (decoded from xtext); "": not given


@dataclass(frozen=True)
class QueueItem:
    """A snapshot of one message in the relay queue."""

    queue_id: str
    host: str  # the sending host (whose address the relay connects from)
    sender: str
    recipients: tuple[RecipientStatus, ...]
    created: float
    next_attempt: float
    message_id: str = ""

    @property
    def done(self) -> bool:
        return all(r.state in FINAL for r in self.recipients)


@dataclass
class QueueEntry:
    """One message in the queue as the relay keeps it (mutable; `snapshot()` is what others see)."""

    queue_id: str
    host: str
    sender: str
    recipients: list[RecipientStatus]
    created: float
    next_attempt: float
    message_id: str = ""
    attempts: int = 0
    warned: bool = False  # a "delayed" DSN was sent already
    ret: str = ""  # RFC 3461 RET: FULL or HDRS ("": not given)
    envid: str = ""  # RFC 3461 ENVID (decoded from xtext)
    running: bool = field(default=False, repr=False)  # claimed for an attempt
    # Notifications to make (queue id, action, recipients), written with the attempt's record.
    dsns: list[tuple[str, str, list[RecipientStatus]]] = field(default_factory=list, repr=False)

    def snapshot(self) -> QueueItem:
        return QueueItem(self.queue_id, self.host, self.sender, tuple(self.recipients), self.created,
                         self.next_attempt, self.message_id)


@dataclass(frozen=True)
class Outcome:
    """The reply one MX gave for each recipient in one attempt (or a connection failure)."""

    replies: dict[str, tuple[int, str]]
    connected: bool
    error: str = ""
    client: str = ""  # "address:port" of the relay's end of the connection, once connected
    dsn: bool = False  # the MX offered DSN (RFC 3461): the notification parameters went with the mail


class TlsRequirement(Protocol):
    """What a TLS policy (MTA-STS: smtplab/auth/mtasts.py, DANE: smtplab/auth/dane.py) asks of one MX."""

    summary: str  # for the trace
    refused: str  # a reply to defer with before connecting at all ("": go ahead)

    def refusal(self, tls: ssl.SSLSocket | None) -> str | None:
        """After EHLO with no STARTTLS offered (None), or after STARTTLS: a 4xx reply to defer with, or None."""


# (domain, exchange, source address, note) -> the requirement for that MX, or None. `note` puts what the policy
# look-up did (a fetch, a TLS-RPT report in testing mode) in the trace; its DNS questions and HTTPS fetches
# leave from `source`, the relay's own address.
TlsPolicy = Callable[[str, str, str, Callable[[str], None]], Awaitable[TlsRequirement | None]]


def is_done(entry: QueueEntry) -> bool:
    return all(r.state in FINAL for r in entry.recipients)
