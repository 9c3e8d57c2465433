"""The TLS downgrade lesson's moving parts: the relay's policy look-ups and the lab's attacker and cures.

- `RelayTlsPolicies` is what the relay asks before each MX (`Relay(tls_policy=...)`): DANE first (RFC 8461
  section 2: where an MX has DNSSEC-validated TLSA records, DANE decides), then MTA-STS. Both are switched on
  the way an operator switches them on (Postfix: `smtp_tls_security_level = dane`, an MTA-STS resolver
  plug-in): when the lab publishes the first policy.
- `DowngradeKit` publishes them (records in the lab zones, the zone signed, the HTTPS policy host) and puts
  an attacker on the path (smtplab/net/mitm.py). `Lab.mitm`, `Lab.mta_sts` and `Lab.dane` are its facade.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.zone
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import SmtpLabError
from ..i18n import N_, _, lazy
from ..net.dns_lookup import resolve_a
from ..net.mitm import StartTlsStripper
from ..trace.events import LabChange
from ..trace.ring import Trace
from .dane import DaneRequirement, DnssecBogus, lookup_tlsa, sign_zone, tlsa_owner, tlsa_rdata
from .mtasts import PolicyError, PolicyServer, StsPolicy, StsRequirement, fetch_policy, parse_policy, parse_txt

__all__ = ["RelayTlsPolicies", "DowngradeKit", "Attacker"]


@dataclass
class _Cached:
    policy_id: str
    policy: StsPolicy
    expires: float


class RelayTlsPolicies:
    """The relay's MTA-STS cache and DANE trust anchors; called for each MX the relay is about to try."""

    def __init__(self, resolver: Callable[[], dns.asyncresolver.Resolver], now: Callable[[], float],
                 ca_file: str, https_port: Callable[[str], int | None]) -> None:
        self._resolver = resolver
        self._now = now
        self._ca_file = ca_file
        self._https_port = https_port
        self.mta_sts = False  # look MTA-STS policies up (RFC 8461)
        self.anchors: dict[dns.name.Name, dns.rdataset.Rdataset] = {}  # DNSSEC trust anchors (DANE)
        self.cache: dict[str, _Cached] = {}  # domain -> policy (RFC 8461 section 5.1)

    async def __call__(self, domain: str, exchange: str, source: str,
                       note: Callable[[str], None]) -> DaneRequirement | StsRequirement | None:
        if self.anchors:
            try:
                records = await lookup_tlsa(exchange, self._resolver(), self.anchors, self._now(), source=source)
            except DnssecBogus as exc:
                return DaneRequirement(exchange, (), refused=f"451 4.7.5 DANE: {exc}; not delivered (RFC 7672 "
                                                             "section 2.1.1)")
            except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
                return DaneRequirement(exchange, (), refused=f"451 4.4.3 DANE: no answer for "
                                                             f"{tlsa_owner(exchange)} TLSA; trying later")
            if records:
                return DaneRequirement(exchange, records)
        if self.mta_sts:
            policy = await self._sts_policy(domain, source, note)
            if policy is not None and policy.mode != "none":
                return StsRequirement(domain, exchange, policy, self._ca_file, note)
        return None

    async def _sts_policy(self, domain: str, source: str, note: Callable[[str], None]) -> StsPolicy | None:
        """RFC 8461 sections 3.3 and 5.1: the TXT record's id says whether the cached policy is current."""
        now = self._now()
        cached = self.cache.get(domain)
        if cached is not None and cached.expires <= now:
            cached = None
        resolver = self._resolver()
        try:
            answer = await resolver.resolve(f"_mta-sts.{domain}", "TXT", source=source, raise_on_no_answer=False)
            ids = []
            for rdata in answer.rrset or []:
                try:
                    ids.append(parse_txt([s.decode("ascii", "replace") for s in rdata.strings]))
                except PolicyError:
                    continue
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.exception.Timeout):
            ids = []
        if len(ids) != 1:  # none, or several (RFC 8461 section 3.1: then none): the cache, if any, holds
            return cached.policy if cached is not None else None
        if cached is not None and cached.policy_id == ids[0]:
            return cached.policy
        host = f"mta-sts.{domain}"
        try:
            addresses = await resolve_a(host, resolver, source=source)
            port = self._https_port(addresses[0]) if addresses else None
            if port is None:
                raise PolicyError(_("{host} has no address where HTTPS answers").format(host=host))
            context = _verifying_context(self._ca_file)
            body = await asyncio.get_running_loop().run_in_executor(None, fetch_policy, domain, addresses[0], port,
                                                                    context, source)
            policy = parse_policy(body)
        except PolicyError as exc:
            # RFC 8461 section 5.1: a failed fetch leaves the cached policy in force (or none).
            note(f"MTA-STS: {exc}")
            return cached.policy if cached is not None else None
        self.cache[domain] = _Cached(ids[0], policy, now + policy.max_age)
        note(lazy(N_("MTA-STS: fetched {url} (id {id}): mode {mode}, mx {mx}, cached for {seconds} s"),
                  url=f"https://{host}/.well-known/mta-sts.txt", id=ids[0], mode=policy.mode, mx=", ".join(policy.mx),
                  seconds=policy.max_age))
        return policy


