"""The lab's zones and what an authoritative server answers from them (no transport: see dns_server.py).

Zones are built from zone-file lines (dnspython's `dns.zone`); `respond` answers one query the way an
authoritative-only server does (RFC 1034 §4.3.2): AA set, no recursion (RA clear), REFUSED for names
outside the zones, NXDOMAIN vs NODATA with the zone's SOA in the authority section (RFC 2308), CNAME
chains followed inside the zones, glue for MX targets, RRSIGs when the query sets DO (RFC 4035 §3.1.1).
`transfer_messages` serves a whole zone (AXFR, RFC 5936).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from ..i18n import N_, lazy
from ..trace.events import DnsAnswer

__all__ = ["TTL", "Zones", "build_zones", "respond", "zone_for", "transfer_messages", "answer_summary", "answer_of"]

TTL = 300
Zones = Mapping[dns.name.Name, dns.zone.Zone]


def build_zones(
    domains: Mapping[str, Iterable[str]],
    addresses: Mapping[str, str],
    dns_name: str,
) -> dict[dns.name.Name, dns.zone.Zone]:
    """Build one zone per domain from zone-file lines, plus the zone holding the DNS server's name.

    `domains` maps a domain to its record lines in zone-file syntax, relative or absolute names;
    `addresses` maps every host name to its address (A records go in the zone that contains them).
    """
    texts: dict[str, list[str]] = {d: list(lines) for d, lines in domains.items()}
    dns_zone = dns_name.split(".", 1)[1] if "." in dns_name else dns_name
    texts.setdefault(dns_zone, [])
    for host, address in sorted(addresses.items()):
        zone = _longest_suffix(host, texts)
        if zone is not None:
            texts[zone].append(f"{host}. {TTL} IN A {address}")
    zones: dict[dns.name.Name, dns.zone.Zone] = {}
    for domain, lines in texts.items():
        header = [
            f"$ORIGIN {domain}.",
            f"$TTL {TTL}",
            f"@ IN SOA {dns_name}. hostmaster.{domain}. 1 3600 600 86400 {TTL}",
            f"@ IN NS {dns_name}.",
        ]
        built = dns.zone.from_text("\n".join(header + lines) + "\n", origin=f"{domain}.", relativize=False)
        zones[_origin(built)] = built
    return zones


def _origin(zone: dns.zone.Zone) -> dns.name.Name:
    """A zone's origin: dnspython types it optional, but every zone the lab builds has one."""
    assert zone.origin is not None
    return zone.origin


def _longest_suffix(name: str, zones: Iterable[str]) -> str | None:
    best = None
    for zone in zones:
        if (name == zone or name.endswith("." + zone)) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def respond(zones: Zones, query: dns.message.Message) -> dns.message.Message:
    """The authoritative answer to `query` from `zones` (RFC 1034 §4.3.2; RFC 2308 for NXDOMAIN and NODATA)."""
    response = dns.message.make_response(query)
    response.flags &= ~dns.flags.RA
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    if question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        # AXFR is served over TCP (see `transfer`); over UDP it is not defined (RFC 5936 §4.2), and
        # incremental transfers (IXFR, RFC 1995) are not implemented here.
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    zone = zone_for(zones, question.name)
    if zone is None or question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)  # not authoritative, and we never recurse
        return response
    response.flags |= dns.flags.AA
    name, rdtype = question.name, question.rdtype
    for _hop in range(8):  # follow CNAME chains inside our zones, bounded
        node = zone.get_node(name)
        if node is None:
            if not response.answer:
                exists_below = any(n.is_subdomain(name) for n in zone.nodes)
                if not exists_below:
                    response.set_rcode(dns.rcode.NXDOMAIN)
            _add_soa(response, zone)
            return response
        if rdtype == dns.rdatatype.ANY:
            for rds in node.rdatasets:
                response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
            return response
        rds = node.get_rdataset(dns.rdataclass.IN, rdtype)
        if rds is not None:
            response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
            _add_signatures(response, query, node, name, rdtype)
            if rdtype == dns.rdatatype.MX:
                _add_glue(zones, response, [r.exchange for r in rds])
            return response
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            _add_soa(response, zone)  # NODATA: the name exists, the type does not
            return response
        response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
        name = cname[0].target
        target_zone = zone_for(zones, name)
        if target_zone is None:
            return response
        zone = target_zone
    return response


