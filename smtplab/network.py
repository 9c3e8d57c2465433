"""The lab's servers: made from the scenario, started on the lab's loop, stopped; a host taken down and up.

`Lab` (lab.py) is what a learner holds; it makes one `Network` when it starts and asks it to stop. The
network gives every host its loopback address and ports (kept in the lab directory, so a lab started again
listens where it did), makes the CA and the DKIM keys, and starts the DNS, SMTP, IMAP and POP3 servers and
the relay, each behind the connection guard and wired to `lab.services`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import socket
import warnings
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .auth.tlspolicy import DowngradeKit, RelayTlsPolicies
from .errors import LabNotRunning, PortInUse
from .files import write_private
from .hosts import DnsInfo, Host, User, listeners_of, load_ports, new_password, plan_ports, save_ports
from .i18n import N_, _, lazy
from .loop import LoopThread
from .mail.handlers import InboundHandler, SubmissionHandler
from .mail.ledger import DeliveryLedger
from .mail.queue import MAX_CONCURRENT_ATTEMPTS
from .mail.relay import Relay
from .mail.store import MailStore
from .net.dns_lookup import lab_resolver
from .net.dns_server import DnsServer, build_zones
from .net.guard import BACKLOG, ConnectionGuard, limit_log_floods, warn_once
from .net.imap import ImapService
from .net.pop3 import Pop3Service
from .net.replies import TOO_MANY_CONNECTIONS
from .net.smtp import LabSMTP
from .net.tls import LabCA
from .net.wire import WireTap
from .trace.events import LabChange, Note
from .zones import DkimKey, DkimKeys, zone_lines

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Network"]

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


class Network:
    """The servers of one lab (one per `Lab.start`)."""

    def __init__(self, lab: Lab, ports: int | None, keep_wire: Callable[[WireTap], None]) -> None:
        self.lab = lab
        self.scenario = lab.scenario
        self.directory = lab.directory
        self.clock = lab.clock
        self.trace = lab.trace
        self.hosts = lab.hosts
        self.users = lab.users
        self.services = lab.services
        self._keep_wire = keep_wire  # every connection's raw bytes go to the lab (lab.wire, lab.pcap)
        self.ca: LabCA  # made by `prepare`
        self.ca_file: str
        self.dns: DnsInfo  # set by `start` once the DNS server listens
        self.dns_server: DnsServer | None = None
        self.imap: dict[str, ImapService] = {}  # host name -> its IMAP service (IDLE, users)
        self.downgrade: DowngradeKit | None = None
        self.started = False
        # Ports: `ports=BASE` pins them (a taken one is an error); else the lab directory's ports.json
        # gives last start's (a taken one moves, with a warning); else free ones.
        self._port_base = ports
        self._pinned = ports is not None
        self._moved_ports: list[str] = []
        self._listeners: dict[tuple[str, str], ImapService | Pop3Service] = {}
        # The servers each host runs, and the SMTP connections they serve (taken down with the host).
        self._servers: dict[str, list[Any]] = {}
        self._protocols: dict[str, weakref.WeakSet[LabSMTP]] = {}
        self._keygen: concurrent.futures.ThreadPoolExecutor | None = None
        self._dkim_pending: dict[str, concurrent.futures.Future[DkimKey]] = {}
        loop = self.services.loop = LoopThread(f"smtplab-{id(lab):x}", smtp_threads=MAX_CONCURRENT_ATTEMPTS)
        limit_log_floods(loop.loop)
        # On a shared host only this Unix user's connections are served, unless the scenario opens the lab.
        self._guard = self.services.guard = ConnectionGuard(
            self.trace, allow_other_users=self.scenario.allow_other_users, peer_name=self.services.peer_name)
        warn_once(self._guard)

    def require_downgrade(self) -> DowngradeKit:
        if self.downgrade is None:
            raise LabNotRunning(_("this lab is stopped; start a new one with smtplab.start()"))
        return self.downgrade

    def prepare(self) -> None:
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
            self.services.stores[provider.domain] = store
            for h_index, spec in enumerate(provider.hosts):
                address = f"127.0.{p_index}.{10 + h_index}" if distinct else "127.0.0.1"
                host = Host(spec.name, address, provider.domain, spec.services, options=spec.options,
                            _lab=self.lab, _power=self.power)
                self.hosts[spec.name] = host
                if distinct:
                    self.services.name_address(address, spec.name)
            for address, fixed in provider.users:
                password = fixed or passwords.get(address) or new_password()
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

    async def start(self) -> None:
        loop = self.services.loop
        assert loop is not None
        ledger = self.services.ledger = DeliveryLedger(self.directory / "ledger")
        policies = RelayTlsPolicies(lambda: lab_resolver(self.dns.address, self.dns.port), self.clock.now,
                                    self.ca_file, lambda address: self.require_downgrade().https_port(address))
        self.downgrade = DowngradeKit(trace=self.trace, call=self.services.call, policies=policies,
                                       edit_zones=lambda edit: self.services.call(self.edit_zones(edit)),
                                       server_context=self.ca.server_context, tls_directory=self.directory / "tls",
                                       now=self.clock.now)
        relay = self.services.relay = Relay(
            self.directory / "queue", trace=self.trace, now=self.clock.now,
            resolver=lambda: lab_resolver(self.dns.address, self.dns.port),
            host_address=lambda name: self.hosts[name].address,
            smtp_port=self.services.smtp_port, client_context=self.ca.relay_context(),
            disk=loop.disk, ledger=ledger, smtp_pool=loop.smtp,
            tls_policy=policies, route=self.downgrade.route,
        )
        for provider in self.scenario.providers:
            imap_hosts = [h for h in provider.hosts if "imap" in h.services]
            store = self.services.stores[provider.domain]

            def maildrop(address: str, store: MailStore = store) -> Path | None:
                return store.user_path(address) if store.has_user(address) else None

            for spec in imap_hosts:
                host = self.hosts[spec.name]
                context = self.ca.server_context(host.name, host.address)
                service = ImapService(self.directory / "mail" / provider.domain, host.name, host.address,
                                      context, self.trace, self.services.peer_name, guard=self._guard)
                service.wiretap = self._keep_wire
                self.imap[host.name] = service
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
                self.services.stores[provider.domain].on_delivered = self.services.mailbox_changed
                service = self.imap[imap_hosts[0].name]
                for address, _password in provider.users:
                    await service.add_user(address, self.users[address].password, address.rsplit("@", 1)[0])
        await asyncio.gather(*(self._host_up(host) for host in self.hosts.values()))
        # The zones without the DKIM keys, built now: a scenario's bad record stops the start, as it should.
        addresses = self._zone_addresses()
        plain = build_zones(zone_lines(self.scenario, addresses, {}), addresses, self.scenario.dns_name)
        dns_server = self.dns_server = DnsServer(None if self._dkim_pending else plain, self._dns_address,
                                                  self.trace, self.scenario.dns_name, self.services.peer_name,
                                                  guard=self._guard)
        dns_server.wiretap = self._keep_wire

        async def start_dns(port: int) -> int:
            await dns_server.start(port)
            return dns_server.port

        await self._bind(f"{self.scenario.dns_name} dns", self._dns_port, start_dns)
        self.dns = self.services.dns = DnsInfo(self.scenario.dns_name, self._dns_address, self.dns_server.port)
        self._pinned = False  # from here on (a host brought up again), a taken port moves with a warning
        save_ports(self.directory, self.dns.port, {name: dict(h.ports) for name, h in self.hosts.items()})
        self._warn_moved_ports()
        await relay.start()
        # The zones publish the DKIM keys. The lab is ready without waiting for them: a DNS question that
        # comes before they are made is answered as soon as they are, and a message waits for its signature.
        if self._dkim_pending:
            self.services.keys_published = asyncio.ensure_future(self._publish_zones(plain))
        self.started = True  # from here on, a host brought up again says so in the trace

    def _zone_addresses(self) -> dict[str, str]:
        addresses = {name: host.address for name, host in self.hosts.items()}
        addresses[self.scenario.dns_name] = self._dns_address
        return addresses

    async def _publish_zones(self, plain: dict[Any, Any]) -> None:
        """Once the DKIM keys are made, publish the zones with them (the DNS holds questions until then)."""
        assert self.dns_server is not None
        zones = plain
        try:
            keys: dict[str, DkimKey] = {}
            for domain, future in self._dkim_pending.items():
                try:
                    keys[domain] = await asyncio.wrap_future(future)
                except Exception as exc:  # OpenSSL could not make a key: that provider sends unsigned mail
                    self.trace.record("lab", "state", domain, lazy(N_("no DKIM key for {domain} ({error}): mail goes unsigned"),
                                                                   domain=domain, error=exc),
                                      payload=LabChange("key", domain))
            self.services.dkim_keys = keys
            addresses = self._zone_addresses()
            zones = build_zones(zone_lines(self.scenario, addresses, keys), addresses, self.scenario.dns_name)
        finally:  # whatever happened, the DNS answers from here on
            self._stop_keygen()
            self.dns_server.zones = zones

    def _stop_keygen(self, wait: bool = False) -> None:
        keygen, self._keygen, self._dkim_pending = self._keygen, None, {}
        if keygen is not None:
            keygen.shutdown(wait=wait, cancel_futures=True)

    def power(self, host: Host, up: bool) -> None:
        """`host.up()` / `host.down()`: start or stop every service of `host` (on the loop)."""
        self.services.call(self._host_up(host) if up else self._host_down(host))

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
        if self.started:
            save_ports(self.directory, self.dns.port, {name: dict(h.ports) for name, h in self.hosts.items()})
            self._warn_moved_ports()
            self.trace.record("lab", "state", host.name, lazy(N_("{host} is up again"), host=host.name), peer=host.name,
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
            text = lazy(N_("ports taken by another program, so these services listen elsewhere this time: "
                           "{services} (update your mail client's settings)"), services="; ".join(moved))
            self.trace.record("lab", "state", "lab", text, payload=Note(warning=True))
            warnings.warn(text.translated(), RuntimeWarning, stacklevel=2)

    async def _smtp_server(self, host: Host, service: str, port: int) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        domains = (host.domain,)
        note: str = ""
        context = self.ca.server_context(host.name, host.address)
        if service in ("submission", "submissions"):
            handler: Any = SubmissionHandler(self.services, host.name, domains)
            plain = "plaintext_auth" in host.options and service == "submission"  # a teaching toggle
            # submissions (RFC 8314): TLS from the first byte, so no STARTTLS to require and AUTH at once.
            implicit = service == "submissions"
            options = dict(require_starttls=not plain and not implicit, auth_required=True,
                           auth_require_tls=not plain and not implicit, authenticator=handler.authenticator)
            if plain:
                note = lazy(N_("teaching toggle: this host accepts passwords WITHOUT TLS - anyone on the wire can read them"))
        else:
            handler = InboundHandler(self.services, host.name, domains)
            options = dict(auth_exclude_mechanism=["LOGIN", "PLAIN"])
            implicit = False
        if "open_relay" in host.options and service == "smtp":
            note = lazy(N_("teaching toggle: this host is an OPEN RELAY - it passes on mail for any domain"))

        def factory() -> LabSMTP:
            with warnings.catch_warnings():  # aiosmtpd warns about AUTH without TLS: that is the point here
                warnings.simplefilter("ignore", UserWarning)
                protocol = LabSMTP(handler, trace=self.trace, host_name=host.name, port_name=service,
                                   peer_name=self.services.peer_name, faults=self.services.fault_for,
                                   tls_context=None if implicit else context,
                                   data_size_limit=10 * 1024 * 1024, wiretap=self._keep_wire, note=note,
                                   timeout=self.lab.smtp_idle_timeout, loop=loop, **options)
            self._protocols.setdefault(host.name, weakref.WeakSet()).add(protocol)
            return protocol

        # Another user's connection is closed before a protocol exists; one too many hears 421 (net/guard.py).
        busy = TOO_MANY_CONNECTIONS.format(host=host.name).encode() + b"\r\n"
        return await loop.create_server(self._guard.protocol_factory(factory, host.name, service, busy=busy),
                                        host=host.address, port=port, backlog=BACKLOG,
                                        ssl=context if implicit else None)

    async def _host_down(self, host: Host) -> None:
        await self._host_down_quiet(host)
        self.trace.record("lab", "state", host.name, lazy(N_("{host} is down: connections are refused"), host=host.name),
                          peer=host.name, payload=LabChange("down", host.name))

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

    async def edit_zones(self, edit: Callable[[dict[Any, Any]], None]) -> None:
        """Change the published zones on the DNS server's loop (after the DKIM keys are in them)."""
        await self.services.keys_ready()
        assert self.dns_server is not None and self.dns_server.zones is not None
        zones = self.dns_server.zones
        edit(zones)
        self.dns_server.zones = zones  # answers cached from the old zones are forgotten

    def stop(self) -> None:
        """Stop every server and thread (from any thread but the loop's); safe after a failed start."""
        self._stop_keygen(wait=True)  # a key still being made is written into the lab directory: wait for it
        loop, self.services.loop = self.services.loop, None
        if self.downgrade is not None:
            self.downgrade.close()
        if loop is not None:
            async def shutdown() -> None:
                if self.services.relay is not None:
                    await self.services.relay.stop()
                await asyncio.gather(*(self._host_down_quiet(h) for h in self.hosts.values()))
                if self.dns_server is not None:
                    await self.dns_server.stop()
                if self.downgrade is not None:
                    await self.downgrade.stop_attackers()

            try:
                loop.call(shutdown(), timeout=30)
            finally:
                loop.close()
        self.services.close()
        ca = getattr(self, "ca", None)  # a start that failed early made none
        if ca is not None:
            ca.close()  # the key log file OpenSSL holds open
        self.started = False
