"""TLS downgrade and its cures (issue 18, item 4): a STARTTLS-stripping attacker on the path, MTA-STS, DANE.

Everything is real: the attacker is a TCP proxy on its own loopback address, the MTA-STS policy is fetched over
HTTPS from the lab's `mta-sts.` host, the TLSA records come from a DNSSEC-signed zone and are validated.
"""

from __future__ import annotations

import asyncio

import dns.dnssec
import dns.name
import dns.rdataset
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

import smtplab
from smtplab.auth.dane import DaneRequirement, DnssecBogus, lookup_tlsa, tlsa_rdata
from smtplab.auth.mtasts import PolicyError, certificate_problem, mx_matches, parse_policy, parse_txt
from smtplab.net.dns_lookup import lab_resolver
from smtplab.net.mitm import strip_starttls
from smtplab.views.conversation import steps
from smtplab.views.journey import message_events

SECRET = "the eagle lands at dawn"


def _send(lab: smtplab.Lab, subject: str = "plans") -> smtplab.Lab:
    return lab.send("alice@example.org", "bob@example.net", subject, SECRET + "\n")  # type: ignore[return-value]


def _mx_conns(lab: smtplab.Lab, result: object) -> list[str]:
    """The connections the MX hosts accepted for this message (their side, where the wire tap is)."""
    return [e.conn for e in message_events(lab.trace, result)
            if e.protocol == "smtp" and e.kind == "connect" and e.host.startswith("mx")]


def _clear_text(lab: smtplab.Lab, conn: str) -> bytes:
    return b"".join(c.data for c in lab.wire(conn).chunks if not c.encrypted)


def _ladder_text(lab: smtplab.Lab, result: object) -> str:
    _, rows = steps(message_events(lab.trace, result), lab)
    return "\n".join(" ".join(row.lines) for row in rows)


def _recipient(lab: smtplab.Lab, result: object) -> smtplab.mail.relay.RecipientStatus:
    (status,) = lab.queue_item(result.queue_id).recipients  # type: ignore[attr-defined]
    return status


# --- the pieces ------------------------------------------------------------------------------------

def test_stripping_keeps_the_multiline_reply_valid() -> None:
    reply = [b"250-mx1.example.net\r\n", b"250-SIZE 10485760\r\n", b"250-STARTTLS\r\n", b"250 SMTPUTF8\r\n"]
    assert strip_starttls(reply) == ([b"250-mx1.example.net\r\n", b"250-SIZE 10485760\r\n",
                                      b"250 SMTPUTF8\r\n"], True)
    last = [b"250-mx1.example.net\r\n", b"250-8BITMIME\r\n", b"250 STARTTLS\r\n"]
    assert strip_starttls(last) == ([b"250-mx1.example.net\r\n", b"250 8BITMIME\r\n"], True)
    assert strip_starttls([b"250 mx1.example.net\r\n"]) == ([b"250 mx1.example.net\r\n"], False)


def test_policy_parsing_follows_rfc_8461() -> None:
    policy = parse_policy("version: STSv1\nmode: enforce\nmx: mx1.example.net\nmx: *.backup.example.net\n"
                          "max_age: 604800\n")
    assert (policy.mode, policy.mx, policy.max_age) == ("enforce", ("mx1.example.net", "*.backup.example.net"),
                                                        604800)
    assert parse_policy(policy.to_text()) == policy
    assert mx_matches("a.backup.example.net", policy.mx) and not mx_matches("a.b.backup.example.net", policy.mx)
    assert not mx_matches("mx2.example.net", policy.mx)
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n", "version: STSv1\nmode: strict\nmx: a\n"
                "max_age: 1\n", "version: STSv1\nmode: enforce\nmax_age: 1\n",
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999\n", ""):
        with pytest.raises(PolicyError):
            parse_policy(bad)
    assert parse_txt(["v=STSv1; id=20260101T1"]) == "20260101T1"
    for bad_txt in (["v=spf1 -all"], ["v=STSv1; id=no-dashes-allowed"], ["v=STSv1;"]):
        with pytest.raises(PolicyError):
            parse_txt(bad_txt)


def test_certificate_checks_name_chain_and_tlsa_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca, other_ca = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def der(issuer: trustme.CA, name: str) -> bytes:
        pem = issuer.issue_cert(name).cert_chain_pems[0].bytes()
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)

    good = der(ca, "mx1.example.net")
    assert certificate_problem(good, "mx1.example.net", ca_file) == ""
    assert "not valid for mx2.example.net" in certificate_problem(good, "mx2.example.net", ca_file)
    assert certificate_problem(der(other_ca, "mx1.example.net"), "mx1.example.net", ca_file)
    assert certificate_problem(None, "mx1.example.net", ca_file) == "it presented no certificate"
    pinned = DaneRequirement("mx1.example.net", (tlsa_rdata(good),))
    assert pinned.matches(good)
    assert not pinned.matches(der(ca, "mx1.example.net"))  # same name, same CA, another key: no match


