"""The relay queue: store, look up MX, forward over real SMTP, retry on the virtual clock, bounce.

Each accepted message is written to the spool (lab directory) before the submission server says 250,
so nothing accepted is lost across a stop. Recipients carry their own state:
queued -> mx-lookup -> connecting -> delivered | deferred (-> retried) | bounced.
MX choice follows RFC 5321 §5.1: lowest preference first, equal preferences in random order, next MX
on connection failure or a 4xx; no MX means the domain's own A record (implicit MX); a Null MX
(RFC 7505) or NXDOMAIN bounces at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import hashlib
import heapq
import ipaddress
import itertools
import random
import re
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import dns.asyncresolver

from ..disk import DiskThread
from ..errors import DnsLookupError
from ..net.dns_lookup import MXRecord, lookup_mx_async, resolve_a
from ..net.dsn_parameters import DsnRequest
from ..trace.events import QueueChange
from ..trace.ring import Trace, correlated
from .dsn import build_dsn
from .ledger import DeliveryLedger
from .mx_client import PROTOCOL_ERROR_NOTE, dsn_parameters, is_protocol_error, quit_all, smtp_deliver
from .queue import (
    DELAY_WARNING,
    FINAL,
    MAX_CONCURRENT_ATTEMPTS,
    MAX_QUEUE_LIFETIME,
    RETRY_SCHEDULE,
    Outcome,
    QueueEntry,
    QueueItem,
    RecipientStatus,
    TlsPolicy,
    TlsRequirement,
    is_done,
)
from .spool import Spool

__all__ = ["Relay"]

class Relay:
    """The outbound queue of the whole lab (each entry remembers which host sends it)."""

    def __init__(
        self,
        spool: Path,
        *,
        trace: Trace,
        now: Callable[[], float],
        resolver: Callable[[], dns.asyncresolver.Resolver],
        host_address: Callable[[str], str],
        smtp_port: Callable[[str, str], int | None],
        client_context: ssl.SSLContext,
        disk: DiskThread,
        ledger: DeliveryLedger,
        smtp_pool: concurrent.futures.Executor | None = None,
        tls_policy: TlsPolicy | None = None,
        route: Callable[[str, int], tuple[str, int]] | None = None,
    ) -> None:
        self.spool = Spool(spool, disk, ledger)
        self._trace = trace
        self._now = now
        self._resolver = resolver
        self._host_address = host_address
        self._smtp_port = smtp_port
        self._tls = client_context
        # The relay's end of each open connection ("address:port") -> the queue id its transaction carries,
        # read by the lab's MX (same process) for the delivery ledger: see `queue_id_for`.
        self._links: dict[str, str] = {}
        self._disk = disk  # spool writes from the loop go there
        self._smtp_pool = smtp_pool  # where the blocking SMTP client runs (None: the default executor)
        self._tls_policy = tls_policy  # MTA-STS / DANE: what TLS an MX must do (None: opportunistic only)
        self._route = route  # the path to an address (a man-in-the-middle on it, in the downgrade lesson)
        self._entries: dict[str, QueueEntry] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._active: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        # Entries waiting for their next attempt, as a heap of (next_attempt, order, queue_id): finding
        # what is due must not scan every message the queue ever held (thousands under load).
        self._timeline: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._claimed: list[QueueEntry] = []  # claimed (running) but their attempt task not started yet
        self._busy = 0  # entries claimed and not finished
        # Open connections to MX hosts between two messages, by (sending host, address, port): under
        # load one connection carries many messages, as Postfix's connection cache does.
        self._idle: dict[tuple[str, str, int], list[smtplib.SMTP]] = {}
        self._corrs: dict[str, str] = {}  # queue id -> correlation id of its attempt in progress
        self.concurrency = MAX_CONCURRENT_ATTEMPTS
        self._stopping = False
        self._settled = threading.Condition(self._lock)
        self.retry_schedule = RETRY_SCHEDULE
        self.max_lifetime = MAX_QUEUE_LIFETIME
        self.delay_warning = DELAY_WARNING

    # --- life cycle (on the lab loop) ---
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        for entry in await self._disk.run(self.spool.recover):
            with self._lock:
                self._entries[entry.queue_id] = entry
                self._wait_until(entry)
            self._event(entry, f"resumed from the spool ({entry.queue_id}.json)", "resumed")
        self._scheduler = asyncio.create_task(self._run_scheduler())

    async def stop(self) -> None:
        # Python 3.11's wait_for() can swallow a cancellation that coincides with its wake-up (an
        # attempt cancelled here kicks the scheduler): the flag ends the scheduler loop regardless.
        self._stopping = True
        tasks = list(self._active) + ([self._scheduler] if self._scheduler else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler = None
        for clients in self._idle.values():
            for client in clients:
                client.close()
        self._idle.clear()

    # --- intake (called on the loop by the submission handler) ---
    def enqueue(self, host: str, sender: str, recipients: list[str], content: bytes, queue_id: str,
                message_id: str = "", *, dsn: DsnRequest | None = None) -> None:
        """Queue a message, writing it to the spool on this thread (not the loop's: see enqueue_async)."""
        entry = self._new_entry(host, sender, recipients, queue_id, message_id, dsn)
        self.spool.write(entry, content)
        self._register(entry)

    async def enqueue_async(self, host: str, sender: str, recipients: list[str], content: bytes, queue_id: str,
                            message_id: str = "", *, dsn: DsnRequest | None = None) -> None:
        """Queue a message, writing the spool from a disk thread; returns once it is written."""
        entry = self._new_entry(host, sender, recipients, queue_id, message_id, dsn)
        await self._disk.run(self.spool.write, entry, content, self._disk.fsync_later)
        self._register(entry)

    def _new_entry(self, host: str, sender: str, recipients: list[str], queue_id: str, message_id: str,
                   dsn: DsnRequest | None = None) -> QueueEntry:
        now = self._now()
        dsn = dsn or DsnRequest()
        # RFC 3461 section 4.2: without an ORCPT from the client, the MTA may add the address of the RCPT
        # it received; the DSN's Original-Recipient then shows it (as Postfix's do).
        statuses = [RecipientStatus(r, notify=dsn.notify.get(r, ""), orcpt=dsn.orcpt.get(r) or f"rfc822;{r}")
                    for r in recipients]
        return QueueEntry(queue_id, host, sender, statuses, now, now, message_id, ret=dsn.ret, envid=dsn.envid)

    def queue_id_for(self, client: str) -> str | None:
        """The queue id of the transaction the relay runs on its connection from `client` ("address:port").

        How the lab's MX learns which queue entry it is receiving, for its delivery ledger: the relay and
        the MX live in one process, so this lab-internal link needs nothing on the wire (the wire stays
        exactly what a real MTA sends), and no other client can forge it - a header such as Received's
        `id` could be written by anyone, and would let them make the MX skip a real delivery.
        """
        return self._links.get(client)

    def _register(self, entry: QueueEntry) -> None:
        host, sender, queue_id = entry.host, entry.sender, entry.queue_id
        recipients = [r.address for r in entry.recipients]
        with self._lock:
            self._entries[queue_id] = entry
            self._wait_until(entry)
        self._event(entry, f"queued on {host}: from <{sender}> to {', '.join(recipients)}", "queued",
                    recipients=tuple(recipients))
        self._poke()

    # --- reading ---
    def items(self) -> list[QueueItem]:
        with self._lock:
            return [e.snapshot() for e in self._entries.values()]

    def get(self, queue_id: str) -> QueueItem | None:
        with self._lock:
            entry = self._entries.get(queue_id)
            return entry.snapshot() if entry else None

    def wait_settled(self, queue_id: str | None = None, timeout: float = 30.0) -> bool:
        """Block until no attempt is running (for `queue_id`, or for all); False on timeout."""

        def settled() -> bool:  # called with the lock held
            now = self._now()
            if queue_id:
                e = self._entries.get(queue_id)
                return e is None or (not e.running and (e.next_attempt > now or is_done(e)))
            return self._busy == 0 and not (self._timeline and self._timeline[0][0] <= now)

        with self._settled:
            return self._settled.wait_for(settled, timeout=timeout)

    # --- clock ---
    def clock_advanced(self) -> None:
        """Run everything that became due; blocks the caller (not the loop) until it settled."""
        self._poke()
        if self._loop is not None and not _on_loop(self._loop):
            self.wait_settled(timeout=60)

    def _poke(self) -> None:
        if self._loop is None or self._wake is None:
            return
        if _on_loop(self._loop):
            self._kick()
        else:
            # Mark due entries as running before returning, so wait_settled cannot pass too early.
            self._claim_due()
            self._loop.call_soon_threadsafe(self._kick)

    def _wait_until(self, entry: QueueEntry) -> None:
        """Put `entry` on the timeline for its next attempt (with the lock held)."""
        heapq.heappush(self._timeline, (entry.next_attempt, next(self._order), entry.queue_id))

    def _claim_due(self) -> None:
        """Mark every entry whose attempt is due as running; the scheduler starts their tasks."""
        now = self._now()
        with self._lock:
            while self._timeline and self._timeline[0][0] <= now:
                when, _tiebreak, queue_id = heapq.heappop(self._timeline)
                e = self._entries.get(queue_id)
                if e is None or e.running or e.next_attempt != when or is_done(e):
                    continue  # a stale timeline record
                e.running = True
                self._busy += 1
                self._claimed.append(e)

    def _kick(self) -> None:
        assert self._wake is not None
        self._wake.set()

    async def _run_scheduler(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._claim_due()
            with self._lock:
                to_start, self._claimed = self._claimed, []
                next_due = self._timeline[0][0] if self._timeline else None
            for entry in to_start:
                task = asyncio.create_task(self._attempt(entry))
                self._active.add(task)
                task.add_done_callback(self._active.discard)
            delay = max(0.0, next_due - self._now()) if next_due is not None else None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    # --- one delivery attempt ---
    async def _attempt(self, entry: QueueEntry) -> None:
        loop = asyncio.get_running_loop()
        try:
            assert self._slots is not None
            async with self._slots:
                # One unit of work per attempt, done for this message: its DNS questions, its connections
                # and the MX's side of them carry it (smtplab.trace.ring), so they are this message's exactly.
                corr = self._trace.new_correlation("relay", entry.queue_id, entry.message_id)
                self._corrs[entry.queue_id] = corr
                try:
                    with correlated(self._trace, corr):
                        await self._deliver(entry)
                finally:
                    self._corrs.pop(entry.queue_id, None)
            await self._record(entry)
            if self._busy == 1 and self._idle:  # the last attempt in flight: nothing will reuse them
                idle = [c for clients in self._idle.values() for c in clients]
                self._idle.clear()
                await loop.run_in_executor(self._smtp_pool, quit_all, idle)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose a message to a bug: defer it instead
            failed = self._defer(entry, [r.address for r in entry.recipients if r.state not in FINAL],
                                 f"451 4.3.0 internal relay error: {exc!r}", "")
            if failed:
                self._want_dsn(entry, failed, "failed")
            try:
                await self._record(entry)
            except Exception:  # not recorded: after a restart the attempt is made again (the ledger
                pass  # keeps a copy already made from being made twice)
        finally:
            with self._settled:
                entry.running = False
                self._busy -= 1
                if not is_done(entry):
                    self._wait_until(entry)
                self._settled.notify_all()
            self._kick()

    async def _record(self, entry: QueueEntry) -> None:
        """Write the attempt's outcome: the notifications it made, then the entry's state (or, once every
        recipient is final, remove its spool files and ledger notes). DSNs are built on a worker thread
        (RET=FULL copies the whole message) and written by the disk thread: never on the loop."""
        wanted, entry.dsns = entry.dsns, []
        made: list[tuple[str, bytes]] = []
        if wanted:
            made = await asyncio.get_running_loop().run_in_executor(None, self._render_dsns, entry, wanted)
        for dsn_entry in await self._disk.run(self._commit, entry, made):
            self._register(dsn_entry)
    async def _deliver(self, entry: QueueEntry) -> None:
        entry.attempts += 1
        # A spool copy may be megabytes: read on a worker thread, the loop serves everyone else meanwhile.
        content = await asyncio.get_running_loop().run_in_executor(None, self.spool.read, entry.queue_id)
        pending = [r.address for r in entry.recipients if r.state not in FINAL]
        with self._lock:
            entry.recipients = [replace(r, attempts=r.attempts + 1) if r.address in pending else r
                                for r in entry.recipients]
        by_domain: dict[str, list[str]] = {}
        for address in pending:
            by_domain.setdefault(address.rpartition("@")[2].lower(), []).append(address)
        bounced: list[RecipientStatus] = []
        delivered: list[str] = []  # accepted by a next hop that offers DSN: the lab MX, the final one
        relayed: list[str] = []  # accepted by a next hop without DSN: nothing more will be heard
        for domain, addresses in by_domain.items():
            self._set(entry, addresses, state="mx-lookup")
            try:
                targets = await self._targets(entry, domain)
            except DnsLookupError as exc:
                text = str(exc)
                # The lab DNS is authoritative for the whole lab world: a name it does not know
                # (NXDOMAIN) or refuses (REFUSED: outside its zones, e.g. gmail.com) will not appear later.
                if exc.rcode in ("NXDOMAIN", "REFUSED"):
                    bounced += self._bounce(entry, addresses, f"550 5.1.2 {domain}: {text}", "5.1.2", "")
                else:
                    bounced += self._defer(entry, addresses, f"451 4.4.3 {text}", "")
                continue
            if isinstance(targets, str):  # a permanent routing failure, e.g. Null MX
                bounced += self._bounce(entry, addresses, targets, "5.1.10", "")
                continue
            remaining = list(addresses)
            last_error = ""
            for exchange, address in targets:
                if not remaining:
                    break
                self._set(entry, remaining, state="connecting", via=exchange)
                outcome = await self._try_mx(entry, exchange, address, remaining, content)
                if not outcome.connected:
                    last_error = outcome.error
                    continue
                still: list[str] = []
                for rcpt in remaining:
                    code, text = outcome.replies.get(rcpt, (451, "4.3.0 no reply for this recipient"))
                    reply = f"{code} {text}"
                    if 200 <= code < 300:
                        self._set(entry, [rcpt], state="delivered", last_reply=reply, via=exchange)
                        self._event(entry, f"delivered to {rcpt} by {exchange}: {reply}", "delivered",
                                    recipients=(rcpt,), mx=exchange, reply=reply)
                        if outcome.dsn:
                            delivered.append(rcpt)
                        else:
                            relayed.append(rcpt)
                    elif is_protocol_error(code, text):
                        # Not a verdict on the recipient or the message: the conversation went wrong
                        # (RFC 5321 section 4.2.4/4.3.2 sequence and syntax replies). Nothing to bounce.
                        still.append(rcpt)
                        last_error = f"{reply} ({PROTOCOL_ERROR_NOTE})"
                        self._set(entry, [rcpt], last_reply=last_error, via=exchange)
                    elif 500 <= code < 600:
                        bounced += self._bounce(entry, [rcpt], reply, _status_of(text, "5.0.0"), exchange)
                    else:
                        still.append(rcpt)
                        last_error = reply
                        self._set(entry, [rcpt], last_reply=reply, via=exchange)
                remaining = still
            if remaining:
                bounced += self._defer(entry, remaining, last_error or "451 4.4.1 no MX host answered", "")
        if bounced:
            self._want_dsn(entry, bounced, "failed")
        # RFC 3461 section 6.2: a success notification only where NOTIFY asked for it. The lab's MX hosts
        # offer DSN and deliver into the mailbox themselves: their 250 is the final delivery ("delivered",
        # RFC 3464 section 2.3.3), which the relay reports for them. A next hop without DSN ends the
        # chain of notifications: "relayed" (RFC 3461 section 4.1).
        for action, addresses in (("delivered", delivered), ("relayed", relayed)):
            asked = [r for r in entry.recipients if r.address in addresses and "SUCCESS" in r.notify.split(",")]
            if asked:
                self._want_dsn(entry, asked, action)

    async def _targets(self, entry: QueueEntry, domain: str) -> list[tuple[str, str]] | str:
        """Return (exchange, address) pairs in the order to try, or a reason to bounce now."""
        source = self._host_address(entry.host)
        resolver = self._resolver()
        records = await lookup_mx_async(domain, resolver, source=source)
        if not records:  # RFC 5321 §5.1: no MX, use the domain's address (implicit MX)
            addresses = await resolve_a(domain, resolver, source=source)
            records = [MXRecord(0, domain, tuple(addresses))] if addresses else []
        if any(r.is_null for r in records):
            self._event(entry, f"MX lookup {domain}: Null MX (RFC 7505): the domain accepts no mail", "mx-lookup",
                        exchanges=((".", 0),))
            return f"556 5.1.10 {domain} publishes a Null MX (RFC 7505): it accepts no mail"
        if not records:
            self._event(entry, f"MX lookup {domain}: no MX and no address record", "mx-lookup")
            return f"550 5.1.2 {domain} has no MX and no address: mail cannot be routed"
        ordered: list[MXRecord] = []
        for pref in sorted({r.preference for r in records}):
            same = [r for r in records if r.preference == pref]
            random.shuffle(same)  # RFC 5321 §5.1: spread load over equal preferences
            ordered += same
        self._event(entry, f"MX lookup {domain}: " + ", ".join(f"{r.exchange} ({r.preference})" for r in ordered),
                    "mx-lookup", exchanges=tuple((r.exchange, r.preference) for r in ordered))
        return [(r.exchange, a) for r in ordered for a in (r.addresses or ("",))]

    async def _try_mx(self, entry: QueueEntry, exchange: str, address: str, rcpts: list[str],
                      content: bytes) -> Outcome:
        port = self._smtp_port(exchange, address) if address and _is_loopback(address) else None
        if port is None:
            # Only lab hosts (all on loopback) are ever connected to: mail never leaves the machine.
            error = f"{exchange} has no address" if not address else f"nothing listens for SMTP on {address}"
            # RFC 3463: X.4.4 "unable to route" (no address for the MX); X.4.1 "no answer from host".
            reply = f"451 4.4.4 {error}" if not address else f"451 4.4.1 {error}"
            self._event(entry, f"cannot connect to {exchange}: {error}", "connect-failed", mx=exchange,
                        address=address, reply=reply)
            return Outcome({}, False, reply)
        source = self._host_address(entry.host)
        require = await self._requirement(entry, exchange, source, rcpts)
        if require is not None and require.refused:
            self._event(entry, f"not connecting to {exchange}: {require.refused}", "connect-failed", mx=exchange,
                        address=address, port=port, reply=require.refused)
            return Outcome({}, False, require.refused)
        key = (entry.host, address, port)
        # A connection kept open was not checked against this attempt's policy: a policy means a new one.
        client = self._idle[key].pop() if self._idle.get(key) and require is None else None
        verb = "reusing the open connection to" if client is not None else "connecting to"
        self._event(entry, f"{verb} {exchange} [{address}]:{port} from {source}", "connecting", mx=exchange,
                    address=address, port=port, source=source, reused=client is not None)
        keep = self._busy > 1  # more messages in flight: keep the connection open for the next one
        loop = asyncio.get_running_loop()
        queue_id = entry.queue_id

        def link(endpoint: str) -> None:  # called on the SMTP thread just before MAIL
            self._links[endpoint] = queue_id

        # The blocking client runs on a thread in a copy of this attempt's context: it announces its
        # connection (and each MAIL) for this attempt, and the MX claims them (smtplab.trace.ring).
        path = self._route(address, port) if self._route is not None else (address, port)
        outcome, kept = await loop.run_in_executor(
            self._smtp_pool, contextvars.copy_context().run,
            partial(smtp_deliver, link=link, dsn=dsn_parameters(entry, rcpts), require=require), exchange,
            path[0], path[1], source, entry.host, self._tls, entry.sender, rcpts, content, client, keep,
        )
        self._links.pop(outcome.client, None)
        if kept is not None:
            self._idle.setdefault(key, []).append(kept)
        if not outcome.connected:
            self._event(entry, f"{exchange} [{address}]:{port}: {outcome.error}", "connect-failed", mx=exchange,
                        address=address, port=port, reply=outcome.error)
        return outcome

    async def _requirement(self, entry: QueueEntry, exchange: str, source: str,
                           rcpts: list[str]) -> TlsRequirement | None:
        """The TLS policy for this MX (MTA-STS, DANE), looked up for real, noted in the trace."""
        if self._tls_policy is None:
            return None
        domain = rcpts[0].rpartition("@")[2].lower()
        require = await self._tls_policy(
            domain, exchange, source, lambda text: self._event(entry, text, "tls-policy", mx=exchange))
        if require is not None:
            self._event(entry, require.summary, "tls-policy", mx=exchange)
        return require

    # --- state changes ---
    def _set(self, entry: QueueEntry, addresses: list[str], **changes: Any) -> None:
        with self._lock:
            entry.recipients = [replace(r, **changes) if r.address in addresses else r for r in entry.recipients]

    def _defer(self, entry: QueueEntry, addresses: list[str], reply: str, via: str) -> list[RecipientStatus]:
        """Schedule the next attempt; past the queue lifetime, bounce instead (returned for the DSN)."""
        now = self._now()
        if now - entry.created >= self.max_lifetime:
            return self._bounce(entry, addresses, f"{reply} (gave up after {entry.attempts} attempts, "
                                f"{_duration(now - entry.created)} in the queue)", _status_of(reply[4:], "4.4.7"), via)
        index = min(entry.attempts - 1, len(self.retry_schedule) - 1)
        entry.next_attempt = now + self.retry_schedule[max(index, 0)]
        with self._lock:
            entry.recipients = [
                replace(r, state="deferred", last_reply=reply)
                if r.address in addresses else r for r in entry.recipients
            ]
        self._event(entry, f"deferred {', '.join(addresses)}: {reply}; next attempt in "
                           f"{_duration(self.retry_schedule[max(index, 0)])} (lab time)", "deferred",
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
        self._event(entry, f"bounced {', '.join(addresses)}: {reply}", "bounced", recipients=tuple(addresses),
                    mx=via, reply=reply)
        return out

    def _want_dsn(self, entry: QueueEntry, recipients: list[RecipientStatus], action: str) -> None:
        """Note a delivery status notification to make for `recipients` (written with the attempt's record).

        Its queue id is derived from the message's and the recipients': made again after a crash (the
        attempt that made it was not recorded), it is the same notification, and is queued only once.
        """
        if not entry.sender:  # RFC 5321 section 6.1 / RFC 3464: a bounce is never bounced
            if action == "failed":
                self._event(entry, "bounce of a bounce (null sender): dropped, as RFC 3464 requires", "bounce-dropped")
            return
        if action == "failed":  # RFC 3461 section 4.1: NOTIFY=NEVER, or a list without FAILURE, says no
            before = recipients
            recipients = [r for r in recipients if not r.notify or "FAILURE" in r.notify.split(",")]
            if not recipients:
                self._event(entry, "no failure notification: the sender asked for none (NOTIFY)", "bounce-dropped",
                            recipients=tuple(r.address for r in before))
                return
        digest = hashlib.sha256(",".join(sorted(r.address.lower() for r in recipients)).encode()).hexdigest()[:6]
        queue_id = f"{entry.queue_id}-{action[0].upper()}{digest.upper()}"
        entry.dsns.append((queue_id, action, recipients))
        addresses = tuple(r.address for r in recipients)
        if action == "delayed":
            self._event(entry, f"warning sent to <{entry.sender}>: still undelivered after "
                               f"{_duration(self._now() - entry.created)}, retrying", "warning-sent", recipients=addresses)
        else:
            self._event(entry, f"delivery status notification ({action}) sent to <{entry.sender}> from <> "
                               f"(null sender): {', '.join(addresses)}", "dsn-sent", recipients=addresses)

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

    def _commit(self, entry: QueueEntry, notifications: list[tuple[str, bytes]]) -> list[QueueEntry]:
        """Record an attempt (disk thread): queue its notifications, then save the entry's state - or, when
        every recipient is final, prune its spool files. Returns the notifications' new entries.

        The order makes a crash harmless: a notification is on disk before the state that says it was
        made, and one made again after a crash has the same queue id and is skipped here. A state not
        recorded only means the attempt is made again: the MX's ledger answers for the copies it made.
        """
        made = []
        for queue_id, content in notifications:
            with self._lock:
                known = queue_id in self._entries
            if known or self.spool.has(queue_id):
                continue
            dsn_entry = self._new_entry(entry.host, "", [entry.sender], queue_id, _message_id(content))
            self.spool.write(dsn_entry, content)  # its folder fsync'd now: before the state below
            made.append(dsn_entry)
        if is_done(entry):
            self.spool.prune(entry)
        else:
            self.spool.save(entry)
        return made



def _message_id(content: bytes) -> str:
    match = re.search(rb"^Message-ID:[ \t]*(\S+)", content.split(b"\r\n\r\n", 1)[0], re.M | re.I)
    return match[1].decode("ascii", "replace") if match else ""


def _transient_status(reply: str) -> str:
    """The RFC 3463 status of a deferral: the reply's own 4.X.X, else 4.5.0 (a protocol error was met)."""
    status = _status_of(reply[4:], "4.0.0")
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


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _status_of(text: str, default: str) -> str:
    parts = text.split(" ", 1)[0].split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return ".".join(parts)
    return default
