"""Forward-confirmed reverse DNS ("iprev", RFC 8601 section 3): who is this address, really?

A receiving MX knows only the client's IP address. It asks the DNS for the PTR record of the address
(127.0.1.10 -> 10.1.0.127.in-addr.arpa -> smtp.example.org), then asks for the A record of that name:
only if the name leads back to the same address is the name believed. Anyone who controls the reverse
zone of their own addresses can write any PTR name there; the forward check is what makes it count.
The MX writes the confirmed name into its Received header (RFC 5321 section 4.4), "unknown" otherwise.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from ..errors import DnsLookupError
from ..i18n import N_, _, lazy

__all__ = ["IprevResult", "iprev", "iprev_async"]

MAX_NAMES = 10  # PTR names checked forward at most (RFC 8601 section 3: a verifier may limit them)


@dataclass(frozen=True)
class IprevResult:
    """The outcome of an iprev check, with the evidence for it."""

    address: str
    result: str  # pass, fail, temperror, permerror (RFC 8601 section 2.7.3)
    ptr_names: tuple[str, ...]  # what the reverse zone says the address is called
    name: str  # the PTR name that leads back to the address ("" unless result is "pass")
    reason: str

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @property
    def resinfo(self) -> str:
        """The Authentication-Results method result for this check (RFC 8601 section 2.7.3)."""
        comment = f" ({self.name})" if self.name else ""
        return f"iprev={self.result} policy.iprev={self.address}{comment}"

    def describe(self) -> str:
        """One line for the trace, its words in the learner's language when shown (a LazyText)."""
        return lazy(N_("iprev={result} for {address}: {reason}"), result=self.result, address=self.address,
                    reason=self.reason)

    def __str__(self) -> str:
        return str.__str__(self.describe())


async def iprev_async(address: str, resolver: dns.asyncresolver.Resolver, *, source: str | None = None,
                      prefer: str = "") -> IprevResult:
    """Check `address` (the client's IP) with forward-confirmed reverse DNS, asking through `resolver`.

    An address may have several PTR names (where every lab host is 127.0.0.1); `prefer` (the name the
    client gave in EHLO) is checked first when it is one of them."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return IprevResult(address, "permerror", (), "", lazy(N_("not an IP address")))
    reverse = dns.reversename.from_address(str(ip))
    try:
        answer = await resolver.resolve(reverse, "PTR", source=source)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        # RFC 8601 section 2.7.3: no PTR data published for the address is a permanent error.
        return IprevResult(address, "permerror", (), "", lazy(N_("no PTR record at {name}"), name=reverse.to_text(True)))
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        return IprevResult(address, "temperror", (), "", lazy(N_("the PTR question got no usable answer ({error})"), error=exc))
    names = tuple(r.target.to_text(omit_final_dot=True).lower() for r in answer)
    names = tuple(sorted(names, key=lambda n: n != prefer.lower().rstrip(".")))
    rdtype = "A" if ip.version == 4 else "AAAA"
    trouble: str = ""
    for name in names[:MAX_NAMES]:
        try:
            forward = await resolver.resolve(name, rdtype, source=source)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            trouble = lazy(N_("the {rdtype} question for {name} got no usable answer ({error})"), rdtype=rdtype, name=name,
                           error=exc)
            continue
        if any(ipaddress.ip_address(r.address) == ip for r in forward):
            return IprevResult(address, "pass", names, name, lazy(N_("{reverse} PTR {name}, and {name} {rdtype} {address}"),
                                                                  reverse=reverse.to_text(True), name=name,
                                                                  rdtype=rdtype, address=address))
    if trouble:
        return IprevResult(address, "temperror", names, "", trouble)
    return IprevResult(address, "fail", names, "",
                       lazy(N_("PTR says {names}, but no such name has {rdtype} {address}"), names=", ".join(names),
                            rdtype=rdtype, address=address))


def iprev(address: str, lab: object, *, timeout: float = 3.0) -> IprevResult:
    """Check `address` with forward-confirmed reverse DNS through the lab's DNS (blocking; any thread)."""
    from ..net.dns_lookup import lab_resolver

    info = getattr(lab, "dns", None)
    if info is None:
        raise DnsLookupError(_("give a running lab: iprev('127.0.1.10', lab)"))
    resolver = lab_resolver(info.address, info.port, timeout)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(iprev_async(address, resolver))
    import concurrent.futures  # a notebook cell runs inside an event loop: ask from a thread of its own

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(iprev_async(address, resolver))).result()
