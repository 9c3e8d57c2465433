"""What the lab's servers ask of the lab: passwords, mailboxes, the queue, faults, DNS and DKIM keys.

`Lab` is the learner's facade (`send`, `trace`, `queue`, `ladder`, ...). The SMTP handlers, the policy
checks, the POP3 service and the relay are given this object instead (it implements
`smtplab.mail.postmaster.Postmaster`), so none of what they call shows up in a learner's tab completion.
`Lab` builds it, fills it in while it starts, and reads it; docs/architecture.md draws where it sits.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
from collections.abc import Coroutine, Mapping
from functools import partial
from typing import Any, TypeVar

from .auth.lab_dns import LabDns
from .clock import VirtualClock
from .errors import LabNotRunning
from .hosts import DnsInfo, Host, User
from .i18n import N_, _, lazy
from .loop import LoopThread
from .mail.ledger import DeliveryLedger
from .mail.message_headers import header_value
from .mail.relay import Relay
from .mail.store import MailStore
from .net.dns_lookup import lab_resolver
from .net.dsn_parameters import DsnRequest
from .net.faults import Fault, FaultTable
from .net.guard import ConnectionGuard
from .net.imap import has_idlers, mailbox_changed
from .net.throttle import LoginThrottle
from .scenario import Scenario
from .trace.events import LabChange
from .trace.ring import Trace
from .zones import DkimKey

__all__ = ["Services"]

T = TypeVar("T")
_STOPPED = N_("this lab is stopped; start a new one with smtplab.start()")


class Services:
    """The lab as its servers see it (one per lab; `lab.services`). Safe to call from the lab's loop."""

    def __init__(self, scenario: Scenario, clock: VirtualClock, trace: Trace, faults: FaultTable,
                 hosts: dict[str, Host], users: dict[str, User]) -> None:
        self.scenario = scenario
        self.clock = clock
        self.trace = trace
        self.faults = faults
        self.hosts = hosts  # the same mappings as lab.hosts and lab.users, filled in while the lab starts
        self.users = users
        self.stores: dict[str, MailStore] = {}  # provider domain -> its mailboxes (filled as the lab starts)
        self._by_address: dict[str, str] = {}  # a host's own loopback address -> its name
        # Failed SMTP AUTH attempts make the next ones wait, per connection and per client address.
        self.login_throttle = LoginThrottle()
        self.guard: ConnectionGuard | None = None  # who may connect (set when the lab starts)
        # Set while the lab starts (None before and after it runs).
        self.loop: LoopThread | None = None
        self.relay: Relay | None = None
        self.ledger: DeliveryLedger | None = None
        self.dns: DnsInfo | None = None
        self.client_context: ssl.SSLContext | None = None  # trusts the lab CA: the lab's own clients use it
        self.dkim_keys: dict[str, DkimKey] = {}
        self.keys_published: asyncio.Future[None] | None = None  # done once the DNS publishes the DKIM keys
        self._lab_dns: LabDns | None = None

    # --- running work on the lab's loop ---
    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run `coro` on the lab's loop from another thread and return its result (LabTimeout after `timeout`)."""
        if self.loop is None:
            coro.close()
            raise LabNotRunning(_(_STOPPED))
        return self.loop.call(coro, timeout)

    def clock_advanced(self) -> None:
        """The virtual clock jumped (a `VirtualClock` listener): trace it, then run the deliveries now due."""
        self.trace.record("lab", "state", "clock",
                          lazy(N_("clock advanced: lab time is now {time} UTC"), time=f"{self.clock.datetime():%Y-%m-%d %H:%M:%S}"),
                          payload=LabChange("clock", f"{self.clock.now():.0f}"))
        if self.relay is not None:
            self.relay.clock_advanced()

    def require_relay(self) -> Relay:
        if self.relay is None:
            raise LabNotRunning(_(_STOPPED))
        return self.relay

    def now(self) -> float:
        return self.clock.now()

    # --- users and hosts ---
    def check_password(self, address: str, password: str) -> bool:
        user = self.users.get(address.lower())
        return user is not None and secrets.compare_digest(user.password.encode(), password.encode())

    def user_exists(self, address: str) -> bool:
        return address.lower() in self.users

    def host_options(self, host: str) -> tuple[str, ...]:
        return self.hosts[host].options

    def name_address(self, address: str, host: str) -> None:
        """Say that `address` is lab host `host`'s own (where each host has one: Linux)."""
        self._by_address[address] = host

    def peer_name(self, address: str) -> str:
        """The lab host that owns a client address (its own loopback address), else "client"."""
        return self._by_address.get(address, "client")

    def security_of(self, domain: str) -> Mapping[str, Any]:
        provider = self.scenario.provider_of(domain)
        return provider.security if provider is not None else {}

    def fault_for(self, host: str, stage: str, recipient: str = "") -> Fault | None:
        return self.faults.pick(host, stage, recipient)

    def smtp_port(self, exchange: str, address: str) -> int | None:
        """The SMTP port the relay connects to for MX `exchange` at `address` (None: nothing listens there)."""
        host = self.hosts.get(exchange)
        if host is not None and host.address == address and host.is_up:
            return host.ports.get("smtp")
        for candidate in self.hosts.values():
            if candidate.address == address and "smtp" in candidate.ports and candidate.is_up:
                return candidate.ports["smtp"]
        if host is not None and host.address == address and not host.is_up and "smtp" in host.ports:
            return host.ports["smtp"]  # it will refuse the connection, as a crashed server would
        return None

    # --- DNS and DKIM ---
    def dns_resolver(self) -> Any:
        """An async resolver that asks the lab DNS."""
        if self.dns is None:
            raise LabNotRunning(_(_STOPPED))
        return lab_resolver(self.dns.address, self.dns.port)

    def lab_dns(self) -> LabDns:
        """The synchronous stub resolver the MX hosts' checks (SPF, DKIM, DMARC) ask the lab DNS with."""
        if self._lab_dns is None:
            if self.dns is None:
                raise LabNotRunning(_(_STOPPED))
            self._lab_dns = LabDns(self.dns.address, self.dns.port)
        return self._lab_dns

    async def keys_ready(self) -> None:
        """On the lab's loop: return once the DKIM keys exist and the DNS publishes them."""
        if self.keys_published is not None and not self.keys_published.done():
            await asyncio.shield(self.keys_published)

    def dkim_key(self, domain: str) -> DkimKey | None:
        """The DKIM key `domain` signs with (None if it does not sign); waits the moment it takes to be made
        right after the start (on the lab's loop, `await keys_ready()` first)."""
        pending = self.keys_published
        if pending is not None and not pending.done() and self.loop is not None \
                and threading.current_thread() is not self.loop.thread:
            self.call(self.keys_ready())
        return self.dkim_keys.get(domain)

    # --- mailboxes and the queue ---
    def mailbox_changed(self, path: str) -> None:
        """A message landed in the Maildir folder at `path` (any thread): wake IMAP clients idling there."""
        loop = self.loop.loop if self.loop is not None else None
        if loop is not None and not loop.is_closed() and has_idlers(path):
            try:
                loop.call_soon_threadsafe(mailbox_changed, path)
            except RuntimeError:  # the lab stopped meanwhile: nobody is idling any more
                pass

    async def store_local(self, recipients: list[str], content: bytes, folder: str = "INBOX", *,
                          client: object = None) -> list[str]:
        """Deliver one message into local mailboxes from the disk thread; returns once it is on disk for
        every recipient. All or none: if one copy cannot be written (a full disk), the copies already
        written are taken back before the error goes to the client, whose retry then makes no duplicate.
        When `client` (the peer's address and port) is the lab's own relay, each copy is noted in the
        delivery ledger under the relay's queue id, and a retry of a copy already made is not made again:
        the recipients it skipped so are returned."""
        if self.loop is None or self.ledger is None:
            raise LabNotRunning(_(_STOPPED))
        disk = self.loop.disk
        ledger = self.ledger
        relay = self.require_relay()
        queue_id = relay.queue_id_for(f"{client[0]}:{client[1]}") if isinstance(client, tuple) else None

        def deliver_all() -> list[str]:
            written: list[tuple[MailStore, str, str]] = []
            held: list[str] = []
            try:
                for address in recipients:
                    if queue_id and ledger.holds(queue_id, address):
                        held.append(address)
                        continue
                    note = None if not queue_id else partial(_note, ledger, queue_id, address, disk.fsync_later)
                    store = self.stores[address.rpartition("@")[2].lower()]
                    written.append((store, address, store.deliver(address, content, folder, before_rename=note,
                                                                  fsync_folder=disk.fsync_later, announce=False)))
            except BaseException:
                for store, address, name in written:
                    store.withdraw(address, name, folder)
                raise
            for store, address, _name in written:  # IMAP hears of the copies once they all stand
                store.announce(address, folder)
            return held

        return await disk.run(deliver_all)

    def enqueue(self, host: str, sender: str, recipients: list[str], content: bytes, queue_id: str) -> None:
        self.require_relay().enqueue(host, sender, recipients, content, queue_id, header_value(content, b"message-id"))

    async def enqueue_async(self, host: str, sender: str, recipients: list[str], content: bytes,
                            queue_id: str, dsn: DsnRequest | None = None) -> None:
        """Queue a message for the relay from the loop; the spool is written by a disk thread."""
        await self.require_relay().enqueue_async(host, sender, recipients, content, queue_id,
                                                 header_value(content, b"message-id"), dsn=dsn)

    def close(self) -> None:
        """Forget what belongs to a running lab (after its loop stopped)."""
        self.loop = None
        if self._lab_dns is not None:
            self._lab_dns.close()
            self._lab_dns = None


def _note(ledger: DeliveryLedger, queue_id: str, address: str, fsync_later: Any, root: str, name: str) -> None:
    ledger.note(queue_id, address, root, name, fsync_later)
