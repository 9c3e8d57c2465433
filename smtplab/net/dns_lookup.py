"""Asking the lab DNS: MX lookups (RFC 5321 section 5.1), `dig`, and the resolver the lab's own clients use.

The resolver announces each question it sends for the current work (smtplab.trace.ring), so the DNS
server (dns_server.py) records the question under the work that asked it. Real-world lookups
(`smtplab.lookup_mx("gmail.com")`) use the system resolver and degrade to a clear error offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from ..errors import DnsLookupError, DnsOfflineError
from ..i18n import _
from ..trace.ring import announce_dns_question, current_correlation

__all__ = ["MXRecord", "DigResult", "lookup_mx", "lookup_mx_async", "lab_resolver", "dig_async", "resolve_a"]


@dataclass(frozen=True)
class MXRecord:
    """One MX record with the addresses of its exchange (RFC 5321 §5.1)."""

    preference: int
    exchange: str  # without the trailing dot; "." for a Null MX (RFC 7505)
    addresses: tuple[str, ...] = ()

    @property
    def is_null(self) -> bool:
        return self.exchange in (".", "")

    def __str__(self) -> str:
        addrs = ", ".join(self.addresses) or "no address"
        return f"MX {self.preference:>3} {self.exchange}  ({addrs})"


# --- MX lookups -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DigResult:
    """One DNS question and the server's whole answer, as text a learner can read (like dig)."""

    question: str  # the query message in presentation format
    answer: str  # the response message in presentation format
    rcode: str  # NOERROR, NXDOMAIN, REFUSED, ...
    records: tuple[str, ...]  # the answer section, one record per line
    server: str  # address:port asked

    def __str__(self) -> str:
        return f";; QUESTION to {self.server}\n{self.question}\n\n;; ANSWER\n{self.answer}"


async def dig_async(name: str, rdtype: str, address: str, port: int, *, timeout: float = 3.0) -> DigResult:
    """Ask one server one question over UDP and return both messages as text."""
    import dns.asyncquery

    try:
        query = dns.message.make_query(name, rdtype)
    except (dns.exception.DNSException, ValueError) as exc:
        raise DnsLookupError(_("cannot ask for {name!r} {rdtype!r}: {exc}").format(name=name, rdtype=rdtype, exc=exc)) from None
    try:
        response = await dns.asyncquery.udp(query, address, port=port, timeout=timeout)
    except dns.exception.Timeout:
        raise DnsLookupError(_("no answer from {address}:{port} within {timeout:g} s (offline?)").format(
            address=address, port=port, timeout=timeout)) from None
    records = tuple(f"{rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
                    for rrset in response.answer for rdata in rrset)
    return DigResult(query.to_text(), response.to_text(), dns.rcode.to_text(response.rcode()), records,
                     f"{address}:{port}")


