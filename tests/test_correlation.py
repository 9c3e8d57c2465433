"""Correlation at the source: a message's trace holds exactly the work done for it, also under concurrency."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import Iterator

import pytest

import smtplab
from smtplab.trace.events import Connect, DnsQuery, QueueChange, SmtpData, SmtpDataEnd, SmtpReply
from smtplab.trace.ring import Trace, announce_connection, correlated, current_correlation
from smtplab.views.conversation import steps
from smtplab.views.journey import message_events


def _three_providers() -> smtplab.Scenario:
    data = smtplab.Scenario.default().to_dict()
    data["providers"].append({
        "domain": "example.com",
        "hosts": {"mx.example.com": ["smtp"], "imap.example.com": ["imap"]},
        "mx": {"mx.example.com": 10},
        "users": ["carol"],
    })
    return smtplab.Scenario.from_dict(data)


@pytest.fixture
def lab3() -> Iterator[smtplab.Lab]:
    with smtplab.start(_three_providers()) as running:
        yield running


MX_HOSTS = {"example.net": {"mx1.example.net", "mx2.example.net"}, "example.com": {"mx.example.com"}}


def _check_only_its_own(lab: smtplab.Lab, result: smtplab.SendResult, domain: str, other: str) -> None:
    own_mx = MX_HOSTS[domain]
    relay = lab.host("smtp.example.org").address
    mx_addresses = {lab.host(name).address for name in own_mx}
    for events in (lab.trace.for_message(result.queue_id), message_events(lab.trace, result)):
        questions = [e for e in events if isinstance(e.payload, DnsQuery)]
        assert any(q.payload.qname == f"{domain}." and q.payload.qtype == "MX" for q in questions), \
            "the relay's own MX lookup belongs to the message"
        for q in questions:
            asker = q.client.rsplit(":", 1)[0]
            assert other not in q.payload.qname, f"{result.queue_id} to {domain} shows a question about {other}"
            # Asked by the relay about this domain (or its exchanges), or by this domain's MX (its checks).
            assert asker in mx_addresses or (asker == relay and q.payload.qname.rstrip(".").endswith(domain)), q
        connects = [e for e in events if isinstance(e.payload, Connect) and e.protocol == "smtp"]
        assert {e.host for e in connects} <= {"smtp.example.org", *own_mx}, [e.host for e in connects]
        assert any(e.host in own_mx for e in connects), "the relay's connection to the MX belongs to the message"
        for change in (e for e in events if e.protocol == "queue"):
            assert result.queue_id in change.message_ids or result.message_id in change.message_ids, change
            assert not isinstance(change.payload, QueueChange) or not change.payload.mx \
                or change.payload.mx in own_mx, change
    participants, _ = steps(message_events(lab.trace, result), lab)
    hosts = {p.key for p in participants}
    assert not any(name in hosts for name in MX_HOSTS[other]), hosts


def test_two_messages_relayed_at_once_keep_their_own_trace(lab3: smtplab.Lab) -> None:
    """20 rounds: both messages wait for a retry, then the clock releases both attempts at the same moment
    (their DNS questions and connections interleave; a connect delay keeps the attempts overlapping)."""
    lab = lab3
    mx_hosts = [lab.host(name) for names in MX_HOSTS.values() for name in sorted(names)]
    for _ in range(20):
        for host in mx_hosts:
            host.inject("connect", "421 4.3.2 Not now, try again later")
        to_net = lab.send("alice@example.org", "bob@example.net", "to net", "one", wait=False)
        to_com = lab.send("alice@example.org", "carol@example.com", "to com", "two", wait=False)
        assert lab.wait_for_delivery()
        for host in mx_hosts:
            host.clear_faults()
            host.inject("connect", delay=0.05)
        lab.clock.advance("2m")  # both retries become due together
        assert lab.wait_for_delivery()
        for host in mx_hosts:
            host.clear_faults()
        for result in (to_net, to_com):
            assert all(r.state == "delivered" for r in lab.queue_item(result.queue_id).recipients)
        _check_only_its_own(lab, to_net, "example.net", "example.com")
        _check_only_its_own(lab, to_com, "example.com", "example.net")


def test_pipelined_body_is_traced_as_the_server_read_it(lab: smtplab.Lab) -> None:
    """A client that sends DATA, the body and the dot in one write, without waiting for the 354: the trace
    shows DATA, the 354, the body, the dot and the 250, and the body is the one the server stored."""
    mx = lab.host("mx1.example.net")
    body = b"Subject: pipelined\r\nMessage-ID: <pipe@example.org>\r\n\r\nsent before the 354\r\nline two\r\n"
    with socket.create_connection((mx.address, mx.ports["smtp"]), timeout=10) as sock:
        stream = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = stream.readline()
                if line[3:4] != b"-":
                    return line

        reply()
        sock.sendall(b"EHLO pipe.example\r\n")
        reply()
        sock.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n" + body + b".\r\n")
        assert reply().startswith(b"250")
        assert reply().startswith(b"250")
        assert reply().startswith(b"354")
        final = reply()
        assert final.startswith(b"250"), final
        sock.sendall(b"QUIT\r\n")
        reply()
    [stored] = lab.messages("bob@example.net")
    assert stored["Subject"] == "pipelined"
    conn = lab.trace.connections("smtp")[-1]
    events = [e for e in lab.trace.filter(conn=conn) if e.kind in ("line", "data")]
    texts = [e.text for e in events]
    data_at = texts.index("DATA")
    assert isinstance(events[data_at + 1].payload, SmtpReply) and events[data_at + 1].payload.code == 354
    body_event = events[data_at + 2]
    assert isinstance(body_event.payload, SmtpData)
    assert body_event.text == body.decode().replace("\r\n", "\n").rstrip("\n")
    assert body_event.payload.size == len(body) and body_event.payload.lines == 5
    assert body.split(b"\r\n\r\n", 1)[1].decode() in stored.as_string().replace("\n", "\r\n")
    assert isinstance(events[data_at + 3].payload, SmtpDataEnd)
    assert isinstance(events[data_at + 4].payload, SmtpReply) and events[data_at + 4].payload.code == 250
    assert not any(e.text.startswith("sent before") for e in events if e.kind == "line"), \
        "the body is not traced as commands"
    assert [e for e in lab.trace.for_message("<pipe@example.org>") if e.kind == "data"] == [body_event]


# --- the correlation itself (pure) ---

def test_links_are_followed_down_only() -> None:
    trace = Trace(lambda: 0.0)
    attempt = trace.new_correlation("relay", "Q1", "<m1@x>")
    question = trace.new_correlation("dns", attempt)
    other = trace.new_correlation("relay", "Q2")
    with correlated(trace, question):
        trace.record("dns", "query", "dns.lab", "a")
    trace.record("dns", "query", "dns.lab", "b", corr=other)
    trace.record("queue", "queue", "relay", "c", message_ids=("Q1",))
    assert [e.text for e in trace.for_message("Q1")] == ["a", "c"]
    assert [e.text for e in trace.for_message("m1@x")] == ["a"]
    assert [e.text for e in trace.for_message("Q2")] == ["b"]
    assert trace.correlations_of("Q1") == {attempt, question}


def test_correlation_travels_with_tasks_and_copied_contexts_only() -> None:
    trace = Trace(lambda: 0.0)

    async def main() -> tuple[str, str, str]:
        seen: list[str] = []

        async def task() -> None:
            seen.append(current_correlation())

        with correlated(trace, "relay:1"):
            await asyncio.create_task(task())
            loop = asyncio.get_running_loop()
            import contextvars

            copied = await loop.run_in_executor(None, contextvars.copy_context().run, current_correlation)
            bare = await loop.run_in_executor(None, current_correlation)
        return seen[0], copied, bare

    assert asyncio.run(main()) == ("relay:1", "relay:1", "")
    assert current_correlation() == ""


def test_announcements_are_claimed_once_by_exact_endpoint() -> None:
    trace = Trace(lambda: 0.0)
    with correlated(trace, "relay:7"):
        announce_connection("127.0.1.10:40000")
    assert trace.claim(("conn", "127.0.1.10:40001")) == ""
    assert trace.claim(("conn", "127.0.1.10:40000")) == "relay:7"
    assert trace.claim(("conn", "127.0.1.10:40000")) == "", "claimed once"
    announce_connection("127.0.1.10:40002")  # outside any work: nothing announced
    assert trace.claim(("conn", "127.0.1.10:40002")) == ""


def test_a_kept_connection_serves_the_next_message_as_its_own(lab: smtplab.Lab) -> None:
    """The relay keeps a connection open under load; the MX's transaction for the second message is the
    second message's (the relay announces each MAIL), not the first's."""
    mx = lab.host("mx1.example.net")
    client = smtplib.SMTP(local_hostname="relay.test", timeout=10, source_address=(lab.host("smtp.example.org").address, 0))
    client.connect(mx.address, mx.ports["smtp"])
    client.ehlo()
    local = client.sock.getsockname()
    first = lab.trace.new_correlation("relay", "FIRST")
    second = lab.trace.new_correlation("relay", "SECOND")
    for corr, mid in ((first, "<one@x>"), (second, "<two@x>")):
        with correlated(lab.trace, corr):
            announce_connection(f"{local[0]}:{local[1]}")
        client.sendmail("alice@example.org", ["bob@example.net"], f"Message-ID: {mid}\r\n\r\nbody\r\n")
    client.quit()
    one = [e.text for e in lab.trace.for_message("FIRST") if e.protocol == "smtp" and e.direction == "C"]
    two = [e.text for e in lab.trace.for_message("SECOND") if e.protocol == "smtp" and e.direction == "C"]
    assert one.count("data") == 1 and two.count("data") == 1
    assert any(t.startswith("ehlo") for t in one) and not any(t.startswith("ehlo") for t in two)
    assert "quit" in two and "quit" not in one


def test_a_check_asked_again_over_tcp_keeps_its_asker(lab: smtplab.Lab) -> None:
    """A truncated answer makes the MX's checks ask again over TCP (RFC 7766): still the same message's."""
    import dns.message

    from smtplab.auth.mailauth import LabDns

    resolver = LabDns(lab.dns.address, lab.dns.port)
    corr = lab.trace.new_correlation("test", "TCPQ")
    try:
        with correlated(lab.trace, corr), resolver.asking_from(lab.host("mx1").address):
            resolver._over_tcp(dns.message.make_query("example.org", "TXT"))
    finally:
        resolver.close()
    [query] = [e for e in lab.trace.for_message("TCPQ") if isinstance(e.payload, DnsQuery)]
    assert query.payload.transport == "tcp" and query.payload.asker == corr
    assert query.client.startswith(lab.host("mx1").address + ":")
