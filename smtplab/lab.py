"""Run a whole mail network on loopback: start, describe, stop.

The servers live on one asyncio loop in a daemon thread, never on the notebook kernel's own loop
(a blocking cell would freeze them). The public methods are synchronous and safe from any thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import json
import secrets
import shutil
import socket
import tempfile
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .auth.tlspolicy import Attacker, DowngradeKit, RelayTlsPolicies
from .clock import VirtualClock
from .errors import LabNotRunning, PortInUse, ScenarioError, UnknownConnection, UnknownHost, UnknownMessage, UnknownUser
from .files import directory_error, make_private_dir, write_private
from .hosts import DnsInfo, Host, User, listeners_of, load_ports, plan_ports, save_ports
from .i18n import _, resolve_language, set_language
from .loop import LoopThread
from .mail.handlers import InboundHandler, SubmissionHandler
from .mail.ledger import DeliveryLedger
from .mail.queue import MAX_CONCURRENT_ATTEMPTS, QueueItem
from .mail.relay import Relay
from .mail.store import MailStore
from .net.client import SendResult, SmtpSession, open_imap, open_session, send_from_lab
from .net.dns_lookup import DigResult, MXRecord, dig_async, lab_resolver, lookup_mx_async
from .net.dns_server import DnsServer, build_zones
from .net.faults import FaultTable
from .net.guard import BACKLOG, ConnectionGuard, limit_log_floods, warn_once
from .net.imap import ImapService
from .net.pop3 import Pop3Service
from .net.smtp import LabSMTP
from .net.tls import LabCA
from .net.wire import WireStore, WireTap
from .scenario import WELL_KNOWN_PORTS, Scenario
from .services import Services
from .trace.events import LabChange, Note
from .trace.ring import Trace
from .zones import DkimKey, DkimKeys, zone_lines

__all__ = ["Lab", "Host", "User", "DnsInfo", "start", "current"]

T = TypeVar("T")
WIRE_KEEP = 200  # SMTP connections whose raw bytes are kept for lab.wire() and lab.pcap()
# The other services' connections kept for lab.pcap() (DNS: one per question over UDP).
WIRE_KEEP_OTHERS = {"imap": 200, "pop3": 200, "dns": 2000}
_current: Lab | None = None
_all_labs: weakref.WeakSet[Lab] = weakref.WeakSet()
_start_lock = threading.Lock()
# RFC 5321 section 4.5.3.2.7: a server should wait at least 5 minutes for the next command.
SMTP_IDLE_TIMEOUT = 300.0
# RFC 5321 section 3.8: a server that cannot take the session answers 421 and closes; 4.7.0 (RFC 3463):
# a security or policy reason, here the listener's connection limit.
TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Too many connections, try again later"


def _distinct_loopback_supported() -> bool:
    """True where all of 127.0.0.0/8 reaches loopback (Linux), so hosts can have own addresses."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.9.9", 0))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class Lab:
    """A running miniature mail network. Use `smtplab.start()` to get one.

    This is the learner's side of the lab: hosts, users, `send`, `trace`, `queue`, diagrams. What the
    servers ask of the lab (passwords, mailboxes, the queue, faults) is `lab.services` (smtplab.services).
    """

    def __init__(self, scenario: Scenario | Mapping[str, Any] | None = None,
                 directory: str | Path | None = None, ports: int | None = None, lang: str | None = None) -> None:
        # The language is checked before anything is made; it becomes the process's language when the lab starts.
        self.language = resolve_language(lang)
        self._lang = lang
        if scenario is None:
            scenario = Scenario.default()
        elif isinstance(scenario, Mapping):
            scenario = Scenario.from_dict(scenario)
        elif not isinstance(scenario, Scenario):
            raise ScenarioError(_("scenario must be a Scenario, a dict like Scenario.default().to_dict(), or None"))
        scenario.validate()  # a Scenario built by hand too: its names become folders, checked before any is made
        self.scenario = scenario
        self._temporary = directory is None
        # The lab directory holds passwords, keys and mail: 0700 (mkdtemp's mode too), every file 0600.
        self.directory = Path(tempfile.mkdtemp(prefix="smtplab-")) if directory is None else Path(directory)
        try:
            make_private_dir(self.directory)
        except OSError as exc:
            error = directory_error(exc, self.directory)
            if error is None:
                raise
            raise error from None
        _warn_if_exposed(self.directory)
        self.clock = VirtualClock()
        self.trace = Trace(self.clock.now)
        self.hosts: dict[str, Host] = {}
        self.users: dict[str, User] = {}
        self.dns: DnsInfo
        self.running = False
        self.faults = FaultTable()
        self._wires = WireStore(WIRE_KEEP_OTHERS, default=WIRE_KEEP)
        self._stores: dict[str, MailStore] = {}
        self._imap: dict[str, ImapService] = {}
        # Ports: `ports=BASE` pins them (a taken one is an error); else the lab directory's ports.json
        # gives last start's (a taken one moves, with a warning); else free ones.
        self._port_base = ports
        self._pinned = ports is not None
        self._moved_ports: list[str] = []
        self._listeners: dict[tuple[str, str], ImapService | Pop3Service] = {}
        self._by_address: dict[str, str] = {}
        # What the servers ask of the lab; it shares hosts, users and mailboxes with this facade.
        self.services = Services(scenario, self.clock, self.trace, self.faults, self.hosts, self.users, self._stores,
                                 self._by_address)
        # The servers each host runs, and the SMTP connections they serve (taken down with the host).
        self._servers: dict[str, list[Any]] = {}
        self._protocols: dict[str, weakref.WeakSet[LabSMTP]] = {}
        self._dns_server: DnsServer | None = None
        self._downgrade: DowngradeKit | None = None
        self._keygen: concurrent.futures.ThreadPoolExecutor | None = None
        self._dkim_pending: dict[str, concurrent.futures.Future[DkimKey]] = {}
        # Seconds an SMTP server waits for a client's next command before it says 421 and hangs up;
        # read when a connection opens, so changing it on a running lab affects new connections.
        self.smtp_idle_timeout = SMTP_IDLE_TIMEOUT

    # --- start / stop ---
    def start(self) -> Lab:
        if self._lang is not None:
            set_language(self._lang)  # kernel-wide: the views, widgets and exercises of this lab speak it too
        loop = self.services.loop = LoopThread(f"smtplab-{id(self):x}", smtp_threads=MAX_CONCURRENT_ATTEMPTS)
        limit_log_floods(loop.loop)
        # On a shared host only this Unix user's connections are served, unless the scenario opens the lab.
        self._guard = self.services.guard = ConnectionGuard(
            self.trace, allow_other_users=self.scenario.allow_other_users, peer_name=self.services.peer_name)
        warn_once(self._guard)
        try:
            self._prepare()
            self._call(self._start_services())
        except OSError as exc:
            self.stop()
            # A read-only, full or foreign --dir is one sentence that says what to do, not a traceback.
            error = directory_error(exc, self.directory)
            if error is None:
                raise
            raise error from None
        except BaseException:
            self.stop()
            raise
        self.running = True
        self.clock.subscribe(self._on_clock)
        _all_labs.add(self)
        return self

    def _prepare(self) -> None:
        # A new RSA-2048 key takes 25-200 ms (OpenSSL, which lets go of the GIL): the keys of the providers
        # that sign are made on threads of their own while the lab sets up and its servers start.
        keys = DkimKeys(self.directory / "tls")
        signing = [p.domain for p in self.scenario.providers if p.security.get("dkim")]
        if signing:
            self._keygen = concurrent.futures.ThreadPoolExecutor(len(signing), thread_name_prefix="smtplab-keys")
            self._dkim_pending = {domain: self._keygen.submit(keys.get, domain) for domain in signing}
        distinct = _distinct_loopback_supported()
        self.clock.keep_in(self.directory / "clock.json")  # spool times are lab times: the offset must persist
        state_file = self.directory / "lab.json"
        saved: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
        passwords: dict[str, str] = saved.get("passwords", {})
        self.ca = LabCA(self.directory / "tls")
        self.ca_file = str(self.ca.ca_file)
        dns_address = "127.0.0.2" if distinct else "127.0.0.1"
        self._dns_address = dns_address
        by_address = [p.domain for p in self.scenario.providers if p.security.get("spf") or p.security.get("dnsbl")]
        if not distinct and by_address:
            warnings.warn(_(
                "this system gives the lab only 127.0.0.1 (Linux has all of 127.0.0.0/8), so every host shares "
                "one address: SPF and blocklist checks ({domains}) cannot tell the hosts apart "
                "and their results will not match the lessons. Run the course on Linux, Binder or JupyterHub "
                "for those.").format(domains=", ".join(by_address)), RuntimeWarning, stacklevel=4)
        for p_index, provider in enumerate(self.scenario.providers, start=1):
            store = MailStore(self.directory / "mail" / provider.domain, provider.domain)
            self._stores[provider.domain] = store
            for h_index, spec in enumerate(provider.hosts):
                address = f"127.0.{p_index}.{10 + h_index}" if distinct else "127.0.0.1"
                host = Host(spec.name, address, provider.domain, spec.services, options=spec.options,
                            _lab=self, _power=self._power)
                self.hosts[spec.name] = host
                if distinct:
                    self._by_address[address] = spec.name
            for address, fixed in provider.users:
                password = fixed or passwords.get(address) or _new_password()
                self.users[address] = User(address, password, provider.domain)
                store.add_user(address)
        hosts = [(name, host.services) for name, host in self.hosts.items()]
        self._dns_port, planned = plan_ports(self._port_base, hosts) if self._port_base is not None \
            else load_ports(self.directory)
        for name, wanted in planned.items():
            if name in self.hosts:
                self.hosts[name].ports.update((s, p) for s, p in wanted.items()
                                              if s in listeners_of(self.hosts[name].services))
        write_private(state_file, json.dumps({"scenario": self.scenario.to_dict(),
                                              "passwords": {a: u.password for a, u in self.users.items()}}, indent=1))
        self.services.client_context = self.ca.client_context()

    async def _start_services(self) -> None:
        loop = self.services.loop
        assert loop is not None
        ledger = self.services.ledger = DeliveryLedger(self.directory / "ledger")
        policies = RelayTlsPolicies(lambda: lab_resolver(self.dns.address, self.dns.port), self.clock.now,
                                    self.ca_file, lambda address: self._require_downgrade().https_port(address))
        self._downgrade = DowngradeKit(trace=self.trace, call=self._call, policies=policies,
                                       edit_zones=lambda edit: self._call(self._edit_zones(edit)),
                                       server_context=self.ca.server_context, tls_directory=self.directory / "tls",
                                       now=self.clock.now)
        relay = self.services.relay = Relay(
            self.directory / "queue", trace=self.trace, now=self.clock.now,
            resolver=lambda: lab_resolver(self.dns.address, self.dns.port),
            host_address=lambda name: self.hosts[name].address,
            smtp_port=self.services.smtp_port, client_context=self.ca.relay_context(),
            disk=loop.disk, ledger=ledger, smtp_pool=loop.smtp,
            tls_policy=policies, route=self._downgrade.route,
        )
        for provider in self.scenario.providers:
            imap_hosts = [h for h in provider.hosts if "imap" in h.services]
            store = self._stores[provider.domain]

            def maildrop(address: str, store: MailStore = store) -> Path | None:
                return store.user_path(address) if store.has_user(address) else None

            for spec in imap_hosts:
                host = self.hosts[spec.name]
                context = self.ca.server_context(host.name, host.address)
                service = ImapService(self.directory / "mail" / provider.domain, host.name, host.address,
                                      context, self.trace, self.services.peer_name, guard=self._guard)
                service.wiretap = self._keep_wire
                self._imap[host.name] = service
                self._listeners[host.name, "imap"] = service
                self._listeners[host.name, "imaps"] = ImapService(
                    self.directory / "mail" / provider.domain, host.name, host.address, context, self.trace,
                    self.services.peer_name, guard=self._guard, implicit_tls=True)
                for name, implicit in (("pop3", False), ("pop3s", True)):
                    self._listeners[host.name, name] = Pop3Service(
                        host.name, host.address, context, self.trace, implicit_tls=implicit,
                        check_password=self.services.check_password, maildrop=maildrop,
                        peer_name=self.services.peer_name,
                        guard=self._guard)
            if imap_hosts:
                self._stores[provider.domain].on_delivered = self.services.mailbox_changed
                service = self._imap[imap_hosts[0].name]
                for address, _password in provider.users:
                    await service.add_user(address, self.users[address].password, address.rsplit("@", 1)[0])
        await asyncio.gather(*(self._host_up(host) for host in self.hosts.values()))
        # The zones without the DKIM keys, built now: a scenario's bad record stops the start, as it should.
        addresses = self._zone_addresses()
        plain = build_zones(zone_lines(self.scenario, addresses, {}), addresses, self.scenario.dns_name)
        dns_server = self._dns_server = DnsServer(None if self._dkim_pending else plain, self._dns_address,
                                                  self.trace, self.scenario.dns_name, self.services.peer_name,
                                                  guard=self._guard)
        dns_server.wiretap = self._keep_wire

        async def start_dns(port: int) -> int:
            await dns_server.start(port)
            return dns_server.port

        await self._bind(f"{self.scenario.dns_name} dns", self._dns_port, start_dns)
        self.dns = self.services.dns = DnsInfo(self.scenario.dns_name, self._dns_address, self._dns_server.port)
        self._pinned = False  # from here on (a host brought up again), a taken port moves with a warning
        save_ports(self.directory, self.dns.port, {name: dict(h.ports) for name, h in self.hosts.items()})
        self._warn_moved_ports()
        await relay.start()
        # The zones publish the DKIM keys. The lab is ready without waiting for them: a DNS question that
        # comes before they are made is answered as soon as they are, and a message waits for its signature.
        if self._dkim_pending:
            self.services.keys_published = asyncio.ensure_future(self._publish_zones(plain))

    def _zone_addresses(self) -> dict[str, str]:
        addresses = {name: host.address for name, host in self.hosts.items()}
        addresses[self.scenario.dns_name] = self._dns_address
        return addresses

    async def _publish_zones(self, plain: dict[Any, Any]) -> None:
        """Once the DKIM keys are made, publish the zones with them (the DNS holds questions until then)."""
        assert self._dns_server is not None
        zones = plain
        try:
            keys: dict[str, DkimKey] = {}
            for domain, future in self._dkim_pending.items():
                try:
                    keys[domain] = await asyncio.wrap_future(future)
                except Exception as exc:  # OpenSSL could not make a key: that provider sends unsigned mail
                    self.trace.record("lab", "state", domain, f"no DKIM key for {domain} ({exc}): mail goes unsigned",
                                      payload=LabChange("key", domain))
            self.services.dkim_keys = keys
            addresses = self._zone_addresses()
            zones = build_zones(zone_lines(self.scenario, addresses, keys), addresses, self.scenario.dns_name)
        finally:  # whatever happened, the DNS answers from here on
            self._stop_keygen()
            self._dns_server.zones = zones

    def _stop_keygen(self, wait: bool = False) -> None:
        keygen, self._keygen, self._dkim_pending = self._keygen, None, {}
        if keygen is not None:
            keygen.shutdown(wait=wait, cancel_futures=True)

    def _power(self, host: Host, up: bool) -> None:
        """`host.up()` / `host.down()`: start or stop every service of `host` (on the loop)."""
        self._call(self._host_up(host) if up else self._host_down(host))

    async def _host_up(self, host: Host) -> None:
        servers = self._servers.setdefault(host.name, [])
        if servers:
            return
        for listener in listeners_of(host.services):
            async def listen(port: int, listener: str = listener) -> int:
                service = self._listeners.get((host.name, listener))
                if service is not None:
                    await service.start(port)
                    servers.append(service)
                    return service.port
                server = await self._smtp_server(host, listener, port)
                servers.append(server)
                return int(server.sockets[0].getsockname()[1])

            host.ports[listener] = await self._bind(f"{host.name} {listener}", host.ports.get(listener, 0), listen)
        host.is_up = True
        if self.running:
            save_ports(self.directory, self.dns.port, {name: dict(h.ports) for name, h in self.hosts.items()})
            self._warn_moved_ports()
            self.trace.record("lab", "state", host.name, f"{host.name} is up again", peer=host.name,
                              payload=LabChange("up", host.name))

    async def _bind(self, what: str, wanted: int, listen: Callable[[int], Awaitable[int]]) -> int:
        """Listen on port `wanted` (0: any free port) and return the port; see `_port_base` for a taken one."""
        if wanted:
            try:
                return await listen(wanted)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                if self._pinned:
                    raise PortInUse(_("{what}: port {wanted} is taken ({strerror}); stop what uses it, or choose "
                                      "another base (ports=BASE, `up --ports BASE`)").format(
                        what=what, wanted=wanted, strerror=exc.strerror)) from None
                port = await listen(0)
                self._moved_ports.append(f"{what} {wanted} -> {port}")
                return port
        return await listen(0)

    def _warn_moved_ports(self) -> None:
        """Say once, in the trace and as a warning, which remembered ports were taken and moved."""
        moved, self._moved_ports = self._moved_ports, []
        if moved:
            text = _("ports taken by another program, so these services listen elsewhere this time: "
                     "{services} (update your mail client's settings)").format(services="; ".join(moved))
            self.trace.record("lab", "state", "lab", text, payload=Note(warning=True))
            warnings.warn(text, RuntimeWarning, stacklevel=2)

    async def _smtp_server(self, host: Host, service: str, port: int) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        domains = (host.domain,)
        note = ""
        context = self.ca.server_context(host.name, host.address)
        if service in ("submission", "submissions"):
            handler: Any = SubmissionHandler(self.services, host.name, domains)
            plain = "plaintext_auth" in host.options and service == "submission"  # a teaching toggle
            # submissions (RFC 8314): TLS from the first byte, so no STARTTLS to require and AUTH at once.
            implicit = service == "submissions"
            options = dict(require_starttls=not plain and not implicit, auth_required=True,
                           auth_require_tls=not plain and not implicit, authenticator=handler.authenticator)
            if plain:
                note = "teaching toggle: this host accepts passwords WITHOUT TLS - anyone on the wire can read them"
        else:
            handler = InboundHandler(self.services, host.name, domains)
            options = dict(auth_exclude_mechanism=["LOGIN", "PLAIN"])
            implicit = False
        if "open_relay" in host.options and service == "smtp":
            note = "teaching toggle: this host is an OPEN RELAY - it passes on mail for any domain"

        def factory() -> LabSMTP:
            with warnings.catch_warnings():  # aiosmtpd warns about AUTH without TLS: that is the point here
                warnings.simplefilter("ignore", UserWarning)
                protocol = LabSMTP(handler, trace=self.trace, host_name=host.name, port_name=service,
                                   peer_name=self.services.peer_name, faults=self.services.fault_for,
                                   tls_context=None if implicit else context,
                                   data_size_limit=10 * 1024 * 1024, wiretap=self._keep_wire, note=note,
                                   timeout=self.smtp_idle_timeout, loop=loop, **options)
            self._protocols.setdefault(host.name, weakref.WeakSet()).add(protocol)
            return protocol

        # Another user's connection is closed before a protocol exists; one too many hears 421 (net/guard.py).
        busy = TOO_MANY_CONNECTIONS.format(host=host.name).encode() + b"\r\n"
        return await loop.create_server(self._guard.protocol_factory(factory, host.name, service, busy=busy),
                                        host=host.address, port=port, backlog=BACKLOG,
                                        ssl=context if implicit else None)

    async def _host_down(self, host: Host) -> None:
        await self._host_down_quiet(host)
        self.trace.record("lab", "state", host.name, f"{host.name} is down: connections are refused",
                          peer=host.name, payload=LabChange("down", host.name))

    def stop(self) -> None:
        """Stop every server and thread of the lab; remove its directory if it was temporary."""
        global _current
        self.clock.unsubscribe(self._on_clock)
        self._stop_keygen(wait=True)  # a key still being made is written into the lab directory: wait for it
        loop, self.services.loop = self.services.loop, None
        if self._downgrade is not None:
            self._downgrade.close()
        if loop is not None:
            async def shutdown() -> None:
                if self.services.relay is not None:
                    await self.services.relay.stop()
                await asyncio.gather(*(self._host_down_quiet(h) for h in self.hosts.values()))
                if self._dns_server is not None:
                    await self._dns_server.stop()
                if self._downgrade is not None:
                    await self._downgrade.stop_attackers()

            try:
                loop.call(shutdown(), timeout=30)
            finally:
                loop.close()
        self.services.close()
        if hasattr(self, "ca"):
            self.ca.close()  # the key log file OpenSSL holds open
        self.running = False
        with _start_lock:
            if _current is self:
                _current = None
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _host_down_quiet(self, host: Host) -> None:
        servers, self._servers[host.name] = self._servers.get(host.name, []), []
        for server in servers:
            if isinstance(server, (ImapService, Pop3Service)):
                await server.stop()
            else:
                server.close()
        for protocol in list(self._protocols.get(host.name, ())):
            protocol.abort()  # a crashed host drops its connections at once
        for server in servers:
            if not isinstance(server, (ImapService, Pop3Service)):
                await server.wait_closed()
        host.is_up = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        services = getattr(self, "services", None)
        if services is not None and services.loop is not None:
            try:
                self.stop()
            except Exception:
                pass

    # --- what a learner looks at ---
    def host(self, name: str) -> Host:
        """Return the host called `name` (e.g. 'mx1.example.net'); a short name like 'mx1' works too."""
        name = name.lower().rstrip(".")
        if name in self.hosts:
            return self.hosts[name]
        matches = [h for n, h in self.hosts.items() if n.split(".", 1)[0] == name]
        if len(matches) == 1:
            return matches[0]
        raise UnknownHost(_("no host {name!r} in this lab; hosts: {hosts}").format(
            name=name, hosts=', '.join(self.hosts)))

    def user(self, address: str) -> User:
        try:
            return self.users[address.lower()]
        except KeyError:
            raise UnknownUser(_("no user {address!r} in this lab; users: {users}").format(
                address=address, users=', '.join(self.users))) from None

    def submission_host(self, address: str) -> Host:
        """Return the host where `address`'s provider accepts submissions."""
        domain = address.rpartition("@")[2].lower()
        for host in self.hosts.values():
            if host.domain == domain and "submission" in host.services:
                return host
        raise UnknownHost(_("{domain} has no submission host in this lab").format(domain=domain))

    def imap_host(self, address: str) -> Host:
        domain = address.rpartition("@")[2].lower()
        for host in self.hosts.values():
            if host.domain == domain and "imap" in host.services:
                return host
        raise UnknownHost(_("{domain} has no IMAP host in this lab").format(domain=domain))

    @property
    def queue(self) -> list[QueueItem]:
        """Snapshot of the relay queue: every message, its recipients' states and replies."""
        return self.services.require_relay().items()

    def queue_item(self, queue_id: str) -> QueueItem:
        """Return the queue entry of one message (by the id in '250 ... queued as ID')."""
        item = self.services.require_relay().get(queue_id)
        if item is None:
            raise UnknownMessage(_("no message {queue_id!r} in the queue; the ids are in lab.queue ({ids}), and in "
                                   "the 'queued as ID' of the reply to DATA").format(
                queue_id=queue_id, ids=", ".join(i.queue_id for i in self.queue) or _("empty")))
        return item

    def wait_for_delivery(self, queue_id: str | None = None, timeout: float = 30.0) -> bool:
        """Block until no delivery attempt is running (for one message or all)."""
        return self.services.require_relay().wait_settled(queue_id, timeout)

    def lookup_mx(self, domain: str) -> list[MXRecord]:
        """Ask the lab DNS for `domain`'s MX records, lowest preference first (the queries are traced)."""
        self._require_running()
        return self._call(lookup_mx_async(domain, lab_resolver(self.dns.address, self.dns.port)))

    def dig(self, name: str, rdtype: str = "MX") -> DigResult:
        """Ask the lab DNS one question, like `dig`; the result shows the raw question and answer."""
        self._require_running()
        return self._call(dig_async(name, rdtype, self.dns.address, self.dns.port))

    def messages(self, address: str, folder: str = "INBOX") -> list[Any]:
        """Read a user's mailbox straight from disk (no IMAP): a list of email.message.EmailMessage."""
        self._require_running()  # a stopped temporary lab has no mailboxes left to read
        user = self.user(address)
        return self._stores[user.domain].messages(user.address, folder)

    def mark(self) -> int:
        """Return a trace mark: `lab.trace.since(mark)` is everything after this moment."""
        return self.trace.mark()

    def ladder(self, message_id: Any = None, *, conn: str | list[str] | None = None, since: int | None = None,
               events: list[Any] | None = None, title: str | None = None) -> Any:
        """Draw a ladder diagram: one message end to end (queue id, Message-ID or SendResult), one or
        more connections (`conn="smtp-1"`), everything since `lab.mark()`, or given `events`."""
        from .views.ladder import ladder_of  # the views layer, loaded when a diagram is asked for

        return ladder_of(self, message_id, conn=conn, since=since, events=events, title=title)

    def topology(self, message_id: Any = None, *, title: str | None = None) -> Any:
        """Draw the lab's providers, hosts, DNS and MX records; with `message_id`, that message's path."""
        from .views.topology import topology

        return topology(self, message_id, title=title)

    def send(self, sender: str, recipients: str | list[str], subject: str = "Hello", body: str = "Hello!\n", *,
             password: str | None = None, headers: Mapping[str, str] | None = None, wait: bool = True,
             notify: str | list[str] | None = None, ret: str | None = None, envid: str | None = None) -> SendResult:
        """Submit a message as `sender` like a real mail client (STARTTLS + AUTH on the submission port).

        With `wait`, return once the relay has tried to deliver it (delivered, deferred or bounced).
        Delivery status notifications (RFC 3461): `notify` "SUCCESS", "DELAY", "FAILURE" (comma-separated
        or a list) or "NEVER"; `ret` "FULL" or "HDRS" (a failure returns the whole message or its headers);
        `envid` an id of yours that every notification quotes (Original-Envelope-Id).
        Raises SendError with the server's reply when the submission server refuses.
        """
        self._require_running()
        return send_from_lab(self, sender, recipients, subject, body, password=password, headers=headers, wait=wait,
                             notify=notify, ret=ret, envid=envid)

    # --- the TLS downgrade lesson (smtplab/net/mitm.py, smtplab/auth/: mtasts.py, dane.py, tlspolicy.py) ---
    def mitm(self, target: str = "example.net") -> Attacker:
        """Put a STARTTLS-stripping attacker on the path from the relay to an MX host (`"mx1.example.net"`),
        or to every MX host of a domain (`"example.net"`, the default: no backup MX escapes it).

        DNS is untouched; the relay's connections to those hosts go through the attacker (a loopback address of
        its own, a transparent proxy: the MX still sees the relay's address), which deletes STARTTLS from the
        EHLO reply. `.stop()` takes it off the path.
        """
        self._require_running()
        provider = next((p for p in self.scenario.providers if p.domain == target), None)
        names = [n for _, n in provider.mx if n in self.hosts] if provider is not None else [self.host(target).name]
        hosts = [self.hosts[n] for n in names if "smtp" in self.hosts[n].ports]
        if not hosts:
            raise UnknownHost(_("{target} runs no SMTP service to attack; try an MX such as mx1.example.net").format(
                target=target))
        return self._require_downgrade().start_attacker([(h.name, h.address, h.ports["smtp"]) for h in hosts],
                                                        _sibling_address(hosts[0].address, 66))

    def mta_sts(self, domain: str = "example.net", mode: str = "enforce", *, mx: list[str] | None = None,
                max_age: int = 86400) -> Any:
        """Publish an MTA-STS policy (RFC 8461) for `domain`: the `_mta-sts` TXT record and an HTTPS host
        `mta-sts.<domain>` serving it; the relay then fetches it and enforces it. Returns the policy server."""
        self._require_running()
        provider = next((p for p in self.scenario.providers if p.domain == domain), None)
        if provider is None:
            raise ScenarioError(_("no provider serves {domain}; try one of {domains}").format(
                domain=domain, domains=", ".join(p.domain for p in self.scenario.providers)))
        names = tuple(mx) if mx is not None else tuple(name for _, name in provider.mx if name != ".")
        first = next((self.hosts[n].address for n in names if n in self.hosts), self._dns_address)
        return self._require_downgrade().publish_mta_sts(domain, mode, names, _sibling_address(first, 80), max_age)

    def dane(self, domain: str = "example.net") -> list[str]:
        """Sign `domain`'s zone with DNSSEC and publish a TLSA record for each of its MX hosts (RFC 7672);
        the relay gets the zone's key as its trust anchor and checks TLSA from then on. Returns the records."""
        self._require_running()
        provider = next((p for p in self.scenario.providers if p.domain == domain), None)
        if provider is None:
            raise ScenarioError(_("no provider serves {domain}").format(domain=domain))
        exchanges = [name for _, name in provider.mx if name in self.hosts and "smtp" in self.hosts[name].ports]
        for name in exchanges:
            self.ca.server_context(name, self.hosts[name].address)  # its certificate exists from its start
        return self._require_downgrade().publish_dane(domain, exchanges)

    async def _edit_zones(self, edit: Callable[[dict[Any, Any]], None]) -> None:
        """Change the published zones on the DNS server's loop (after the DKIM keys are in them)."""
        await self.services.keys_ready()
        assert self._dns_server is not None and self._dns_server.zones is not None
        zones = self._dns_server.zones
        edit(zones)
        self._dns_server.zones = zones  # answers cached from the old zones are forgotten

    def _require_downgrade(self) -> DowngradeKit:
        if self._downgrade is None:
            raise LabNotRunning(_("this lab is stopped; start a new one with smtplab.start()"))
        return self._downgrade

    def session(self, host: str, service: str | None = None, *, timeout: float = 5.0,
                source: str | None = None) -> SmtpSession:
        """Open a raw SMTP conversation with `host` (submission port if it has one, else smtp)."""
        self._require_running()
        return open_session(self, host, service, timeout, source=self.host(source).address if source else None)

    def imap(self, address: str, *, starttls: bool = True) -> Any:
        """Return an imaplib.IMAP4 connection logged in as `address` on its provider's IMAP host."""
        self._require_running()
        return open_imap(self, address, starttls=starttls)

    def pop3(self, address: str) -> Any:
        """Return a poplib.POP3 connection logged in as `address` on its provider's POP3 port (after STLS).

        The maildrop stays locked for other POP3 sessions until `.quit()` (which also removes what was
        deleted with `.dele(n)`, RFC 1939 section 6) or until the connection closes (then nothing is removed).
        """
        import poplib

        self._require_running()
        user, host = self.user(address), self.imap_host(address)
        client = poplib.POP3(host.address, host.ports["pop3"], timeout=30)
        try:
            client.stls(self.services.client_context)
            client.user(user.login)
            client.pass_(user.password)
        except BaseException:
            client.close()
            raise
        return client

    def describe(self) -> dict[str, Any]:
        """Return hosts, ports, users and files as plain data (what `python -m smtplab up --json` prints)."""
        return {
            "directory": str(self.directory),
            "ca_file": self.ca_file,
            "dns": {"name": self.dns.name, "address": self.dns.address, "port": self.dns.port},
            "hosts": {
                h.name: {"address": h.address, "ports": dict(h.ports), "up": h.is_up} for h in self.hosts.values()
            },
            "users": {u.address: {"password": u.password, "login": u.login} for u in self.users.values()},
        }

    def __repr__(self) -> str:
        state = _("running") if self.running else _("stopped")
        if not hasattr(self, "dns"):
            return f"<Lab {state}>"
        return "<Lab " + _("{state}: {hosts} hosts, {users} users, dns {address}:{port}").format(
            state=state, hosts=len(self.hosts), users=len(self.users), address=self.dns.address,
            port=self.dns.port) + ">"

    def _repr_html_(self) -> str:
        from html import escape

        def on_the_internet(service: str) -> str:
            return escape(_("{port} on the Internet").format(port=WELL_KNOWN_PORTS.get(service, "?")))

        up, down = escape(_("up")), escape(_("down"))
        rows = "".join(
            f"<tr><td>{escape(h.name)}</td><td>{h.address}</td><td>"
            + ", ".join(f'<span title="{on_the_internet(s)}">{s} {p}</span>' for s, p in h.ports.items())
            + f"</td><td>{up if h.is_up else f'<b>{down}</b>'}</td></tr>"
            for h in self.hosts.values()
        )
        users = "".join(f"<tr><td>{escape(u.address)}</td><td><code>{escape(u.password)}</code></td></tr>"
                        for u in self.users.values())
        host_headers = "".join(f"<th>{escape(h)}</th>" for h in (_("host"), _("address"), _("ports"), _("state")))
        user_headers = "".join(f"<th>{escape(h)}</th>" for h in (_("user"), _("password")))
        state = escape(_("running") if self.running else _("stopped"))
        note = escape(_("submissions, imaps, pop3s: TLS from the first byte (RFC 8314); submission, imap, pop3: "
                        "STARTTLS/STLS first. Hover a port for its number on the Internet."))
        return (
            f"<b>smtplab</b> ({state}) &mdash; DNS {self.dns.address}:{self.dns.port}"
            f"<table><tr>{host_headers}</tr>{rows}</table><small>{note}</small>"
            f"<table><tr>{user_headers}</tr>{users}</table>"
        )

    def wire(self, conn: str) -> WireTap:
        """What an eavesdropper saw of SMTP connection `conn`: clear text before STARTTLS, TLS records after."""
        tap = self._wires.get(conn)
        if tap is None:
            raise UnknownConnection(_("no SMTP connection {conn!r} (kept: the last {wire_keep}); ids are in "
                                      "lab.trace.connections('smtp')").format(conn=conn, wire_keep=WIRE_KEEP))
        return tap

    def _keep_wire(self, tap: WireTap) -> None:
        tap.clock = self.clock.now  # the capture's times are the trace's: lab time
        self._wires.add(tap)

    def pcap(self, path: str | Path, message: Any = None) -> Any:
        """Write the lab's traffic (or one message's: queue id, Message-ID or SendResult) as a pcapng file
        that Wireshark and tshark read, and the TLS key log beside it; return both paths (`Capture`).
        See `smtplab.views.pcap` for what is in them."""
        from .views.pcap import write_capture

        self._require_running()  # a stopped temporary lab has no key log any more
        return write_capture(self, path, message, self._wires.taps(), self.ca.keylog())

    # --- internals ---
    def _on_clock(self) -> None:
        self.trace.record("lab", "state", "clock",
                          f"clock advanced: lab time is now {self.clock.datetime():%Y-%m-%d %H:%M:%S} UTC",
                          payload=LabChange("clock", f"{self.clock.now():.0f}"))
        if self.services.relay is not None:
            self.services.relay.clock_advanced()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return self.services.call(coro, timeout)

    def _require_running(self) -> None:
        if self.services.loop is None:
            raise LabNotRunning(_("this lab is stopped; start a new one with smtplab.start()"))


