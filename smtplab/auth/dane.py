"""DANE for SMTP (RFC 7672, RFC 6698): the MX's key pinned in DNSSEC-signed DNS.

The receiving domain publishes, for each MX host, a TLSA record at `_25._tcp.<mx host>`:
`3 1 1 <sha256 of the certificate's SubjectPublicKeyInfo>` (DANE-EE, SPKI, SHA-256: RFC 7672 section 3.1.1
recommends exactly this), in a zone signed with DNSSEC. A sending relay that validates DNSSEC and finds such
a record knows that the MX offers TLS (an attacker who deletes STARTTLS is caught: RFC 7672 section 2.2) and
which key it must present (an attacker with another certificate is caught too). Without DNSSEC the record
would prove nothing: whoever can strip STARTTLS can forge unsigned DNS answers.

In the lab:
- `sign_zone` signs a lab zone with a fresh ECDSA P-256 key (algorithm 13) using dnspython; the lab DNS then
  answers queries with the DO bit with the RRSIG records (net/dns_server.py).
- The lab has no root zone to chain from, so the relay is configured with the signed zone's key itself as
  its trust anchor (as `unbound-anchor` configures the root's): `lookup_tlsa` fetches the zone's DNSKEY set,
  validates it against that anchor, then validates the TLSA set with it (dns.dnssec.validate), all over the
  lab DNS, for real.
- The TLSA owner is `_25._tcp.<mx host>`: the relay treats the MX's SMTP service as port 25's role (the lab's
  SMTP listeners are on ephemeral ports only because all lab hosts share one machine; on the internet the MX
  listens on 25, and RFC 7672 section 2.2.2 asks for the record of the port actually used, which is 25).
- Simplifications, said plainly: the lab does not validate denials (NSEC: an MX with no TLSA record counts
  as "no DANE" without proof) nor the MX RRset's own signature (RFC 7672 section 2.2.1 asks for both).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.dnssec
import dns.exception
import dns.flags
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.dnskeybase
import dns.resolver
import dns.rrset
import dns.zone
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..i18n import N_, lazy

__all__ = ["tlsa_rdata", "tlsa_owner", "sign_zone", "lookup_tlsa", "DaneRequirement", "DnssecBogus"]

SIGNATURE_LIFETIME = 400 * 86400  # longer than any lab runs, virtual clock included


class DnssecBogus(Exception):
    """A signed answer that does not validate (RFC 4035 section 5.5: "bogus"): the relay must not trust it."""


def tlsa_owner(exchange: str) -> str:
    """The TLSA owner name of an MX host's SMTP service (RFC 7672 section 2.2.2: port 25, TCP)."""
    return f"_25._tcp.{exchange.rstrip('.')}."


