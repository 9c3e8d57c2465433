"""Delivery status notifications (RFC 3461 DSN parameters, RFC 3464 reports): asked for at submission,
kept in the queue, passed on to a next hop that offers DSN, honoured by the relay's notifications."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage, Message

import pytest
from test_relay import StuckMX

import smtplab
from smtplab.net.dsn_parameters import (
    DsnSyntaxError,
    parse_mail_parameters,
    parse_rcpt_parameters,
    xtext_decode,
    xtext_encode,
)

ALICE, BOB = "alice@example.org", "bob@example.net"


def reports(lab: smtplab.Lab, action: str) -> list[tuple[EmailMessage, Message, list[Message]]]:
    """alice's notifications with `action`: (the whole report, its per-message fields, per-recipient fields)."""
    found = []
    for message in lab.messages(ALICE):
        if message.get_content_type() != "multipart/report":
            continue
        assert message.get_param("report-type") == "delivery-status"
        parts = list(message.iter_parts())
        assert parts[0].get_content_type() == "text/plain"  # RFC 6522: a human-readable part first
        assert parts[1].get_content_type() == "message/delivery-status"
        per_message, *per_recipient = parts[1].get_payload()  # the email package parses the fields
        if any(block["Action"] == action for block in per_recipient):
            found.append((message, per_message, per_recipient))
    return found


def test_a_success_notification_reaches_alice(lab: smtplab.Lab) -> None:
    result = lab.send(ALICE, BOB, "Tell me it arrived", "please", notify="SUCCESS", envid="QQ314159")
    assert lab.queue_item(result.queue_id).recipients[0].state == "delivered"
    [(report, per_message, [block])] = reports(lab, "delivered")
    assert report["Subject"] == "Successful Mail Delivery Report" and report["From"].startswith("Mail Delivery")
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_message["Reporting-MTA"] == "dns; smtp.example.org"
    assert block["Final-Recipient"] == f"rfc822; {BOB}"
    assert block["Original-Recipient"] == f"rfc822; {BOB}"
    assert block["Action"] == "delivered" and block["Status"] == "2.0.0"
    assert block["Remote-MTA"] == "dns; mx1.example.net"
    headers = list(report.iter_parts())[2]
    assert headers.get_content_type() == "text/rfc822-headers"  # RFC 3461 4.3: no full copy with success
    assert result.message_id in headers.get_payload()
    # The relay passed the request on to the MX, which offers DSN (RFC 3461 section 5.2).
    assert any("NOTIFY=SUCCESS" in e.text for e in lab.trace.events() if e.host == "mx1.example.net")
    assert [m["Subject"] for m in lab.messages(BOB)] == ["Tell me it arrived"]


def test_without_notify_no_success_notification_is_sent(lab: smtplab.Lab) -> None:
    lab.send(ALICE, BOB, "Quiet", "no report asked")
    assert lab.messages(ALICE) == []


def test_a_delay_notification_comes_at_the_first_deferral_and_only_once(lab: smtplab.Lab) -> None:
    lab.host("mx1").down()
    lab.host("mx2").down()
    result = lab.send(ALICE, BOB, "Patience", "it will come", notify="DELAY,FAILURE", envid="late-1")
    assert lab.queue_item(result.queue_id).recipients[0].state == "deferred"
    [(report, per_message, [block])] = reports(lab, "delayed")
    assert report["Subject"] == "Delayed Mail (still being retried)"
    assert per_message["Original-Envelope-Id"] == "late-1"
    assert per_message["Reporting-MTA"] == "dns; smtp.example.org"
    assert block["Final-Recipient"] == f"rfc822; {BOB}" and block["Original-Recipient"] == f"rfc822; {BOB}"
    assert block["Action"] == "delayed" and block["Status"].startswith("4.")
    lab.clock.advance("2m")  # deferred again: no second warning
    assert lab.queue_item(result.queue_id).recipients[0].attempts == 2
    assert len(reports(lab, "delayed")) == 1
    lab.host("mx1").up()
    lab.clock.advance("10m")
    assert lab.queue_item(result.queue_id).recipients[0].state == "delivered"
    assert len(lab.messages(ALICE)) == 1, "no success report: NOTIFY did not ask for one"