def zone_for(zones: Zones, name: dns.name.Name) -> dns.zone.Zone | None:
    """The zone of `zones` that holds `name`: the one with the longest origin above it."""
    best = None
    for origin, zone in zones.items():
        if name.is_subdomain(origin) and (best is None or len(origin) > len(_origin(best))):
            best = zone
    return best


def _add_soa(response: dns.message.Message, zone: dns.zone.Zone) -> None:
    origin = _origin(zone)
    soa = zone.get_rdataset(origin, dns.rdatatype.SOA)
    if soa is not None:
        response.authority.append(dns.rrset.from_rdata_list(origin, soa.ttl, list(soa)))


def _add_glue(zones: Zones, response: dns.message.Message, names: Iterable[dns.name.Name]) -> None:
    for name in names:
        zone = zone_for(zones, name)
        rds = zone.get_rdataset(name, dns.rdatatype.A) if zone is not None else None
        if rds is not None:
            response.additional.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))


def transfer_messages(query: dns.message.Message, zone: dns.zone.Zone) -> tuple[list[bytes], int]:
    """The whole of `zone` as the TCP messages of a zone transfer, SOA first and last (RFC 5936 §2.2),
    and how many records they hold."""
    origin = _origin(zone)
    soa = zone.find_rrset(origin, dns.rdatatype.SOA)
    rrsets = [soa] + [dns.rrset.from_rdata_list(name, rds.ttl, list(rds))
                      for name, node in sorted(zone.nodes.items()) for rds in node.rdatasets
                      if not (name == origin and rds.rdtype == dns.rdatatype.SOA)] + [soa]
    messages: list[bytes] = []
    batch: list[dns.rrset.RRset] = []
    size = 0
    for index, rrset in enumerate(rrsets):
        batch.append(rrset)
        encoded = io.BytesIO()
        rrset.to_wire(encoded)
        size += encoded.tell()
        if size >= 16_000 or index == len(rrsets) - 1:  # well under the 65535 octets of one TCP message
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            response.flags &= ~dns.flags.RA
            if messages:
                response.question = []
            response.answer = batch
            messages.append(response.to_wire())
            batch, size = [], 0
    return messages, sum(len(r) for r in rrsets)


def _add_signatures(response: dns.message.Message, query: dns.message.Message, node: Any,
                    name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> None:
    """A signed zone's RRSIG records go with the answer when the query set the DO bit (RFC 4035 §3.1.1)."""
    if not query.ednsflags & dns.flags.DO:
        return
    response.ednsflags |= dns.flags.DO  # RFC 3225 §3: the DO bit is copied into the response
    sigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
    if sigs is not None:
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
        rrset.update(sigs)
        response.answer.append(rrset)


def answer_summary(response: dns.message.Message) -> str:
    """The answer in one line for the trace: its RCODE and records as DNS data, the lab's remarks translated."""
    rcode = dns.rcode.to_text(response.rcode())
    parts = []
    for rrset in response.answer:
        for rdata in rrset:
            parts.append(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}")
    truncated = bool(response.flags & dns.flags.TC)
    if parts:  # the records are DNS data, shown as they are; only the lab's remarks are translated
        text = rcode + ": " + "; ".join(parts)
        return lazy(N_("{answer}; (truncated)"), answer=text) if truncated else text
    if response.authority:
        return lazy(N_("{rcode}: (no answer; SOA in authority); (truncated)") if truncated else
                    N_("{rcode}: (no answer; SOA in authority)"), rcode=rcode)
    return lazy(N_("{rcode}: (truncated)"), rcode=rcode) if truncated else rcode


def answer_of(response: dns.message.Message) -> DnsAnswer:
    """The answer's typed fields for the trace (smtplab.trace.events.DnsAnswer)."""
    records = tuple(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
                    for rrset in response.answer for rdata in rrset)
    return DnsAnswer(dns.rcode.to_text(response.rcode()), records, bool(response.flags & dns.flags.TC),
                     not records and bool(response.authority))
