"""What the lab DNS publishes for a scenario: MX and A records, SPF, DKIM keys, DMARC policies,
the blocklist zone (bl.lab) and the reverse zones (PTR records for every lab host, so a server can
turn a client's address back into a name and check it forward: iprev). Plain zone-file lines;
net/dns_server.py turns them into dnspython zones."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping
from pathlib import Path

import dns.reversename

from .auth import dnsbl
from .auth.mailauth import new_dkim_key, public_record
from .files import make_private_dir, write_private
from .scenario import ProviderSpec, Scenario

__all__ = ["DkimKey", "DkimKeys", "zone_lines", "reverse_zone_lines", "BLOCKLIST_ZONE", "DKIM_SELECTOR"]

BLOCKLIST_ZONE = "bl.lab"
DKIM_SELECTOR = "lab"


class DkimKey:
    """One provider's DKIM signing key and the TXT record that publishes it."""

    def __init__(self, domain: str, private_pem: bytes) -> None:
        self.domain = domain
        self.selector = DKIM_SELECTOR
        self.private_pem = private_pem
        self.record = public_record(private_pem)

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


class DkimKeys:
    """DKIM keys per domain: kept in the lab directory, and reused within one process.

    An RSA-2048 key takes 25-200 ms to make; a notebook that restarts its lab should not pay that each time.
    """

    _process_cache: dict[str, bytes] = {}
    _lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, domain: str) -> DkimKey:
        path = self.directory / f"dkim-{domain}.pem"
        if path.exists():
            return DkimKey(domain, path.read_bytes())
        with self._lock:
            pem = self._process_cache.get(domain)
        if pem is None:  # made outside the lock: the keys of two domains are made at the same time
            made = new_dkim_key()
            with self._lock:
                pem = self._process_cache.setdefault(domain, made)
        make_private_dir(self.directory)
        write_private(path, pem)  # a private key: 0600 from its creation (files.py)
        return DkimKey(domain, pem)


def _txt(value: str) -> str:
    # A TXT string holds at most 255 octets (RFC 1035 section 3.3); longer values are split in quotes.
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


def _provider_lines(provider: ProviderSpec, addresses: Mapping[str, str], dkim: DkimKey | None) -> list[str]:
    lines = [f"@ IN MX {pref} {name if name == '.' else name + '.'}" for pref, name in provider.mx]
    for name, target in provider.a_records:
        fqdn = provider.domain if name in ("@", "") else name
        lines.append(f"{fqdn}. IN A {addresses.get(target, target)}")
    own_spf = False
    for name, rdtype, rdata in provider.records:
        owner = provider.domain + "." if name in ("@", "") else name
        lines.append(f"{owner} IN {rdtype} {rdata}")
        own_spf = own_spf or (name in ("@", "") and rdtype.upper() == "TXT" and "v=spf1" in rdata)
    security = provider.security
    spf = security.get("spf")
    if spf and not own_spf:
        if spf == "auto":  # the hosts that send this provider's mail: its submission (and relay) hosts
            senders = sorted({addresses[h.name] for h in provider.hosts if "submission" in h.services})
            spf = "v=spf1 " + " ".join(f"ip4:{a}" for a in senders) + " -all"
        lines.append(f"@ IN TXT {_txt(spf)}")
    if security.get("spf") == "auto":
        # Bounces travel with MAIL FROM:<>, so SPF checks the HELO name instead (RFC 7208 section 2.3):
        # each sending host says that its own address may send for its name.
        for host in provider.hosts:
            if "submission" in host.services:
                lines.append(f'{host.name}. IN TXT "v=spf1 a -all"')
    if security.get("dmarc"):
        lines.append(f"_dmarc IN TXT {_txt(security['dmarc'])}")
    if dkim is not None:
        lines.append(f"{dkim.name}. IN TXT {_txt(dkim.record)}")
    return lines


def zone_lines(scenario: Scenario, addresses: Mapping[str, str],
               dkim: Mapping[str, DkimKey]) -> dict[str, list[str]]:
    """Return zone-file lines per zone (each provider's domain, the blocklist zone, the reverse zones)."""
    zones = {p.domain: _provider_lines(p, addresses, dkim.get(p.domain)) for p in scenario.providers}
    listed = {addresses.get(name, name): reason for name, reason in scenario.blocklist.items()}
    zones[BLOCKLIST_ZONE] = dnsbl.zone_lines(listed, BLOCKLIST_ZONE)
    for zone, lines in reverse_zone_lines(addresses).items():
        zones.setdefault(zone, []).extend(lines)
    return zones


def reverse_zone_lines(addresses: Mapping[str, str]) -> dict[str, list[str]]:
    """PTR records for every host (RFC 1035 section 3.5: a.b.c.d -> d.c.b.a.in-addr.arpa; RFC 3596 section
    2.5 for IPv6 nibbles under ip6.arpa), in one zone per /8 (127.in-addr.arpa on loopback) or per /64.

    Hosts that share an address (where the platform gives every host 127.0.0.1) each get a PTR there.
    """
    zones: dict[str, list[str]] = {}
    for host, address in sorted(addresses.items()):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue  # not an address (a scenario may name hosts the lab does not run)
        name = dns.reversename.from_address(str(ip))
        zone = name.split(4 if ip.version == 4 else 19)[1]  # 127.in-addr.arpa. / the /64 under ip6.arpa.
        zones.setdefault(zone.to_text(omit_final_dot=True), []).append(f"{name} IN PTR {host}.")
    return zones
