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
import heapq
import ipaddress
import itertools
import json
import os
import random
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import dns.asyncresolver

from .disk import DiskThread, fsync_directory, remove_quietly
from .dsn import build_dsn
from .errors import DnsLookupError
from .events import QueueChange
from .labdns import MXRecord, lookup_mx_async, resolve_a
from .trace import Trace, announce_connection, correlated, withdraw_connection

__all__ = ["Relay", "QueueItem", "RecipientStatus", "RETRY_SCHEDULE", "MAX_QUEUE_LIFETIME"]

# Like real MTAs: retry soon, then back off (seconds of lab time after each failed attempt).
RETRY_SCHEDULE = (60, 300, 900, 3600, 3 * 3600, 6 * 3600)
MAX_QUEUE_LIFETIME = 5 * 86400  # Postfix's maximal_queue_lifetime default
DELAY_WARNING = 4 * 3600  # tell the sender once that mail is late (like Postfix's delay_warning_time)
FINAL = ("delivered", "bounced")
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
class _Entry:
    queue_id: str
    host: str
    sender: str
    recipients: list[RecipientStatus]
    created: float
    next_attempt: float
    message_id: str = ""
    attempts: int = 0
    warned: bool = False  # a "delayed" DSN was sent already
    running: bool = field(default=False, repr=False)  # claimed for an attempt

    def snapshot(self) -> QueueItem:
        return QueueItem(self.queue_id, self.host, self.sender, tuple(self.recipients), self.created,
                         self.next_attempt, self.message_id)