# --- acceptance: the attacker and the cures, on the running lab ---------------------------------

def test_without_attacker_the_relay_encrypts(lab: smtplab.Lab) -> None:
    result = _send(lab)
    assert _recipient(lab, result).state == "delivered"
    (conn,) = _mx_conns(lab, result)
    assert lab.wire(conn).encrypted
    assert SECRET.encode() not in _clear_text(lab, conn)


def test_a_stripped_starttls_sends_the_message_in_clear_text(lab: smtplab.Lab) -> None:
    attacker = lab.mitm("mx1.example.net")
    result = _send(lab)
    status = _recipient(lab, result)
    assert (status.state, status.via) == ("delivered", "mx1.example.net")  # opportunistic TLS: no complaint
    assert attacker.stripped == 1
    (conn,) = _mx_conns(lab, result)
    clear = _clear_text(lab, conn)
    assert not lab.wire(conn).encrypted
    assert SECRET.encode() in clear and b"MAIL FROM:<alice@example.org>" in clear.replace(b"mail", b"MAIL")
    assert b"STARTTLS" in clear  # the MX did offer it: the attacker took it out on the way
    relay_commands = [e.text.upper() for e in message_events(lab.trace, result)
                      if e.protocol == "smtp" and e.host == "mx1.example.net" and e.direction == "C"
                      and e.kind == "line"]
    assert "DATA" in relay_commands
    assert "STARTTLS" not in relay_commands
    ladder = _ladder_text(lab, result)
    assert "deleted 250-STARTTLS" in ladder, ladder
    lifelines, _ = steps(message_events(lab.trace, result), lab)
    assert "attacker" in [p.key for p in lifelines]
    # A transparent attacker: the MX sees the relay's own address, and cannot tell anything happened.
    assert [e.peer for e in message_events(lab.trace, result)
            if e.kind == "connect" and e.host == "mx1.example.net"] == ["smtp.example.org"]
    attacker.stop()
    again = _send(lab, "after the attacker left")
    (conn,) = _mx_conns(lab, again)
    assert lab.wire(conn).encrypted and attacker.stripped == 1


def test_mta_sts_enforce_defers_instead_of_downgrading(lab: smtplab.Lab) -> None:
    lab.mta_sts("example.net", "enforce")
    attacker = lab.mitm("example.net")  # both MX hosts: no way around it
    result = _send(lab)
    status = _recipient(lab, result)
    assert status.state == "deferred"
    assert status.last_reply.startswith("451 4.7.5 MTA-STS policy enforce for example.net: ")
    assert "offered no STARTTLS" in status.last_reply
    assert lab.messages("bob@example.net") == []
    assert SECRET.encode() not in b"".join(_clear_text(lab, c) for c in _mx_conns(lab, result))
    ladder = _ladder_text(lab, result)
    assert "MTA-STS policy of example.net: mode enforce" in ladder and "offered no STARTTLS" in ladder
    fetched = [e.text for e in lab.trace.events() if e.text.startswith("MTA-STS: fetched https://mta-sts.")]
    assert len(fetched) == 1  # fetched over HTTPS once, then cached (RFC 8461 section 5.1)
    # The attacker leaves; the retry delivers, encrypted: nothing lost, nothing in clear text.
    attacker.stop()
    lab.clock.advance(60)
    lab.wait_for_delivery(result.queue_id)  # type: ignore[attr-defined]
    assert _recipient(lab, result).state == "delivered"
    assert all(lab.wire(c).encrypted for c in _mx_conns(lab, result)[-1:])


def test_mta_sts_enforce_delivers_over_tls_without_attacker(lab: smtplab.Lab) -> None:
    lab.mta_sts("example.net", "enforce")
    result = _send(lab)
    assert _recipient(lab, result).state == "delivered"
    (conn,) = _mx_conns(lab, result)
    assert lab.wire(conn).encrypted
    assert "MTA-STS policy of example.net: mode enforce" in _ladder_text(lab, result)


def test_mta_sts_testing_delivers_and_reports(lab: smtplab.Lab) -> None:
    lab.mta_sts("example.net", "testing")
    with lab.mitm("example.net"):
        result = _send(lab)
    assert _recipient(lab, result).state == "delivered"
    assert "TLS-RPT (RFC 8460) for example.net" in _ladder_text(lab, result)
    assert "v=TLSRPTv1" in " ".join(lab.dig("_smtp._tls.example.net", "TXT").records)


