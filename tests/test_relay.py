"""The relay: MX choice, fallback, deferral, retries on the virtual clock, bounces, persistence."""

from __future__ import annotations

import re
from email import message_from_bytes, policy

import smtplab


def delivered_by(lab: smtplab.Lab, address: str) -> list[str]:
    """Return, per message in the mailbox, the MX host named in its newest Received header."""
    hosts = []
    for message in lab.messages(address):
        newest = message.get_all("Received")[0]
        hosts.append(re.search(r"\bby\s+(\S+)", newest).group(1))
    return hosts


def test_alice_to_bob_via_mx1_with_the_route_in_received(lab: smtplab.Lab) -> None:
    result = lab.send("alice@example.org", "bob@example.net", "Hi Bob", "Hello!")
    assert result.reply.code == 250 and result.queue_id
    [item] = lab.queue
    assert item.recipients[0].state == "delivered"
    assert item.recipients[0].via == "mx1.example.net"
    [message] = lab.messages("bob@example.net")
    hops = message.get_all("Received")
    assert len(hops) == 2
    assert "by mx1.example.net" in hops[0] and "from smtp.example.org" in hops[0]
    assert f"[{lab.host('smtp.example.org').address}]" in hops[0], "relayed from the sending host's own address"
    assert "by smtp.example.org" in hops[1] and "ESMTPSA" in hops[1]
    assert message["Message-ID"] == result.message_id


def test_mx1_down_goes_to_mx2(lab: smtplab.Lab) -> None:
    lab.host("mx1.example.net").down()
    lab.send("alice@example.org", "bob@example.net", "Fallback", "via the backup MX")
    assert delivered_by(lab, "bob@example.net") == ["mx2.example.net"]
    notes = [e.text for e in lab.trace.filter(protocol="queue")]
    assert any("mx1.example.net" in n and "refused" in n for n in notes)


def test_both_down_defers_then_retry_delivers_after_up(lab: smtplab.Lab) -> None:
    lab.host("mx1").down()
    lab.host("mx2").down()
    result = lab.send("alice@example.org", "bob@example.net", "Patience", "it will arrive")
    [item] = lab.queue
    assert item.recipients[0].state == "deferred"
    assert item.recipients[0].last_reply.startswith("451 4.4.1")
    assert lab.messages("bob@example.net") == []
    lab.clock.advance("30s")  # not yet due: nothing happens
    assert lab.queue[0].recipients[0].attempts == 1
    lab.host("mx2").up()
    lab.clock.advance("1m")
    [item] = lab.queue
    assert item.recipients[0].state == "delivered", item
    assert delivered_by(lab, "bob@example.net") == ["mx2.example.net"]
    assert lab.messages("bob@example.net")[0]["Message-ID"] == result.message_id


def test_unknown_user_at_the_mx_bounces_with_a_dsn(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", ["nobody@example.net", "bob@example.net"], "Two", "one will bounce")
    lab.wait_for_delivery()
    states = {r.address: r.state for r in lab.queue[0].recipients}
    assert states == {"nobody@example.net": "bounced", "bob@example.net": "delivered"}
    assert len(lab.messages("bob@example.net")) == 1
    [dsn] = lab.messages("alice@example.org")
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Return-Path"] == "<>"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    raw = status.as_bytes()
    assert b"Final-Recipient: rfc822; nobody@example.net" in raw
    assert b"Action: failed" in raw and b"Status: 5.1.1" in raw
    assert b"Diagnostic-Code: smtp; 550 5.1.1" in raw
    parsed = message_from_bytes(dsn.as_bytes(), policy=policy.default)
    assert parsed.is_multipart()


def test_nxdomain_bounces_at_once(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "someone@nowhere.example.net", "Lost", "no such domain")
    assert lab.queue[0].recipients[0].state == "bounced"
    assert "NXDOMAIN" in lab.queue[0].recipients[0].last_reply
    assert len(lab.messages("alice@example.org")) == 1


def test_queue_survives_a_restart(lab_dir) -> None:  # type: ignore[no-untyped-def]
    with smtplab.start(directory=lab_dir) as lab:
        password = lab.users["alice@example.org"].password
        lab.host("mx1").down()
        lab.host("mx2").down()
        result = lab.send("alice@example.org", "bob@example.net", "Kept", "on disk")
        assert lab.queue[0].recipients[0].state == "deferred"
    with smtplab.start(directory=lab_dir) as lab:
        assert lab.users["alice@example.org"].password == password
        [item] = lab.queue
        assert item.queue_id == result.queue_id
        lab.clock.advance("2m")
        assert lab.queue[0].recipients[0].state == "delivered"
        assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["Kept"]


def test_local_recipient_is_delivered_through_own_mx(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "alice@example.org", "Note to self", "remember")
    assert [m["Subject"] for m in lab.messages("alice@example.org")] == ["Note to self"]


def test_one_message_view_has_dns_submission_and_relay(lab: smtplab.Lab) -> None:
    result = lab.send("alice@example.org", "bob@example.net", "Traced", "follow me")
    events = lab.trace.for_message(result.message_id)
    protocols = {(e.protocol, e.host) for e in events}
    assert ("smtp", "smtp.example.org") in protocols
    assert ("smtp", "mx1.example.net") in protocols
    assert ("dns", "dns.lab") in protocols
    assert ("queue", "smtp.example.org") in protocols
    other = lab.send("alice@example.org", "bob@example.net", "Other", "not me")
    assert not set(e.seq for e in lab.trace.for_message(other.message_id)) & set(e.seq for e in events)