def _verifying_context(ca_file: str) -> Any:
    import ssl

    return ssl.create_default_context(cafile=ca_file)  # name and chain checked (RFC 8461 section 3.3)


class Attacker:
    """A STARTTLS-stripping man-in-the-middle on the path to one or more MX hosts (smtplab/net/mitm.py).

    `.stop()` takes it off the path; `.stripped` counts the EHLO replies it removed STARTTLS from.
    """

    def __init__(self, kit: DowngradeKit, proxies: list[StartTlsStripper]) -> None:
        self._kit = kit
        self.proxies = proxies

    @property
    def address(self) -> str:
        return self.proxies[0].address

    @property
    def targets(self) -> list[str]:
        return [p.target_name for p in self.proxies]

    @property
    def stripped(self) -> int:
        return sum(p.stripped for p in self.proxies)

    @property
    def active(self) -> bool:
        return any(self._kit.routes.get((p.target_address, p.target_port)) is p for p in self.proxies)

    def stop(self) -> None:
        self._kit.stop_attacker(self)

    def __enter__(self) -> Attacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "on the path" if self.active else "stopped"
        return (f"<Attacker {self.address} {state} to {', '.join(self.targets)}, "
                f"STARTTLS stripped {self.stripped}x>")


class DowngradeKit:
    """The lab side: attackers, published MTA-STS policies, signed zones with TLSA records."""

    def __init__(self, *, trace: Trace, call: Callable[..., Any], policies: RelayTlsPolicies,
                 edit_zones: Callable[[Callable[[dict[dns.name.Name, dns.zone.Zone]], None]], None],
                 server_context: Callable[[str, str | None], Any], tls_directory: Path,
                 now: Callable[[], float]) -> None:
        self._trace = trace
        self._call = call
        self.policies = policies
        self._edit_zones = edit_zones  # runs an edit on the DNS server's loop, then publishes the zones
        self._server_context = server_context
        self._tls_directory = tls_directory
        self._now = now
        self.routes: dict[tuple[str, int], StartTlsStripper] = {}
        self.servers: dict[str, PolicyServer] = {}
        self._keys: dict[dns.name.Name, ec.EllipticCurvePrivateKey] = {}

    # --- the path ---
    def route(self, address: str, port: int) -> tuple[str, int]:
        """Where a connection to address:port really goes (through an attacker on the path, if one is)."""
        proxy = self.routes.get((address, port))
        return (proxy.address, proxy.port) if proxy is not None else (address, port)

    def start_attacker(self, targets: list[tuple[str, str, int]], own_address: str) -> Attacker:
        """Put one attacker on the path to each (name, address, port)."""
        for name, address, port in targets:
            if (address, port) in self.routes:
                raise SmtpLabError(_("an attacker is already on the path to {name}; stop it first (.stop())").format(
                    name=name))
        proxies = []
        for name, address, port in targets:
            proxy = StartTlsStripper(name, address, port, own_address, self._trace)
            self._call(proxy.start())
            self.routes[(address, port)] = proxy
            proxies.append(proxy)
        return Attacker(self, proxies)

    def stop_attacker(self, attacker: Attacker) -> None:
        for proxy in attacker.proxies:
            if self.routes.get((proxy.target_address, proxy.target_port)) is proxy:
                del self.routes[(proxy.target_address, proxy.target_port)]
                self._call(proxy.stop())

    async def stop_attackers(self) -> None:
        """On the lab's loop, when the lab stops: every attacker leaves the path."""
        routes, self.routes = self.routes, {}
        for proxy in routes.values():
            await proxy.stop()

    def close(self) -> None:
        """When the lab stops: the HTTPS policy hosts stop (their threads end)."""
        servers, self.servers = self.servers, {}
        for server in servers.values():
            server.stop()

    # --- MTA-STS ---
    def https_port(self, address: str) -> int | None:
        return next((s.port for s in self.servers.values() if s.address == address), None)

    def publish_mta_sts(self, domain: str, mode: str, mx: tuple[str, ...], address: str,
                        max_age: int = 86400) -> PolicyServer:
        policy = parse_policy(StsPolicy(mode, mx, max_age).to_text())  # the same rules a sender applies
        host = f"mta-sts.{domain}"
        server = self.servers.get(domain)
        if server is None:
            server = PolicyServer(domain, address, self._server_context(host, address), policy)
            self.servers[domain] = server
        else:
            server.serve(policy)
        policy_id = f"{int(self._now())}{secrets.token_hex(3)}"  # a new id tells senders to fetch again
        self._edit(domain, [
            (host, "A", str(server.address)),
            (f"_mta-sts.{domain}", "TXT", f'"v=STSv1; id={policy_id}"'),
            # TLS-RPT (RFC 8460): where senders send their daily reports of TLS failures.
            (f"_smtp._tls.{domain}", "TXT", f'"v=TLSRPTv1; rua=mailto:tls-reports@{domain}"'),
        ])
        self.policies.mta_sts = True
        self._trace.record("lab", "state", host, lazy(N_("{host} serves an MTA-STS policy (mode {mode}, mx {mx}) at "
                                                     "{url}, id {id}"), host=host, mode=mode, mx=", ".join(mx),
                                                  url=f"https://{host}/.well-known/mta-sts.txt", id=policy_id),
                           payload=LabChange("policy", domain))
        return server

    # --- DANE ---
    def publish_dane(self, domain: str, exchanges: list[str]) -> list[str]:
        """TLSA 3 1 1 for each MX host (its lab certificate's key), the zone signed, the relay anchored."""
        records = []
        lines = []
        for exchange in exchanges:
            pem = (self._tls_directory / f"{exchange}.pem").read_bytes()
            der = x509.load_pem_x509_certificates(pem)[0].public_bytes(Encoding.DER)
            rdata = tlsa_rdata(der)
            lines.append((tlsa_owner(exchange), "TLSA", rdata))
            records.append(f"{tlsa_owner(exchange)} TLSA {rdata}")
        self._edit(domain, lines, sign=True)
        self._trace.record("lab", "state", domain, lazy(N_("{domain} is DNSSEC-signed and publishes {records}"),
                                                       domain=domain, records="; ".join(records)),
                           payload=LabChange("policy", domain))
        return records

    def _edit(self, domain: str, records: list[tuple[str, str, str]], sign: bool = False) -> None:
        origin = dns.name.from_text(domain)
        self._edit_zones(lambda zones: self._apply(zones, origin, records, sign or origin in self._keys))

    def _apply(self, zones: dict[dns.name.Name, dns.zone.Zone], origin: dns.name.Name,
               records: list[tuple[str, str, str]], sign: bool) -> None:
        zone = zones.get(origin)
        if zone is None:
            raise SmtpLabError(_("the lab DNS serves no zone {origin}").format(origin=origin))
        with zone.writer() as txn:
            for name, rdtype, text in records:
                owner = dns.name.from_text(name)
                txn.replace(owner, dns.rdataset.from_text(dns.rdataclass.IN, rdtype, 300, text))
            if sign:  # signed again from scratch: every record of the zone, the new ones too
                for owner, node in list(txn.iterate_rdatasets()):
                    if node.rdtype in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.DNSKEY):
                        txn.delete(owner, node.rdtype, node.covers)
        if sign:
            key = self._keys.setdefault(origin, ec.generate_private_key(ec.SECP256R1()))
            self.policies.anchors[origin] = sign_zone(zone, self._now(), key)
