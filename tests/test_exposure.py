"""Exposure: a lab is safe to leave running on a shared host.

Nothing listens outside loopback; nothing the lab does reaches another machine or the system's DNS
resolver, even when a scenario names real-world domains or a learner writes to gmail.com; and no MX
relays for outsiders, whatever trick the address uses (the classic open-relay test set).

Every outgoing connection and datagram of the test process is recorded with an audit hook
(PEP 578: the `socket.connect`, `socket.sendto`, `socket.sendmsg` and `socket.getaddrinfo` events),
which sees the lab's own sockets, asyncio's and smtplib's alike.
"""

from __future__ import annotations

import ipaddress
import smtplib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import smtplab

_recorded: list[tuple[str, Any]] | None = None
_recorded_lock = threading.Lock()
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recorded is None or not event.startswith("socket."):
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        destination = args[1]
    elif event == "socket.getaddrinfo":
        destination = (args[0], args[1])
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
        destination = (args[0], None)
    else:
        return
    with _recorded_lock:
        if _recorded is not None:
            _recorded.append((event, destination))


@pytest.fixture
def network_log() -> Iterator[list[tuple[str, Any]]]:
    """Record every destination the process sends to or resolves while the test runs."""
    global _recorded, _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only inside this fixture
        _hook_installed = True
    log: list[tuple[str, Any]] = []
    _recorded = log
    try:
        yield log
    finally:
        _recorded = None


