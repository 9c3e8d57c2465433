"""What the lab DNS publishes for a scenario: MX and A records, SPF, DKIM keys, DMARC policies,
and the blocklist zone (bl.lab). Plain zone-file lines; labdns.py turns them into dnspython zones."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from . import dnsbl
from .mailauth import new_dkim_key, public_record
from .scenario import ProviderSpec, Scenario

__all__ = ["DkimKey", "DkimKeys", "zone_lines", "BLOCKLIST_ZONE", "DKIM_SELECTOR"]

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
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem)
        path.chmod(0o600)
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
    """Return zone-file lines per zone (each provider's domain, and the blocklist zone)."""
    zones = {p.domain: _provider_lines(p, addresses, dkim.get(p.domain)) for p in scenario.providers}
    listed = {addresses.get(name, name): reason for name, reason in scenario.blocklist.items()}
    zones[BLOCKLIST_ZONE] = dnsbl.zone_lines(listed, BLOCKLIST_ZONE)
    return zones
