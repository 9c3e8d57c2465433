"""The lab DNS answers like an authoritative server, over UDP and TCP, to dnspython and to garbage."""

from __future__ import annotations

import socket
import struct

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

import smtplab


def ask(lab: smtplab.Lab, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, lab.dns.address, port=lab.dns.port, timeout=3)


def test_mx_records_are_authoritative_and_sorted(lab: smtplab.Lab) -> None:
    response = ask(lab, "example.net", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA  # authoritative only: no recursion offered
    mx = sorted((r.preference, r.exchange.to_text()) for r in response.answer[0])
    assert mx == [(10, "mx1.example.net."), (20, "mx2.example.net.")]
    glue = {rr.name.to_text(): rr[0].address for rr in response.additional}
    assert glue["mx1.example.net."] == lab.host("mx1.example.net").address


def test_lookup_mx_lowest_preference_first_with_addresses(lab: smtplab.Lab) -> None:
    records = smtplab.lookup_mx("example.net", lab=lab)
    assert [(r.preference, r.exchange) for r in records] == [(10, "mx1.example.net"), (20, "mx2.example.net")]
    assert records[0].addresses == (lab.host("mx1").address,)
    assert records[1].addresses == (lab.host("mx2").address,)


@pytest.mark.parametrize("tcp", [False, True])
def test_soa_ns_a_over_udp_and_tcp(lab: smtplab.Lab, tcp: bool) -> None:
    soa = ask(lab, "example.org", "SOA", tcp)
    assert soa.answer[0][0].mname.to_text() == "dns.lab."
    ns = ask(lab, "example.org", "NS", tcp)
    assert ns.answer[0][0].target.to_text() == "dns.lab."
    a = ask(lab, "smtp.example.org", "A", tcp)
    assert a.answer[0][0].address == lab.host("smtp.example.org").address
    dns_a = ask(lab, "dns.lab", "A", tcp)
    assert dns_a.answer[0][0].address == lab.dns.address


def test_nxdomain_and_nodata_carry_the_soa(lab: smtplab.Lab) -> None:
    nx = ask(lab, "nobody.example.net", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority and nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = ask(lab, "mx1.example.net", "MX")  # the name exists, but has no MX
    assert nodata.rcode() == dns.rcode.NOERROR
    assert not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_outside_the_zones_is_refused(lab: smtplab.Lab) -> None:
    response = ask(lab, "www.python.org", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.answer


def test_txt_and_cname_from_a_scenario() -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"][1]["records"] = [
        ["@", "TXT", '"v=spf1 ip4:127.0.2.0/24 -all"'],
        ["mail", "CNAME", "mx1.example.net."],
    ]
    with smtplab.start(scenario=scenario) as lab:
        txt = ask(lab, "example.net", "TXT")
        assert b"v=spf1" in txt.answer[0][0].strings[0]
        cname = ask(lab, "mail.example.net", "A")
        kinds = [rrset.rdtype for rrset in cname.answer]
        assert kinds == [dns.rdatatype.CNAME, dns.rdatatype.A]
        assert cname.answer[1][0].address == lab.host("mx1").address
        # The MX checks' stub resolver follows the CNAME too.
        assert [r.address for r in lab.services.lab_dns()._answer("mail.example.net", "A")] == [lab.host("mx1").address]


def test_null_mx_and_no_mx(lab: smtplab.Lab) -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"].append({"domain": "nomail.test", "mx": [[0, "."]], "hosts": {}})
    with smtplab.start(scenario=scenario) as lab2:
        records = lab2.lookup_mx("nomail.test")
        assert len(records) == 1 and records[0].is_null
        assert lab2.lookup_mx("imap.example.net") == []  # exists, has no MX
        with pytest.raises(smtplab.DnsLookupError, match="NXDOMAIN"):
            lab2.lookup_mx("nothing.example.net")


def test_garbage_packets_leave_the_server_answering(lab: smtplab.Lab) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(2)
    try:
        udp.sendto(b"\x12\x34" + b"\xff" * 20, (lab.dns.address, lab.dns.port))
        reply, _ = udp.recvfrom(512)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
        udp.sendto(b"\x01", (lab.dns.address, lab.dns.port))  # too short to answer at all
    finally:
        udp.close()
    tcp = socket.create_connection((lab.dns.address, lab.dns.port), timeout=3)
    try:
        tcp.sendall(struct.pack("!H", 400) + b"short")  # promises 400 bytes, sends 5, hangs up
    finally:
        tcp.close()
    assert ask(lab, "example.net", "MX").rcode() == dns.rcode.NOERROR
    assert ask(lab, "example.net", "MX", tcp=True).rcode() == dns.rcode.NOERROR
    errors = lab.trace.filter(protocol="dns", kind="error")
    assert errors, "a malformed query is recorded in the trace"


def test_real_world_lookup_offline_fails_fast_and_clearly() -> None:
    # A loopback "resolver" that never answers stands in for an offline machine (no traffic leaves).
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        with pytest.raises(smtplab.DnsLookupError, match="no DNS server answered.*lab=lab"):
            smtplab.lookup_mx("example.com", nameservers=["127.0.0.1"], port=port, timeout=0.5)
    finally:
        silent.close()


def test_dns_queries_are_traced(lab: smtplab.Lab) -> None:
    mark = lab.mark()
    lab.lookup_mx("example.net")
    events = lab.trace.filter(protocol="dns", since=mark)
    assert [e.kind for e in events[:2]] == ["query", "answer"]
    assert events[0].text.startswith("example.net. MX?")
    assert "mx1.example.net" in events[1].text


def test_a_repeated_question_gets_its_own_id_back_and_is_traced_each_time(lab: smtplab.Lab) -> None:
    mark = lab.mark()
    answers = []
    for qid in (1, 2, 65535):
        query = dns.message.make_query("example.net", "MX")
        query.id = qid
        answers.append(dns.query.udp(query, lab.dns.address, port=lab.dns.port, timeout=3))
    assert [a.id for a in answers] == [1, 2, 65535]
    assert all(a.answer == answers[0].answer and a.additional == answers[0].additional for a in answers)
    other = ask(lab, "example.org", "MX")  # a different question is not answered from the first one
    assert {r.exchange.to_text() for r in other.answer[0]} != {r.exchange.to_text() for r in answers[0].answer[0]}
    queries = [e for e in lab.trace.since(mark) if e.protocol == "dns" and e.kind == "query"]
    answered = [e for e in lab.trace.since(mark) if e.protocol == "dns" and e.kind == "answer"]
    assert [e.text for e in queries] == ["example.net. MX? over udp"] * 3 + ["example.org. MX? over udp"]
    assert len(answered) == 4 and answered[0].text == answered[2].text


def test_the_mx_checks_stub_resolver(lab: smtplab.Lab) -> None:
    """The resolver SPF, DKIM and DMARC checks use: records, CNAMEs followed, nothing for NXDOMAIN or
    REFUSED, and a temporary error (never a wrong answer) when the DNS does not answer."""
    import spf

    from smtplab.auth.mailauth import LabDns

    stub = lab.services.lab_dns()
    assert stub.txt("_dmarc.example.org") == ["v=DMARC1; p=none"]
    assert stub.txt("nothing-here.example.org") == []
    assert stub.txt("gmail.com") == []  # outside the lab's zones: REFUSED
    assert [r.address for r in stub._answer("mx1.example.net", "A")] == [lab.host("mx1").address]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # a "DNS server" that never answers
        silent.bind(("127.0.0.1", 0))
        mute = LabDns("127.0.0.1", silent.getsockname()[1], timeout=0.2)
        with pytest.raises(spf.TempError):
            mute.txt("example.org")
        mute.close()


def test_the_lab_is_ready_before_its_dkim_keys_and_nothing_waits_wrongly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DKIM keys are made beside the start: questions and messages that come first wait for them."""
    import concurrent.futures
    import threading

    from smtplab import zones

    release = threading.Event()
    real = zones.new_dkim_key

    def slow_key(bits: int = 2048) -> bytes:
        release.wait(30)  # OpenSSL taking its time over the primes
        return real(bits)

    monkeypatch.setattr(zones, "new_dkim_key", slow_key)
    monkeypatch.setattr(zones.DkimKeys, "_process_cache", {})
    with smtplab.start() as lab:  # returns although no key exists yet
        assert not release.is_set()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            over_udp = pool.submit(ask, lab, "lab._domainkey.example.org", "TXT")
            over_tcp = pool.submit(ask, lab, "lab._domainkey.example.org", "TXT", True)
            sent = pool.submit(lab.send, "alice@example.org", "bob@example.net", "early", "sent at once")
            concurrent.futures.wait([over_udp, over_tcp, sent], timeout=0.3)
            assert not (over_udp.done() or over_tcp.done() or sent.done())  # held, not refused or lost
            release.set()
            for answered in (over_udp.result(10), over_tcp.result(10)):
                assert answered.rcode() == dns.rcode.NOERROR
                assert b"".join(answered.answer[0][0].strings).startswith(b"v=DKIM1; k=rsa; p=")
            assert sent.result(10).queue_id
        assert lab.wait_for_delivery(timeout=10)
        (message,) = lab.messages("bob@example.net")
        assert "dkim=pass header.d=example.org" in str(message["Authentication-Results"])


# --- reverse DNS (PTR) and forward-confirmed reverse DNS (iprev) ----------------------------------------


def test_every_lab_host_has_a_ptr_record_that_leads_back_to_it(lab: smtplab.Lab) -> None:
    import dns.reversename

    named = {name: host.address for name, host in lab.hosts.items()} | {lab.dns.name: lab.dns.address}
    for name, address in named.items():
        response = ask(lab, dns.reversename.from_address(address).to_text(), "PTR")
        assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA, name
        assert name + "." in {r.target.to_text() for r in response.answer[0]}, name
        result = smtplab.iprev(address, lab)  # RFC 8601 section 3: PTR, then A, back to the address
        assert result.passed and result.name == name and result.resinfo == f"iprev=pass policy.iprev={address} ({name})"
    missing = smtplab.iprev("127.0.0.1", lab)  # a client the lab does not know (the learner's MUA)
    assert missing.result == "permerror" and not missing.name


def test_the_mx_names_its_client_from_a_real_reverse_lookup(lab: smtplab.Lab) -> None:
    mark = lab.mark()
    lab.send("alice@example.org", "bob@example.net", "who sent this", "via smtp.example.org")
    [message] = lab.messages("bob@example.net")
    sender = lab.host("smtp.example.org")
    assert message["Received"].startswith(f"from smtp.example.org (smtp.example.org [{sender.address}])")
    assert f"iprev=pass policy.iprev={sender.address} (smtp.example.org)" in str(message["Authentication-Results"])
    mx = lab.host("mx1.example.net").address
    asked = [(e.text, e.client.rsplit(":", 1)[0]) for e in lab.trace.since(mark) if e.protocol == "dns" and e.kind == "query"]
    reverse = ".".join(reversed(sender.address.split("."))) + ".in-addr.arpa."
    assert (f"{reverse} PTR? over udp", mx) in asked  # asked by the MX itself, from its own address
    assert ("smtp.example.org. A? over udp", mx) in asked  # and confirmed forward
    notes = [e.text for e in lab.trace.since(mark) if e.host == "mx1.example.net" and e.kind == "state"]
    assert any(t.startswith(f"iprev=pass for {sender.address}") for t in notes)


def test_a_ptr_name_that_does_not_lead_back_fails_iprev() -> None:
    """Anyone may write any name in the reverse zone of their own addresses: only the forward check counts."""
    import asyncio

    from smtplab.auth.iprev import iprev_async
    from smtplab.net.dns_lookup import lab_resolver
    from smtplab.net.dns_server import DnsServer, build_zones
    from smtplab.trace.ring import Trace

    zones = build_zones({
        "bank.test": ["www IN A 127.0.0.80", "a IN A 127.0.0.70", "b IN A 127.0.0.70"],
        "127.in-addr.arpa": ["66.0.0.127.in-addr.arpa. IN PTR www.bank.test.",
                             "67.0.0.127.in-addr.arpa. IN PTR nowhere.bank.test.",
                             "70.0.0.127.in-addr.arpa. IN PTR a.bank.test.",
                             "70.0.0.127.in-addr.arpa. IN PTR b.bank.test."],
    }, {}, "dns.test")

    async def check() -> list[str]:
        server = DnsServer(zones, "127.0.0.1", Trace(lambda: 0.0), "dns.test")
        await server.start()
        try:
            resolver = lab_resolver("127.0.0.1", server.port)
            results = [(await iprev_async(a, resolver)).result for a in ("127.0.0.66", "127.0.0.67", "127.0.0.80")]
            # Two names for one address (every host on 127.0.0.1): the one the client said in EHLO, if it holds.
            for helo in ("a.bank.test", "b.bank.test"):
                results.append((await iprev_async("127.0.0.70", resolver, prefer=helo)).name)
            return results
        finally:
            await server.stop()

    assert asyncio.run(check()) == ["fail", "fail", "permerror", "a.bank.test", "b.bank.test"]


# --- zone transfers (AXFR, RFC 5936): served whole over TCP -------------------------------------------


def test_dig_axfr_transfers_the_whole_zone(lab: smtplab.Lab) -> None:
    import subprocess

    from conftest import require_tool

    dig = require_tool("dig")
    done = subprocess.run([dig, f"@{lab.dns.address}", "-p", str(lab.dns.port), "example.net", "AXFR"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    records = [line.split() for line in done.stdout.splitlines() if line and not line.startswith(";")]
    assert records[0][3] == "SOA" and records[-1] == records[0]  # RFC 5936 section 2.2: SOA first and last
    assert {(r[0], r[3], " ".join(r[4:])) for r in records} >= {
        ("example.net.", "MX", "10 mx1.example.net."), ("example.net.", "MX", "20 mx2.example.net."),
        ("mx1.example.net.", "A", lab.host("mx1").address), ("_dmarc.example.net.", "TXT", '"v=DMARC1; p=none"'),
    }
    assert "XFR size: " in done.stdout
    reverse = subprocess.run([dig, f"@{lab.dns.address}", "-p", str(lab.dns.port), "127.in-addr.arpa", "AXFR"],
                             capture_output=True, text=True, timeout=30).stdout
    assert "PTR\tmx1.example.net." in reverse


def test_axfr_with_dnspython_is_the_zone_the_server_holds(lab: smtplab.Lab) -> None:
    import dns.zone

    transferred = dns.zone.from_xfr(dns.query.xfr(lab.dns.address, "example.org", port=lab.dns.port, timeout=5,
                                                  relativize=False),
                                    relativize=False)
    assert lab._network.dns_server is not None
    held = lab._network.dns_server.zones[dns.name.from_text("example.org")]  # type: ignore[index]
    assert transferred == held
    events = [e.text for e in lab.trace.events() if e.protocol == "dns"]
    assert "example.org. AXFR? over tcp" in events
    assert any(t.startswith("NOERROR: zone transfer of example.org.") for t in events)


def test_axfr_outside_a_zone_apex_over_udp_and_ixfr_are_refused_clearly(lab: smtplab.Lab) -> None:
    not_apex = dns.query.tcp(dns.message.make_query("mx1.example.net", "AXFR"), lab.dns.address,
                             port=lab.dns.port, timeout=5)
    assert not_apex.rcode() == dns.rcode.NOTAUTH  # RFC 5936 section 2.2.1
    unknown = dns.query.tcp(dns.message.make_query("example.com", "AXFR"), lab.dns.address, port=lab.dns.port,
                            timeout=5)
    assert unknown.rcode() == dns.rcode.NOTAUTH
    over_udp = ask(lab, "example.net", "AXFR")  # RFC 5936 section 4.2: AXFR over UDP is not defined
    assert over_udp.rcode() == dns.rcode.NOTIMP and not over_udp.answer
    assert ask(lab, "example.net", "IXFR", tcp=True).rcode() == dns.rcode.NOTIMP
    assert ask(lab, "example.net", "MX", tcp=True).rcode() == dns.rcode.NOERROR  # the server goes on