def off_the_machine(log: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The recorded events whose destination is not a loopback address (names count as not loopback)."""
    bad = []
    for event, destination in log:
        if not isinstance(destination, tuple):
            continue  # AF_UNIX paths (asyncio's self-pipe and the like)
        host = destination[0]
        if host is None and event == "socket.getaddrinfo":
            continue  # a wildcard lookup for binding, no name involved
        if isinstance(host, bytes):
            host = host.decode()
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a host name: something asked the system resolver
        if not loopback:
            bad.append((event, destination))
    return bad


def real_world_scenario() -> dict[str, Any]:
    """The default lab plus providers named after real-world domains and records pointing outside."""
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"][0]["records"] = [["@", "TXT", '"v=spf1 include:_spf.google.com ~all"']]
    scenario["providers"].append({
        "domain": "gmail.com",  # inside the lab, gmail.com is a lab provider like any other
        "hosts": {"smtp.gmail.com": ["submission", "smtp"], "imap.gmail.com": ["imap"]},
        "mx": {"smtp.gmail.com": 5},
        "users": ["larry"],
    })
    scenario["providers"].append({
        "domain": "outside.test",  # MX records that name a public address and a real-world host
        "hosts": {},
        "mx": [[5, "mx.outside.test"], [10, "aspmx.l.google.com"]],
        "records": [["mx", "A", "8.8.8.8"], ["www", "CNAME", "www.python.org."]],
    })
    return scenario


def listeners_are_loopback(lab: smtplab.Lab) -> None:
    mine = [c for c in psutil.Process().net_connections(kind="inet") if c.status in ("LISTEN", "NONE")]
    ports = {p for h in lab.hosts.values() for p in h.ports.values()} | {lab.dns.port}
    assert ports <= {c.laddr.port for c in mine}, "every lab service is a socket of this process"
    for connection in mine:
        assert ipaddress.ip_address(connection.laddr.ip).is_loopback, connection


def test_listeners_are_loopback_even_for_real_world_domains() -> None:
    with smtplab.start(scenario=real_world_scenario()) as lab:
        listeners_are_loopback(lab)
        udp = [c for c in psutil.Process().net_connections(kind="udp")]
        assert any(c.laddr.port == lab.dns.port for c in udp), "the lab DNS listens on UDP too"
        lab.host("mx1.example.net").down()
        lab.host("mx1.example.net").up()  # a host that comes back binds loopback again
        listeners_are_loopback(lab)


def test_the_lab_never_leaves_the_machine(network_log: list[tuple[str, Any]]) -> None:
    with smtplab.start(scenario=real_world_scenario()) as lab:
        # gmail.com inside the lab is the lab's provider: delivered to its mailbox, read over its IMAP.
        lab.send("alice@example.org", "larry@gmail.com", "to the lab's gmail.com", "stays on loopback")
        assert [m["Subject"] for m in lab.messages("larry@gmail.com")] == ["to the lab's gmail.com"]
        imap = lab.imap("larry@gmail.com")
        assert imap.select("INBOX") == ("OK", [b"1"])
        imap.logout()

        # A domain the lab DNS does not know: REFUSED by the lab DNS, bounced at once, no system DNS.
        result = lab.send("alice@example.org", "someone@yahoo.com", "to the outside world", "never leaves")
        [recipient] = lab.queue_item(result.queue_id).recipients
        assert recipient.state == "bounced" and recipient.final_status == "5.1.2"
        assert "REFUSED" in recipient.last_reply

        # MX records naming 8.8.8.8 and a real-world host: the relay connects to neither, and gives up
        # when the queue lifetime ends.
        result = lab.send("alice@example.org", "x@outside.test", "to a public address", "never leaves")
        [recipient] = lab.queue_item(result.queue_id).recipients
        assert recipient.state == "deferred", recipient
        lab.clock.advance("6d")
        [recipient] = lab.queue_item(result.queue_id).recipients
        assert recipient.state == "bounced", recipient

        # An address literal names a machine directly: refused at RCPT on the submission port.
        with pytest.raises(smtplab.SendError, match="5.1.2"):
            lab.send("alice@example.org", "someone@[8.8.8.8]", "to an IP address", "never leaves")

        # Lookups a learner makes through the lab stay with the lab DNS.
        with pytest.raises(smtplab.DnsLookupError, match="REFUSED"):
            lab.lookup_mx("python.org")
        assert lab.dig("www.outside.test", "A").rcode == "NOERROR"  # the CNAME, not python.org's address
        assert lab.dig("www.python.org", "A").rcode == "REFUSED"
        assert [r.exchange for r in lab.lookup_mx("gmail.com")] == ["smtp.gmail.com"]

        assert lab.wait_for_delivery(timeout=30)
        connections = psutil.Process().net_connections(kind="inet")
        assert all(ipaddress.ip_address(c.raddr.ip).is_loopback for c in connections if c.raddr)
    assert network_log, "the audit hook saw the lab's own traffic"
    assert not off_the_machine(network_log), off_the_machine(network_log)


OPEN_RELAY_TESTS = [
    # (recipient as written in RCPT TO, expected reply code, expected enhanced status code)
    ("<victim@elsewhere.test>", 550, "5.7.1"),
    ("<VICTIM@ELSEWHERE.TEST>", 550, "5.7.1"),
    ("<victim@elsewhere.test.>", 553, "5.1.3"),
    ("<victim@example.net.elsewhere.test>", 550, "5.7.1"),
    ("<victim%elsewhere.test@example.net>", 550, "5.1.1"),  # the percent hack
    ("<\"victim%elsewhere.test\"@example.net>", 550, "5.1.1"),
    ("<elsewhere.test!victim@example.net>", 550, "5.1.1"),  # a UUCP bang path
    ("<\"victim@elsewhere.test\"@example.net>", 550, "5.1.1"),  # a quoted local part hiding a domain
    ("<\"victim@elsewhere.test\">", 501, "5.1.3"),  # no domain at all
    ("<victim@elsewhere.test@example.net>", 553, "5.1.3"),
    ("<@example.net:victim@elsewhere.test>", 550, "5.7.1"),  # a source route (RFC 5321 appendix C)
    ("<@example.net,@mx1.example.net:victim@elsewhere.test>", 550, "5.7.1"),
    ("<victim@[127.0.0.1]>", 550, "5.7.1"),  # address literals
    ("<victim@[8.8.8.8]>", 550, "5.7.1"),
    ("<postmaster@[127.0.2.11]>", 550, "5.7.1"),
    ("<victim@[IPv6:::1]>", 550, "5.7.1"),
    ("victim@elsewhere.test", 550, "5.7.1"),  # without angle brackets
]
LOCAL_TRICKS = [  # spellings that are genuinely bob@example.net: accepted and delivered locally
    "<bob@example.net>", "<BOB@EXAMPLE.NET>", "<\"bob\"@example.net>", "<@elsewhere.test:bob@example.net>",
]


def mx_hosts(lab: smtplab.Lab) -> list[smtplab.Host]:
    return [h for h in lab.hosts.values() if "smtp" in h.ports]


def test_no_mx_relays_for_outsiders(network_log: list[tuple[str, Any]]) -> None:
    with smtplab.start() as lab:
        bob_before = len(lab.messages("bob@example.net"))
        for host in mx_hosts(lab):  # mx1, mx2 and smtp.example.org's inbound port
            with smtplib.SMTP(host.address, host.ports["smtp"], local_hostname="spammer.test", timeout=10) as client:
                client.ehlo()
                for recipient, code, enhanced in OPEN_RELAY_TESTS:
                    assert client.mail("spammer@elsewhere.test")[0] == 250
                    reply_code, text = client.docmd("RCPT", f"TO:{recipient}")
                    if host.domain == "example.org" and code == 550 and enhanced == "5.1.1":
                        enhanced = "5.7.1"  # example.net is not example.org's domain either
                    assert (reply_code, text.decode()[:5]) == (code, enhanced), (host.name, recipient, text)
                    assert client.rset()[0] == 250
        assert lab.queue == [], "an MX never queues mail for another domain"

        delivered = 0
        for host in mx_hosts(lab):
            if host.domain != "example.net":
                continue
            for recipient in LOCAL_TRICKS:
                with smtplib.SMTP(host.address, host.ports["smtp"], local_hostname="friend.test", timeout=10) as c:
                    c.ehlo()
                    assert c.mail("friend@elsewhere.test")[0] == 250
                    assert c.docmd("RCPT", f"TO:{recipient}")[0] == 250, recipient
                    assert c.data(f"Subject: {recipient}\r\n\r\nfor bob\r\n".encode())[0] == 250
                    delivered += 1
        assert len(lab.messages("bob@example.net")) == bob_before + delivered
        assert lab.queue == [], "accepted local mail is delivered locally, never relayed"

        # The submission port relays, but only for its own authenticated users.
        submission = lab.host("smtp.example.org")
        with smtplib.SMTP(submission.address, submission.ports["submission"], local_hostname="x.test", timeout=10) as c:
            c.starttls(context=lab.services.client_context)
            c.ehlo()
            assert c.mail("spammer@elsewhere.test") == (530, b"5.7.0 Authentication required")
            assert c.docmd("RCPT", "TO:<victim@elsewhere.test>") == (530, b"5.7.0 Authentication required")
    assert not off_the_machine(network_log), off_the_machine(network_log)