def spki_sha256(der: bytes) -> str:
    """SHA-256 of a certificate's SubjectPublicKeyInfo, in hex (TLSA selector 1, matching type 1)."""
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(Encoding.DER,
                                                                        PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def tlsa_rdata(der: bytes) -> str:
    """The TLSA record data `3 1 1 <hex>` (DANE-EE, SPKI, SHA-256) for the certificate `der`."""
    return f"3 1 1 {spki_sha256(der)}"


def sign_zone(zone: dns.zone.Zone, now: float, private: ec.EllipticCurvePrivateKey) -> dns.rdataset.Rdataset:
    """Sign `zone` in place with `private` (DNSKEY, RRSIG and NSEC records added; one key as both KSK and ZSK,
    algorithm 13 = ECDSA P-256 with SHA-256, RFC 6605) and return its DNSKEY set: the trust anchor."""
    dnskey = dns.dnssec.make_dnskey(private.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256,
                                    flags=dns.rdtypes.dnskeybase.Flag.ZONE | dns.rdtypes.dnskeybase.Flag.SEP)
    dns.dnssec.sign_zone(zone, keys=[(private, dnskey)], inception=now - 3600,
                         expiration=now + SIGNATURE_LIFETIME, dnskey_ttl=300)
    assert zone.origin is not None
    anchor = zone.get_rdataset(zone.origin, dns.rdatatype.DNSKEY)
    assert anchor is not None
    return anchor


async def _signed(resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
                  source: str | None) -> tuple[dns.rrset.RRset, dns.rrset.RRset | None] | None:
    """Ask for `name` `rdtype` with the DO bit; return the RRset and its RRSIG set (None: no such records)."""
    try:
        answer = await resolver.resolve(name, rdtype, source=source, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
        return None
    if answer.rrset is None:
        return None
    message = answer.response
    try:
        sigs = message.find_rrset(message.answer, answer.rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                                  rdtype)
    except KeyError:
        sigs = None
    return answer.rrset, sigs


async def lookup_tlsa(exchange: str, resolver: dns.asyncresolver.Resolver,
                      anchors: dict[dns.name.Name, dns.rdataset.Rdataset], now: float | None = None, *,
                      source: str | None = None) -> tuple[str, ...] | None:
    """The DNSSEC-validated TLSA records of `exchange`'s SMTP service (None: the MX has no DANE).

    Raises DnssecBogus when a zone with a trust anchor answers without valid signatures (RFC 7672 section
    2.1.1: the relay must then not deliver to that MX, not even in clear text).
    """
    resolver.use_edns(0, dns.flags.DO, 1232)
    owner = dns.name.from_text(tlsa_owner(exchange))
    anchor_name = next((name for name in sorted(anchors, key=len, reverse=True) if owner.is_subdomain(name)), None)
    if anchor_name is None:
        return None  # not under a signed zone the relay trusts: "insecure", no DANE (RFC 7672 section 2.1.1)
    when = time.time() if now is None else now
    found = await _signed(resolver, owner, dns.rdatatype.TLSA, source)
    if found is None:
        return None
    tlsa, tlsa_sigs = found
    keys = await _signed(resolver, anchor_name, dns.rdatatype.DNSKEY, source)
    if tlsa_sigs is None or keys is None or keys[1] is None:
        raise DnssecBogus(f"{owner} TLSA came without DNSSEC signatures from a signed zone")
    try:
        # The zone's DNSKEY set, signed by a key of the trust anchor; then the TLSA set, by the DNSKEY set.
        dns.dnssec.validate(keys[0], keys[1], {anchor_name: anchors[anchor_name]}, now=when)
        dns.dnssec.validate(tlsa, tlsa_sigs, {anchor_name: dns.rdataset.from_rdata_list(
            keys[0].ttl, list(keys[0]))}, now=when)
    except dns.dnssec.ValidationFailure as exc:
        raise DnssecBogus(f"{owner} TLSA failed DNSSEC validation: {exc}") from None
    return tuple(rdata.to_text() for rdata in tlsa)


@dataclass
class DaneRequirement:
    """What validated TLSA records ask of one MX (RFC 7672 section 2.2), checked by the relay."""

    exchange: str
    records: tuple[str, ...]  # "3 1 1 <hex>" as published
    refused: str = ""  # set when the TLSA lookup was bogus: no connection at all
    summary: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.summary = lazy(N_("DANE: {owner} TLSA {records} (DNSSEC-validated): TLS required, key pinned"),
                            owner=tlsa_owner(self.exchange), records=", ".join(r[:14] + "..." for r in self.records))

    def refusal(self, tls: object | None) -> str | None:
        if tls is None:
            return (f"451 4.7.5 DANE: {self.exchange} has DNSSEC-validated TLSA records but offered no STARTTLS; "
                    "not delivered in clear text (RFC 7672 section 2.2)")
        der = tls.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        if der and self.matches(der):
            return None
        return (f"451 4.7.5 DANE: the certificate of {self.exchange} matches none of its TLSA records; "
                "not delivered (RFC 7672 section 3.1)")

    def matches(self, der: bytes) -> bool:
        """DANE-EE(3) SPKI(1) SHA-256(1): the key is what counts, not the name or dates (RFC 7672 section 3.1.1)."""
        digest = spki_sha256(der)
        for record in self.records:
            usage, selector, mtype, data = (record.split(None, 3) + ["", "", "", ""])[:4]
            if (usage, selector, mtype) == ("3", "1", "1") and data.replace(" ", "").lower() == digest:
                return True
            if (usage, selector, mtype) == ("3", "0", "1") and \
                    data.replace(" ", "").lower() == hashlib.sha256(der).hexdigest():
                return True
        return False