def test_mta_sts_refuses_an_mx_the_policy_does_not_name(lab: smtplab.Lab) -> None:
    lab.mta_sts("example.net", "enforce", mx=["mail.example.net"])
    result = _send(lab)
    status = _recipient(lab, result)
    assert status.state == "deferred" and "is not an MX the policy names" in status.last_reply
    assert _mx_conns(lab, result) == []  # not even connected to


def test_dane_defers_when_starttls_is_stripped(lab: smtplab.Lab) -> None:
    records = lab.dane("example.net")
    assert any(r.startswith("_25._tcp.mx1.example.net. TLSA 3 1 1 ") for r in records)
    signed = lab.dig("example.net", "DNSKEY")
    assert signed.rcode == "NOERROR" and signed.records
    with lab.mitm("example.net"):
        result = _send(lab)
    status = _recipient(lab, result)
    assert status.state == "deferred"
    assert status.last_reply.startswith("451 4.7.5 DANE: ") and "offered no STARTTLS" in status.last_reply
    ladder = _ladder_text(lab, result)
    assert "DNSSEC-validated" in ladder and "offered no STARTTLS" in ladder
    assert lab.messages("bob@example.net") == []


def test_dane_delivers_over_tls_without_attacker(lab: smtplab.Lab) -> None:
    lab.dane("example.net")
    result = _send(lab)
    assert _recipient(lab, result).state == "delivered"
    (conn,) = _mx_conns(lab, result)
    assert lab.wire(conn).encrypted
    questions = [e.text for e in message_events(lab.trace, result) if e.protocol == "dns" and e.kind == "query"]
    assert any("_25._tcp.mx1.example.net. TLSA?" in q for q in questions), questions
    assert any("example.net. DNSKEY?" in q for q in questions), questions


def test_tlsa_validation_is_real_dnssec(lab: smtplab.Lab) -> None:
    """The relay's check validates signatures: the zone's own key passes, another key is "bogus", and an MX
    under no trust anchor has no DANE (insecure)."""
    origin = dns.name.from_text("example.net.")
    lab.dane("example.net")
    published = dns.rdataset.from_text("IN", "DNSKEY", 300, *(r.split(" IN DNSKEY ", 1)[1]
                                                               for r in lab.dig("example.net", "DNSKEY").records))
    stranger = dns.rdataset.from_rdata_list(300, [dns.dnssec.make_dnskey(
        ec.generate_private_key(ec.SECP256R1()).public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, flags=257)])

    def ask(anchors: dict[dns.name.Name, dns.rdataset.Rdataset]) -> tuple[str, ...] | None:
        return asyncio.run(lookup_tlsa("mx1.example.net", lab_resolver(lab.dns.address, lab.dns.port), anchors))

    records = ask({origin: published})
    assert records and records[0].startswith("3 1 1 ")
    with pytest.raises(DnssecBogus, match="failed DNSSEC validation"):
        ask({origin: stranger})
    assert ask({dns.name.from_text("example.org."): published}) is None


def test_stopping_the_lab_stops_the_attacker_and_the_policy_host() -> None:
    import socket

    lab = smtplab.start()
    try:
        attacker = lab.mitm("mx1.example.net")
        policy_host = lab.mta_sts("example.net")
        listening = [(p.address, p.port) for p in attacker.proxies] + [(policy_host.address, policy_host.port)]
        for address in listening:
            socket.create_connection(address, timeout=5).close()
    finally:
        lab.stop()
    for address in listening:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5)


def test_dane_defers_when_the_mx_key_does_not_match(lab: smtplab.Lab) -> None:
    """The classic DANE outage: the TLSA record pins a key the MX no longer presents (here: another one)."""
    other = trustme.CA().issue_cert("mx1.example.net", "mx2.example.net")
    for name in ("mx1.example.net", "mx2.example.net"):  # what lab.dane reads the published key from
        other.private_key_and_cert_chain_pem.write_to_path(str(lab.directory / "tls" / f"{name}.pem"))
    lab.dane("example.net")
    result = _send(lab)  # no attacker: STARTTLS is offered, but with the MX's real key
    status = _recipient(lab, result)
    assert status.state == "deferred"
    assert status.last_reply.startswith("451 4.7.5 DANE: the certificate of mx")
    assert "matches none of its TLSA records" in _ladder_text(lab, result)
    assert lab.messages("bob@example.net") == []
