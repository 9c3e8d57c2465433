"""DNS blocklists (RFC 5782): a zone that lists bad client addresses, and the MX that asks it.

To ask whether 127.0.9.10 is listed in bl.lab, a server looks up the A record of 10.9.0.127.bl.lab:
an answer in 127.0.0.0/8 means "listed", and the TXT record of the same name says why. RFC 5782 also
asks every list to carry the test entry 127.0.0.2 and never to list 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

__all__ = ["Listing", "reversed_name", "zone_lines", "check"]

TEST_ADDRESS = "127.0.0.2"  # RFC 5782 section 5: always listed, so clients can test the list


@dataclass(frozen=True)
class Listing:
    """An address found on a blocklist, with the list's reason."""

    address: str
    zone: str
    code: str  # the A record returned, e.g. 127.0.0.2
    reason: str

    def reply(self) -> str:
        """The SMTP refusal a server gives a listed client (the wording Postfix uses)."""
        reason = self.reason.encode("ascii", "replace").decode()
        return f"554 5.7.1 Service unavailable; Client host [{self.address}] blocked using {self.zone}; {reason}"


def reversed_name(address: str, zone: str) -> str:
    """Return the DNS name to look up for `address` in blocklist `zone` (octets reversed for IPv4)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        labels = ".".join(reversed(address.split(".")))
    else:  # RFC 5782 section 2.4: nibbles of the full address, reversed
        labels = ".".join(reversed(ip.exploded.replace(":", "")))
    return f"{labels}.{zone.rstrip('.')}"


def zone_lines(listed: Mapping[str, str], zone: str) -> list[str]:
    """Zone-file lines for a blocklist: each listed address -> A 127.0.0.2 and TXT reason."""
    entries = {TEST_ADDRESS: "test entry (RFC 5782 section 5)", **listed}
    entries.pop("127.0.0.1", None)  # RFC 5782 section 5: never list 127.0.0.1
    lines = []
    for address, reason in sorted(entries.items()):
        name = reversed_name(address, zone) + "."
        text = reason.replace('"', "'")
        lines += [f"{name} IN A 127.0.0.2", f'{name} IN TXT "{text}"']
    return lines


async def check(address: str, zones: Iterable[str], resolver: dns.asyncresolver.Resolver,
                source: str | None = None) -> Listing | None:
    """Return the first listing of `address` in `zones`, or None when it is clean (or the list is unreachable).

    `source` is the address the questions are sent from (the asking MX's own).
    """
    for zone in zones:
        name = reversed_name(address, zone)
        try:
            answer = await resolver.resolve(name, "A", source=source)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
            continue
        codes = [r.address for r in answer if r.address.startswith("127.")]
        if not codes:
            continue
        reason = "listed"
        try:
            txt = await resolver.resolve(name, "TXT", source=source)
            reason = b"".join(txt[0].strings).decode("utf-8", "replace")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
            pass
        return Listing(address, zone, codes[0], reason)
    return None