def test_notify_never_suppresses_the_bounce_and_ret_full_returns_the_message(lab: smtplab.Lab) -> None:
    lab.send(ALICE, "nobody@example.net", "Unseen", "no news", notify="NEVER")
    assert lab.messages(ALICE) == []
    lab.send(ALICE, "nobody@example.net", "Returned", "the whole body comes back", ret="FULL")
    [(report, _, [block])] = reports(lab, "failed")
    assert block["Status"] == "5.1.1"
    whole = list(report.iter_parts())[2]
    assert whole.get_content_type() == "message/rfc822"
    [original] = whole.get_payload()
    assert original["Subject"] == "Returned" and "the whole body comes back" in original.get_payload()


def test_a_next_hop_without_dsn_gets_a_relayed_notification(lab: smtplab.Lab) -> None:
    host = lab.host("mx1")
    host.down()
    plain = StuckMX(host.address, host.ports["smtp"])  # a plain MTA: no DSN in its EHLO
    try:
        lab.send(ALICE, BOB, "Passed on", "to an old server", notify="SUCCESS,FAILURE")
    finally:
        plain.close()
    rcpt = [line for line in plain.log if line.startswith("RCPT")]
    assert rcpt == [f"RCPT TO:<{BOB}>"], "no DSN parameters to a server that did not offer DSN"
    [(_, _, [block])] = reports(lab, "relayed")
    assert block["Action"] == "relayed" and block["Remote-MTA"] == "dns; mx1.example.net"


@pytest.mark.parametrize("service", ["submission", "smtp"])
def test_dsn_is_offered_and_its_parameters_checked(lab: smtplab.Lab, service: str) -> None:
    host = lab.host("smtp.example.org" if service == "submission" else "mx1.example.net")
    user = lab.users[ALICE]
    with smtplib.SMTP(host.address, host.ports[service], timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=lab.ca_file))
        client.ehlo()
        assert client.has_extn("dsn")
        if service == "submission":
            client.login(user.login, user.password)
        sender = ALICE
        assert client.mail(sender, ["RET=BOTH"])[0] == 501
        assert client.mail(sender, ["ENVID=a", "B"])[0] == 555  # "B" is no parameter anyone knows
        code, text = client.mail(sender, ["RET=HDRS", "ENVID=Mixed+2BCase"])
        assert code == 250, text
        assert client.rcpt(BOB, ["NOTIFY=NEVER,SUCCESS"])[0] == 501
        assert client.rcpt(BOB, ["NOTIFY=SOMETIMES"])[0] == 501
        assert client.rcpt(BOB, ["ORCPT=bob@example.net"])[0] == 501
        code, text = client.rcpt(BOB, ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Bob+2Bx@example.net"])
        assert code == 250, text


def test_xtext_and_parameter_parsing() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode("a+2Bb+3Dc+20d") == "a+b=c d"
    with pytest.raises(DsnSyntaxError):
        xtext_decode("a+2b")  # hex digits are upper case
    assert parse_mail_parameters(["RET=full", "ENVID=Q+2B1", "SIZE=10"]) == ("FULL", "Q+1")
    assert parse_rcpt_parameters(["NOTIFY=delay,success"]) == ("SUCCESS,DELAY", "")
    assert parse_rcpt_parameters(["NOTIFY=NEVER", "ORCPT=RFC822;a+2Bb@x"]) == ("NEVER", "rfc822;a+b@x")
    for bad in (["NOTIFY="], ["NOTIFY=SUCCESS,SUCCESS"], ["ORCPT=rfc822"]):
        with pytest.raises(DsnSyntaxError):
            parse_rcpt_parameters(bad)