class _AnnouncingSocket:
    """A dnspython socket that announces each question it sends for the current work (smtplab.trace.ring)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aenter__(self) -> _AnnouncingSocket:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    async def _announce(self, query_id: bytes) -> None:
        if current_correlation():
            host, port = (await self._inner.getsockname())[:2]
            announce_dns_question(f"{host}:{port}", int.from_bytes(query_id, "big"))

    async def sendto(self, what: bytes, destination: Any, timeout: float | None) -> int:
        await self._announce(what[:2])
        return int(await self._inner.sendto(what, destination, timeout))

    async def sendall(self, what: bytes, timeout: float | None) -> None:
        await self._announce(what[2:4])  # after the two-byte length (RFC 1035 §4.2.2)
        await self._inner.sendall(what, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AnnouncingBackend:
    """dnspython's asyncio backend, its sockets wrapped in _AnnouncingSocket."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def make_socket(self, *args: Any, **kwargs: Any) -> _AnnouncingSocket:
        return _AnnouncingSocket(await self._inner.make_socket(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _LabResolver(dns.asyncresolver.Resolver):
    """An async resolver whose questions the lab DNS can tie to the work that asked them."""

    async def resolve(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("backend") is None:
            kwargs["backend"] = _AnnouncingBackend(dns.asyncbackend.get_default_backend())
        return await super().resolve(*args, **kwargs)


def lab_resolver(address: str, port: int, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    """Return an async resolver that asks only the lab DNS (never /etc/resolv.conf)."""
    resolver = _LabResolver(configure=False)
    resolver.nameservers = [address]
    resolver.port = port
    resolver.lifetime = timeout
    # Several tries within the lifetime: a question lost while someone floods the lab DNS is asked again.
    resolver.timeout = min(timeout, 0.5)
    resolver.cache = None
    return resolver


async def lookup_mx_async(
    domain: str, resolver: dns.asyncresolver.Resolver, *, source: str | None = None
) -> list[MXRecord]:
    """Return `domain`'s MX records, lowest preference first (RFC 5321 §5.1), with addresses.

    An empty list means the domain exists but has no MX (the sender then uses its A record:
    the implicit MX). Raises DnsLookupError for a name that does not exist or no answer.
    """
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        raise DnsLookupError(_("give a domain name, e.g. lookup_mx('example.net')"))
    try:
        answer = await resolver.resolve(domain, "MX", source=source, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        raise DnsLookupError(_("{domain} does not exist (NXDOMAIN): no mail can be delivered there").format(
            domain=domain),
                             "NXDOMAIN") from None
    except dns.resolver.NoNameservers as exc:
        rcode = _rcode_of(exc)
        if rcode == "REFUSED":
            # An authoritative-only server (the lab's) refuses names outside its zones.
            raise DnsLookupError(_("the DNS server refused to answer for {domain} (REFUSED): it is not a domain this "
                                   "DNS server knows").format(domain=domain), rcode) from None
        raise DnsLookupError(_("the DNS server refused or failed to answer for {domain}: {exc}").format(
            domain=domain, exc=exc), rcode) from None
    except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
        raise DnsLookupError(
            _("no DNS server answered for {domain} within {lifetime:g} s. Offline? The lab's own DNS always works: "
              "lookup_mx(domain, lab=lab)").format(domain=domain, lifetime=resolver.lifetime)
        ) from None
    glue: dict[str, list[str]] = {}
    for rrset in answer.response.additional:
        if rrset.rdtype == dns.rdatatype.A:
            glue.setdefault(rrset.name.to_text(omit_final_dot=True).lower(), []).extend(r.address for r in rrset)
    records = []
    for rdata in answer.rrset or []:
        exchange = rdata.exchange.to_text(omit_final_dot=True).lower() or "."
        if exchange == ".":
            records.append(MXRecord(rdata.preference, "."))
            continue
        addresses = glue.get(exchange)
        if addresses is None:
            addresses = await resolve_a(exchange, resolver, source=source)
        records.append(MXRecord(rdata.preference, exchange, tuple(addresses)))
    return sorted(records, key=lambda r: (r.preference, r.exchange))


def _rcode_of(error: dns.resolver.NoNameservers) -> str:
    """The RCODE a server answered with (dnspython keeps each server's response beside its error)."""
    for attempt in error.kwargs.get("errors") or ():
        response = attempt[-1] if attempt else None
        if isinstance(response, dns.message.Message):
            return str(dns.rcode.to_text(response.rcode()))
    return ""


async def resolve_a(name: str, resolver: dns.asyncresolver.Resolver, *, source: str | None = None) -> list[str]:
    """Return the IPv4 addresses of `name` ([] when it has none)."""
    try:
        answer = await resolver.resolve(name, "A", source=source, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
        return []
    except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
        raise DnsLookupError(_("no DNS server answered for {name} within {lifetime:g} s").format(
            name=name, lifetime=resolver.lifetime)) from None
    return [r.address for r in answer.rrset or []]


def lookup_mx(
    domain: str, lab: object | None = None, *, timeout: float = 3.0,
    nameservers: list[str] | None = None, port: int = 53,
) -> list[MXRecord]:
    """Return `domain`'s MX records sorted by preference, each with its addresses.

    With `lab`, ask the lab's DNS. Without, ask the real resolver (or `nameservers`); offline that
    raises DnsLookupError after `timeout` seconds instead of hanging.
    """
    if lab is not None:
        return lab.lookup_mx(domain)  # type: ignore[attr-defined]

    async def run() -> list[MXRecord]:
        if nameservers is not None:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(nameservers)
            resolver.port = port
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise DnsLookupError(
                    _("this machine has no DNS resolver configured (offline?). The lab's own DNS always works: "
                      "lookup_mx(domain, lab=lab)")
                ) from None
        resolver.lifetime = timeout
        resolver.timeout = timeout
        try:
            return await lookup_mx_async(domain, resolver)
        except DnsLookupError as exc:
            if nameservers is not None or await _reaches_internet_dns(resolver):
                raise
            if exc.rcode == "NXDOMAIN":
                raise DnsOfflineError(
                    _("cannot reach the Internet's DNS: this computer's resolver says even the top-level domain 'com' "
                      "does not exist, so its NXDOMAIN for {domain} means nothing. The lab's own DNS always works: "
                      "lookup_mx(domain, lab=lab)").format(domain=domain), exc.rcode
                ) from None
            raise DnsOfflineError(_("cannot reach the Internet's DNS ({exc})").format(exc=exc), exc.rcode) from None

    return asyncio.run(run()) if not _loop_running() else _run_in_thread(run)


async def _reaches_internet_dns(resolver: dns.asyncresolver.Resolver) -> bool:
    """Whether the resolver answers for a name that always exists: the top-level domain 'com' (its SOA).

    A network without outside DNS (a sandbox, a captive portal) may answer NXDOMAIN for every name, and
    offline there is no answer at all; either way a lookup's "does not exist" would be an invention.
    """
    try:
        answer = await resolver.resolve("com.", "SOA", raise_on_no_answer=False)
    except (dns.exception.DNSException, OSError):
        return False
    return answer.rrset is not None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(factory: Callable[[], object]) -> list[MXRecord]:
    # Jupyter cells run inside an event loop; asyncio.run would fail there.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()  # type: ignore[arg-type]