@dataclass(frozen=True)
class _Outcome:
    """The reply one MX gave for each recipient in one attempt (or a connection failure)."""

    replies: dict[str, tuple[int, str]]
    connected: bool
    error: str = ""
    client: str = ""  # "address:port" of the relay's end of the connection, once connected


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
        deliver_bounce: Callable[[str, str, bytes], None],
        disk: DiskThread,
        smtp_pool: concurrent.futures.Executor | None = None,
    ) -> None:
        self.spool = spool
        spool.mkdir(parents=True, exist_ok=True)
        self._trace = trace
        self._now = now
        self._resolver = resolver
        self._host_address = host_address
        self._smtp_port = smtp_port
        self._tls = client_context
        self._deliver_bounce = deliver_bounce
        self._disk = disk  # spool writes from the loop go there
        self._smtp_pool = smtp_pool  # where the blocking SMTP client runs (None: the default executor)
        self._entries: dict[str, _Entry] = {}
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
        self._claimed: list[_Entry] = []  # claimed (running) but their attempt task not started yet
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
        for path in sorted(self.spool.glob("*.json")):
            entry = self._load(path)
            if entry is not None and not all(r.state in FINAL for r in entry.recipients):
                with self._lock:
                    self._entries[entry.queue_id] = entry
                    self._wait_until(entry)
                self._event(entry, f"resumed from the spool ({path.name})", "resumed")
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
                message_id: str = "") -> None:
        """Queue a message, writing it to the spool on this thread."""
        entry = self._new_entry(host, sender, recipients, queue_id, message_id)
        self._write_spool(entry, content)
        self._register(entry)

    async def enqueue_async(self, host: str, sender: str, recipients: list[str], content: bytes, queue_id: str,
                            message_id: str = "") -> None:
        """Queue a message, writing the spool from a disk thread; returns once it is written."""
        entry = self._new_entry(host, sender, recipients, queue_id, message_id)
        await self._disk.run(self._write_spool, entry, content, self._disk.fsync_later)
        self._register(entry)

    def _new_entry(self, host: str, sender: str, recipients: list[str], queue_id: str, message_id: str) -> _Entry:
        now = self._now()
        return _Entry(queue_id, host, sender, [RecipientStatus(r) for r in recipients], now, now, message_id)

    def _write_spool(self, entry: _Entry, content: bytes,
                     fsync_folder: Callable[[Path], None] = fsync_directory) -> None:
        """Put a new message in the queue durably: the 250 that follows promises the message survives
        a crash (RFC 5321 section 6.1). The message, then its envelope, each fsync'd; then the folder."""
        message = self.spool / f"{entry.queue_id}.eml"
        _write_durably(message, content)
        try:
            _write_durably(self.spool / f"{entry.queue_id}.json", self._state_bytes(entry))
        except BaseException:  # without its envelope the message is not queued: nothing half-queued stays
            remove_quietly(message)
            raise
        fsync_folder(self.spool)

    def _register(self, entry: _Entry) -> None:
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

    def pending(self) -> list[QueueItem]:
        return [item for item in self.items() if not item.done]

    def wait_settled(self, queue_id: str | None = None, timeout: float = 30.0) -> bool:
        """Block until no attempt is running (for `queue_id`, or for all); False on timeout."""

        def settled() -> bool:  # called with the lock held
            now = self._now()
            if queue_id:
                e = self._entries.get(queue_id)
                return e is None or (not e.running and (e.next_attempt > now or _done(e)))
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

    def _wait_until(self, entry: _Entry) -> None:
        """Put `entry` on the timeline for its next attempt (with the lock held)."""
        heapq.heappush(self._timeline, (entry.next_attempt, next(self._order), entry.queue_id))

    def _claim_due(self) -> None:
        """Mark every entry whose attempt is due as running; the scheduler starts their tasks."""
        now = self._now()
        with self._lock:
            while self._timeline and self._timeline[0][0] <= now:
                when, _, queue_id = heapq.heappop(self._timeline)
                e = self._entries.get(queue_id)
                if e is None or e.running or e.next_attempt != when or _done(e):
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
    async def _attempt(self, entry: _Entry) -> None:
        saved = False
        try:
            assert self._slots is not None
            async with self._slots:
                # One unit of work per attempt, done for this message: its DNS questions, its connections
                # and the MX's side of them carry it (smtplab.trace), so they are this message's exactly.
                corr = self._trace.new_correlation("relay", entry.queue_id, entry.message_id)
                self._corrs[entry.queue_id] = corr
                try:
                    with correlated(self._trace, corr):
                        await self._deliver(entry)
                finally:
                    self._corrs.pop(entry.queue_id, None)
            await self._disk.run(self._save, entry)
            saved = True
            if self._busy == 1 and self._idle:  # the last attempt in flight: nothing will reuse them
                idle = [c for clients in self._idle.values() for c in clients]
                self._idle.clear()
                await asyncio.get_running_loop().run_in_executor(self._smtp_pool, _quit_all, idle)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose a message to a bug: defer it instead
            failed = self._defer(entry, [r.address for r in entry.recipients if r.state not in FINAL],
                                 f"451 4.3.0 internal relay error: {exc!r}", "")
            if failed:
                self._send_dsn(entry, failed, (self.spool / f"{entry.queue_id}.eml").read_bytes())
        finally:
            with self._settled:
                entry.running = False
                self._busy -= 1
                if not _done(entry):
                    self._wait_until(entry)
                if not saved:
                    self._save(entry)
                self._settled.notify_all()
            self._kick()

    async def _deliver(self, entry: _Entry) -> None:
        entry.attempts += 1
        content = (self.spool / f"{entry.queue_id}.eml").read_bytes()
        pending = [r.address for r in entry.recipients if r.state not in FINAL]
        with self._lock:
            entry.recipients = [replace(r, attempts=r.attempts + 1) if r.address in pending else r
                                for r in entry.recipients]
        by_domain: dict[str, list[str]] = {}
        for address in pending:
            by_domain.setdefault(address.rpartition("@")[2].lower(), []).append(address)
        bounced: list[RecipientStatus] = []
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
            self._send_dsn(entry, bounced, content)

    async def _targets(self, entry: _Entry, domain: str) -> list[tuple[str, str]] | str:
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

    async def _try_mx(self, entry: _Entry, exchange: str, address: str, rcpts: list[str],
                      content: bytes) -> _Outcome:
        port = self._smtp_port(exchange, address) if address and _is_loopback(address) else None
        if port is None:
            # Only lab hosts (all on loopback) are ever connected to: mail never leaves the machine.
            error = f"{exchange} has no address" if not address else f"nothing listens for SMTP on {address}"
            self._event(entry, f"cannot connect to {exchange}: {error}", "connect-failed", mx=exchange,
                        address=address, reply=f"451 4.4.1 {error}")
            return _Outcome({}, False, f"451 4.4.1 {error}")
        source = self._host_address(entry.host)
        key = (entry.host, address, port)
        client = self._idle[key].pop() if self._idle.get(key) else None
        verb = "reusing the open connection to" if client is not None else "connecting to"
        self._event(entry, f"{verb} {exchange} [{address}]:{port} from {source}", "connecting", mx=exchange,
                    address=address, port=port, source=source, reused=client is not None)
        keep = self._busy > 1  # more messages in flight: keep the connection open for the next one
        loop = asyncio.get_running_loop()
        # The blocking client runs on a thread in a copy of this attempt's context: it announces its
        # connection (and each MAIL) for this attempt, and the MX claims them (smtplab.trace).
        outcome, kept = await loop.run_in_executor(
            self._smtp_pool, contextvars.copy_context().run, _smtp_deliver, exchange, address, port, source,
            entry.host, self._tls, entry.sender, rcpts, content, client, keep,
        )
        if kept is not None:
            self._idle.setdefault(key, []).append(kept)
        if not outcome.connected:
            self._event(entry, f"{exchange} [{address}]:{port}: {outcome.error}", "connect-failed", mx=exchange,
                        address=address, port=port, reply=outcome.error)
        return outcome

    # --- state changes ---
    def _set(self, entry: _Entry, addresses: list[str], **changes: Any) -> None:
        with self._lock:
            entry.recipients = [replace(r, **changes) if r.address in addresses else r for r in entry.recipients]

    def _defer(self, entry: _Entry, addresses: list[str], reply: str, via: str) -> list[RecipientStatus]:
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
        if self.delay_warning and not entry.warned and entry.sender and now - entry.created >= self.delay_warning:
            entry.warned = True
            late = [r for r in entry.recipients if r.address in addresses]
            late = [replace(r, final_status=_transient_status(reply)) for r in late]
            content = (self.spool / f"{entry.queue_id}.eml").read_bytes()
            dsn = build_dsn(reporting_host=entry.host, original_sender=entry.sender, failed=late, original=content,
                            arrival=entry.created, now=now, queue_id=entry.queue_id, action="delayed")
            self._deliver_bounce(entry.host, entry.sender, dsn)
            self._event(entry, f"warning sent to <{entry.sender}>: still undelivered after "
                               f"{_duration(now - entry.created)}, retrying", "warning-sent",
                        recipients=tuple(addresses))
        return []

    def _bounce(self, entry: _Entry, addresses: list[str], reply: str, status: str, via: str) -> list[RecipientStatus]:
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

    def _send_dsn(self, entry: _Entry, failed: list[RecipientStatus], content: bytes) -> None:
        if not entry.sender:  # RFC 5321 §6.1 / RFC 3464: a bounce is never bounced
            self._event(entry, "bounce of a bounce (null sender): dropped, as RFC 3464 requires", "bounce-dropped")
            return
        dsn = build_dsn(
            reporting_host=entry.host, original_sender=entry.sender, failed=failed, original=content,
            arrival=entry.created, now=self._now(), queue_id=entry.queue_id,
        )
        self._deliver_bounce(entry.host, entry.sender, dsn)
        self._event(entry, f"delivery status notification sent to <{entry.sender}> from <> (null sender)",
                    "dsn-sent", recipients=tuple(r.address for r in failed))

    def _event(self, entry: _Entry, text: str, state: str, **fields: Any) -> None:
        ids = tuple(i for i in (entry.queue_id, entry.message_id) if i)
        # The attempt's correlation, or none: a bounce queued during another message's attempt is its own.
        self._trace.record("queue", "queue", entry.host, text, message_ids=ids, peer=entry.host,
                           payload=QueueChange(entry.queue_id, state, **fields),
                           corr=self._corrs.get(entry.queue_id, ""))

    # --- spool ---
    def _state_bytes(self, entry: _Entry) -> bytes:
        data = {k: v for k, v in asdict(entry).items() if k not in ("running", "started")}
        return json.dumps(data, indent=1).encode()

    def _save(self, entry: _Entry) -> None:
        """Record a queued message's progress (not fsync'd: after a crash an older state only means the
        relay tries again, and a recipient may get the message twice, as SMTP allows)."""
        path = self.spool / f"{entry.queue_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(self._state_bytes(entry))
        tmp.replace(path)

    def _load(self, path: Path) -> _Entry | None:
        try:
            data = json.loads(path.read_text())
            data["recipients"] = [RecipientStatus(**r) for r in data["recipients"]]
            data.pop("running", None)
            data.pop("started", None)
            entry = _Entry(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not (self.spool / f"{entry.queue_id}.eml").exists():
            return None
        entry.recipients = [replace(r, state="queued") if r.state in ("mx-lookup", "connecting") else r
                            for r in entry.recipients]
        return entry


def _write_durably(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file beside it, fsync'd before the rename: never half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # e.g. the disk is full: no half file left in the spool
        remove_quietly(tmp)
        raise


PROTOCOL_ERROR_NOTE = ("a protocol error on that connection, not a verdict on the recipient or the message: "
                       "retried later on a new connection")


def is_protocol_error(code: int, text: str) -> bool:
    """True for a 5xx that says the conversation went wrong, not that the mail is unwanted.

    500-504 are syntax and command-sequence replies (RFC 5321 section 4.2.2: "503 Bad sequence of
    commands"); they describe this connection's state (e.g. a transaction the server failed to close),
    so bouncing on them would return good mail. Where the enhanced code (RFC 3463) puts the reply under
    addressing (X.1.x, e.g. 501 5.1.3 bad address syntax) or content (X.6.x, e.g. 500 5.6.7 non-ASCII
    without SMTPUTF8), the reply is about the mail after all, and stays permanent.
    """
    if code not in (500, 501, 502, 503, 504):
        return False
    parts = text.split(" ", 1)[0].split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return parts[1] not in ("1", "6")
    return True


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


def _done(entry: _Entry) -> bool:
    return all(r.state in FINAL for r in entry.recipients)


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


def _smtp_deliver(exchange: str, address: str, port: int, source: str, helo: str, context: ssl.SSLContext, sender: str,
                  rcpts: list[str], content: bytes, client: smtplib.SMTP | None = None,
                  keep: bool = False) -> tuple[_Outcome, smtplib.SMTP | None]:
    """Deliver one message to one MX with smtplib (runs in a worker thread).

    `client` is a connection an earlier delivery left open to the same MX (past EHLO and STARTTLS).
    With `keep`, the connection is returned open, ready for the next MAIL, instead of closed by QUIT.
    The outcome names the relay's end of the connection, so the MX's side of it can be found in the trace.
    """
    local: list[str] = []
    outcome, kept = _smtp_attempt(exchange, address, port, source, helo, context, sender, rcpts, content, client,
                                  keep, local)
    return (replace(outcome, client=local[-1]) if local else outcome), kept


def _endpoint(client: smtplib.SMTP) -> str:
    try:
        host, port = client.sock.getsockname()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return ""
    return f"{host}:{port}"


def _smtp_attempt(exchange: str, address: str, port: int, source: str, helo: str, context: ssl.SSLContext,
                  sender: str, rcpts: list[str], content: bytes, client: smtplib.SMTP | None, keep: bool,
                  local: list[str]) -> tuple[_Outcome, smtplib.SMTP | None]:
    replies: dict[str, tuple[int, str]] = {}
    kept: smtplib.SMTP | None = None
    try:
        if client is not None:
            local.append(_endpoint(client))
            try:
                code, msg = _mail(client, sender, rcpts, content)
            except (smtplib.SMTPServerDisconnected, OSError):
                client.close()  # the MX closed the idle connection meanwhile: open a new one
                client = None
        if client is None:
            client = _LabClient(local_hostname=helo, timeout=20, source_address=(source, 0))
            failure = _open(client, exchange, address, port, context, rcpts, local)
            if failure is not None:
                client.close()
                return failure, None
            code, msg = _mail(client, sender, rcpts, content)
        try:
            # The connection is kept for the next message only if it is surely back in its initial state:
            # every reply was a success or an ordinary refusal, and no transaction is left open. After a
            # failure reply to the final dot RFC 5321 section 4.1.1.4 says the transaction is over, but a
            # server that fails at end-of-data may not have reset it (then the next MAIL meets "503 nested
            # MAIL"): RSET first (section 4.1.1.5), and a protocol error of any kind means a new connection.
            clean = True
            sane = not is_protocol_error(code, msg.decode("utf-8", "replace"))
            if code != 250:
                text = msg.decode("utf-8", "replace")
                outcome = _Outcome({r: (code, text) for r in rcpts}, True)
            else:
                accepted = []
                for rcpt in rcpts:
                    code, msg = client.rcpt(rcpt)
                    replies[rcpt] = (code, msg.decode("utf-8", "replace"))
                    sane = sane and not is_protocol_error(*replies[rcpt])
                    if code in (250, 251):
                        accepted.append(rcpt)
                clean = False
                if accepted:
                    try:
                        code, msg = client.data(content)
                        clean = code == 250
                    except smtplib.SMTPDataError as exc:
                        code, msg = exc.smtp_code, exc.smtp_error
                    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
                    sane = sane and not is_protocol_error(code, text)
                    for rcpt in accepted:
                        replies[rcpt] = (code, text)
                outcome = _Outcome(replies, True)
            try:
                if keep and sane and (clean or client.rset()[0] == 250):
                    kept = client
                else:
                    client.quit()
            except (smtplib.SMTPException, OSError):
                pass
            return outcome, kept
        finally:
            if kept is None:
                client.close()
    except ConnectionRefusedError:
        return _Outcome({}, False, "451 4.4.1 connection refused (host down?)"), None
    except TimeoutError:
        return _Outcome({}, False, "451 4.4.2 connection timed out"), None
    except smtplib.SMTPServerDisconnected as exc:
        # Anything not yet confirmed with 250 after DATA is not delivered: retry it all.
        return _Outcome({}, False, f"451 4.4.2 connection dropped: {exc or 'server closed the connection'}"), None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        return _Outcome({}, False, f"451 4.4.0 {type(exc).__name__}: {exc}"), None


def _mail(client: smtplib.SMTP, sender: str, rcpts: list[str], content: bytes) -> tuple[int, bytes]:
    """MAIL FROM, with SMTPUTF8 when the message needs it and the MX offers it (RFC 6531 section 3.4)."""
    envelope_utf8 = not (sender.isascii() and all(r.isascii() for r in rcpts))
    header_utf8 = not content.split(b"\r\n\r\n", 1)[0].isascii()
    if envelope_utf8 and not client.has_extn("smtputf8"):
        # A non-ASCII address cannot be downgraded: nothing is sent, the message goes back to its sender.
        return 553, b"5.6.7 The next hop does not offer SMTPUTF8: a non-ASCII address cannot be relayed (RFC 6531)"
    client.command_encoding = "ascii"  # smtplib keeps "utf-8" from an earlier SMTPUTF8 transaction
    if (envelope_utf8 or header_utf8) and client.has_extn("smtputf8"):
        return client.mail(sender, ["SMTPUTF8"])  # smtplib then sends the commands as UTF-8
    return client.mail(sender)


def _open(client: smtplib.SMTP, exchange: str, address: str, port: int, context: ssl.SSLContext,
          rcpts: list[str], local: list[str]) -> _Outcome | None:
    """Connect, EHLO (or HELO) and STARTTLS when offered; return the refusal as an outcome, if any."""
    code, msg = client.connect(address, port)
    local.append(_endpoint(client))
    client._host = exchange  # type: ignore[attr-defined]  # name checked in the MX's certificate
    if code != 220:
        return _Outcome({r: (code, msg.decode("utf-8", "replace")) for r in rcpts}, True)
    code, msg = client.ehlo()
    if code != 250:
        code, msg = client.helo()  # RFC 5321 section 3.2: fall back to HELO
        if code != 250:
            return _Outcome({r: (code, msg.decode("utf-8", "replace")) for r in rcpts}, True)
    if client.has_extn("starttls"):
        # Opportunistic TLS between MTAs (RFC 3207, RFC 7435): encrypted, the MX's name not insisted on.
        client.starttls(context=context)
        client.ehlo()
    return None


class _LabClient(smtplib.SMTP):
    """smtplib's client, announcing the work it does before it connects and before each MAIL, so the MX
    that accepts the connection (and reads the MAIL) knows which attempt it serves (smtplab.trace)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.bind(self.source_address or ("", 0))
            local = sock.getsockname()
            announce_connection(f"{local[0]}:{local[1]}")
            try:
                sock.connect((host, port))
            except BaseException:
                withdraw_connection(f"{local[0]}:{local[1]}")
                raise
        except BaseException:
            sock.close()
            raise
        return sock

    def mail(self, sender: str, options: Any = ()) -> tuple[int, bytes]:
        if self.sock is not None:
            local = self.sock.getsockname()
            announce_connection(f"{local[0]}:{local[1]}")
        return super().mail(sender, options)


def _quit_all(clients: list[smtplib.SMTP]) -> None:
    for client in clients:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            client.close()
