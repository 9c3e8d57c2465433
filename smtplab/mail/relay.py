"""The relay queue: store, schedule on the virtual clock, retry; one `Relay` for the whole lab.

Each accepted message is written to the spool (lab directory) before the submission server says 250,
so nothing accepted is lost across a stop. Recipients carry their own state:
queued -> mx-lookup -> connecting -> delivered | deferred (-> retried) | bounced.
This module holds the queue itself: intake, reading, the scheduler and the record of each attempt. An
attempt (MX routing, RFC 5321 §5.1, and the SMTP client) is `mail/delivery.py`; what its results do to
an entry (defer, bounce, notifications) is `mail/outcomes.py`; both are mixins of `Relay`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import re
import smtplib
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import dns.asyncresolver

from ..disk import DiskThread
from ..i18n import N_, lazy
from ..net.dsn_parameters import DsnRequest
from ..trace.ring import Trace, correlated
from .delivery import Delivery
from .ledger import DeliveryLedger
from .mx_client import quit_all
from .queue import (
    DELAY_WARNING,
    FINAL,
    MAX_CONCURRENT_ATTEMPTS,
    MAX_QUEUE_LIFETIME,
    RETRY_SCHEDULE,
    QueueEntry,
    QueueItem,
    RecipientStatus,
    TlsPolicy,
    is_done,
)
from .spool import Spool

__all__ = ["Relay"]


class Relay(Delivery):
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
            self._event(entry, lazy(N_("resumed from the spool ({file})"), file=f"{entry.queue_id}.json"), "resumed")
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
        self._event(entry, lazy(N_("queued on {host}: from <{sender}> to {recipients}"), host=host, sender=sender,
                                 recipients=", ".join(recipients)), "queued",
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


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
