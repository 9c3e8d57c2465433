"""What an attempt's results do to a queue entry: defer, bounce, note the notifications (DSNs) to send.

The `Relay`'s state changes, as a mixin of it (`mail/relay.py`): a deferral schedules the next attempt on
the virtual clock or, past the queue lifetime, becomes a bounce; a bounce or a delay notes a delivery status
notification (RFC 3461 §4.1 NOTIFY, RFC 3464) that the relay writes with the attempt's record; every change
is a `QueueChange` in the trace.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..i18n import N_, lazy
from ..trace.events import QueueChange
from ..trace.ring import Trace
from .dsn import build_dsn
from .queue import QueueEntry, RecipientStatus
from .spool import Spool

__all__ = ["Outcomes", "status_of"]


class Outcomes:
    """The relay's state changes (a mixin of `Relay`, which sets these attributes)."""

    spool: Spool
    retry_schedule: tuple[float, ...]
    max_lifetime: float
    delay_warning: float
    _trace: Trace
    _now: Callable[[], float]
    _lock: threading.Lock
    _corrs: dict[str, str]  # queue id -> correlation id of its attempt in progress

    def _set(self, entry: QueueEntry, addresses: list[str], **changes: Any) -> None:
        with self._lock:
            entry.recipients = [replace(r, **changes) if r.address in addresses else r for r in entry.recipients]

    def _defer(self, entry: QueueEntry, addresses: list[str], reply: str, via: str) -> list[RecipientStatus]:
        """Schedule the next attempt; past the queue lifetime, bounce instead (returned for the DSN)."""
        now = self._now()
        if now - entry.created >= self.max_lifetime:
            return self._bounce(entry, addresses, f"{reply} (gave up after {entry.attempts} attempts, "
                                f"{_duration(now - entry.created)} in the queue)", status_of(reply[4:], "4.4.7"), via)
        index = min(entry.attempts - 1, len(self.retry_schedule) - 1)
        entry.next_attempt = now + self.retry_schedule[max(index, 0)]
        with self._lock:
            entry.recipients = [
                replace(r, state="deferred", last_reply=reply)
                if r.address in addresses else r for r in entry.recipients
            ]
        self._event(entry, lazy(N_("deferred {recipients}: {reply}; next attempt in {delay} (lab time)"),
                                recipients=", ".join(addresses), reply=reply,
                                delay=_duration(self.retry_schedule[max(index, 0)])), "deferred",
                    recipients=tuple(addresses), reply=reply)
        late = [r for r in entry.recipients if r.address in addresses]
        # RFC 3461 section 4.1: NOTIFY=DELAY asks to hear of a delay: at the first deferral. Without NOTIFY
        # the lab does as Postfix (delay_warning_time): one warning once the message is hours late.
        due = self.delay_warning and now - entry.created >= self.delay_warning
        tell = [r for r in late if "DELAY" in r.notify.split(",") or (not r.notify and due)]
        if tell and not entry.warned and entry.sender:
            entry.warned = True
            self._want_dsn(entry, [replace(r, final_status=_transient_status(reply)) for r in tell], "delayed")
        return []

    def _bounce(self, entry: QueueEntry, addresses: list[str], reply: str, status: str, via: str) -> list[RecipientStatus]:
        with self._lock:
            entry.recipients = [
                replace(r, state="bounced", last_reply=reply, via=via or r.via,
                        final_status=status)
                if r.address in addresses else r for r in entry.recipients
            ]
            out = [r for r in entry.recipients if r.address in addresses]
        self._event(entry, lazy(N_("bounced {recipients}: {reply}"), recipients=", ".join(addresses), reply=reply), "bounced",
                    recipients=tuple(addresses),
                    mx=via, reply=reply)
        return out

    def _want_dsn(self, entry: QueueEntry, recipients: list[RecipientStatus], action: str) -> None:
        """Note a delivery status notification to make for `recipients` (written with the attempt's record).

        Its queue id is derived from the message's and the recipients': made again after a crash (the
        attempt that made it was not recorded), it is the same notification, and is queued only once.
        """
        if not entry.sender:  # RFC 5321 section 6.1 / RFC 3464: a bounce is never bounced
            if action == "failed":
                self._event(entry, lazy(N_("bounce of a bounce (null sender): dropped, as RFC 3464 requires")), "bounce-dropped")
            return
        if action == "failed":  # RFC 3461 section 4.1: NOTIFY=NEVER, or a list without FAILURE, says no
            before = recipients
            recipients = [r for r in recipients if not r.notify or "FAILURE" in r.notify.split(",")]
            if not recipients:
                self._event(entry, lazy(N_("no failure notification: the sender asked for none (NOTIFY)")), "bounce-dropped",
                            recipients=tuple(r.address for r in before))
                return
        digest = hashlib.sha256(",".join(sorted(r.address.lower() for r in recipients)).encode()).hexdigest()[:6]
        queue_id = f"{entry.queue_id}-{action[0].upper()}{digest.upper()}"
        entry.dsns.append((queue_id, action, recipients))
        addresses = tuple(r.address for r in recipients)
        if action == "delayed":
            self._event(entry, lazy(N_("warning sent to <{sender}>: still undelivered after {delay}, retrying"),
                                    sender=entry.sender, delay=_duration(self._now() - entry.created)), "warning-sent",
                        recipients=addresses)
        else:
            self._event(entry, lazy(N_("delivery status notification ({action}) sent to <{sender}> from <> (null "
                                       "sender): {recipients}"), action=action, sender=entry.sender,
                                    recipients=", ".join(addresses)), "dsn-sent", recipients=addresses)

    def _render_dsns(self, entry: QueueEntry, wanted: list[tuple[str, str, list[RecipientStatus]]]
                     ) -> list[tuple[str, bytes]]:
        """Build the notifications (a worker thread: parsing and copying a big message takes a while)."""
        content = self.spool.read(entry.queue_id)
        return [(queue_id, build_dsn(
            reporting_host=entry.host, original_sender=entry.sender, failed=recipients, original=content,
            arrival=entry.created, now=self._now(), queue_id=entry.queue_id, action=action, envid=entry.envid,
            ret=entry.ret)) for queue_id, action, recipients in wanted]

    def _event(self, entry: QueueEntry, text: str, state: str, **fields: Any) -> None:
        ids = tuple(i for i in (entry.queue_id, entry.message_id) if i)
        # The attempt's correlation, or none: a bounce queued during another message's attempt is its own.
        self._trace.record("queue", "queue", entry.host, text, message_ids=ids, peer=entry.host,
                           payload=QueueChange(entry.queue_id, state, **fields),
                           corr=self._corrs.get(entry.queue_id, ""))



def _transient_status(reply: str) -> str:
    """The RFC 3463 status of a deferral: the reply's own 4.X.X, else 4.5.0 (a protocol error was met)."""
    status = status_of(reply[4:], "4.0.0")
    return status if status.startswith("4.") else "4.5.0"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def status_of(text: str, default: str) -> str:
    """The RFC 3463 enhanced status code that starts `text` ("5.1.1 no such user"), else `default`."""
    parts = text.split(" ", 1)[0].split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return ".".join(parts)
    return default