def _sibling_address(address: str, last: int) -> str:
    """An address beside `address` in its /24 (127.0.2.10 -> 127.0.2.66); 127.0.0.1 stays (no own addresses)."""
    if address == "127.0.0.1":
        return address
    return address.rsplit(".", 1)[0] + f".{last}"


def _warn_if_exposed(directory: Path) -> None:
    """Warn when a lab directory the user made is open to other users (the lab never widens or narrows it)."""
    try:
        mode = directory.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        warnings.warn(_(
            "the lab directory {directory} can be entered by other users (mode {mode:o}): the lab's own folders "
            "and files in it are private (0700/0600), but names of files are visible. `chmod 700 {directory}` "
            "closes it.").format(directory=directory, mode=mode), RuntimeWarning, stacklevel=4)


def _new_password() -> str:
    # Readable, typeable passwords: learners copy them into swaks and curl.
    return secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


def start(scenario: Scenario | Mapping[str, Any] | None = None, directory: str | Path | None = None,
          ports: int | None = None, lang: str | None = None) -> Lab:
    """Start a lab (the default scenario unless one is given) and return it, running.

    A lab started earlier with `start()` in this process is stopped first, so re-running a
    notebook cell never leaves servers behind. Give `directory` to keep mailboxes, the queue and the
    ports (a lab started again there listens where it did). `ports=BASE` pins every port: the DNS on
    BASE, the n-th host's services on BASE + 10*n + 0 smtp, 1 submission, 2 submissions, 3 imap,
    4 imaps, 5 pop3, 6 pop3s (raises PortInUse when one is taken).

    `lang` ("en", "es") is the language of everything the learner reads (explanations, feedback, widgets,
    errors; never the protocol lines): else the language chosen earlier in this kernel, else SMTPLAB_LANG, else
    the locale, else English (smtplab.i18n). An unknown one raises UnknownLanguage before anything starts.
    """
    global _current
    resolve_language(lang)
    with _start_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.stop()
    lab = Lab(scenario, directory, ports, lang=lang).start()
    with _start_lock:
        _current = lab
    return lab


def current() -> Lab | None:
    """Return the lab started last by `start()` (None when stopped)."""
    return _current


@atexit.register
def _stop_all() -> None:
    for lab in list(_all_labs):
        try:
            lab.stop()
        except Exception:
            pass
