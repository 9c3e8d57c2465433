"""SMTPUTF8 (RFC 6531) end to end: josé@ejemplo.es, a user whose address is not ASCII, writes to bob and gets
mail back; each hop (submission, the relay's MTA-to-MTA SMTP, the MX) carries the address in UTF-8 because
the client asked with SMTPUTF8 and the server offered it; a hop without it refuses, never mangles."""

from __future__ import annotations

import base64
import imaplib
import smtplib
from collections.abc import Iterator
from email import message_from_bytes, policy

import pytest

import smtplab

JOSE = "jos\u00e9@ejemplo.es"


@pytest.fixture
def lab() -> Iterator[smtplab.Lab]:
    """The default lab plus a Spanish provider whose user has a non-ASCII local part."""
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"].append({
        "domain": "ejemplo.es",
        "hosts": {"smtp.ejemplo.es": ["submission", "smtp"], "imap.ejemplo.es": ["imap"]},
        "mx": {"smtp.ejemplo.es": 10},
        "users": ["jos\u00e9"],
    })
    with smtplab.start(scenario) as running:
        yield running


def submit_as_jose(lab: smtplab.Lab, recipients: list[str], subject: str) -> tuple[int, bytes]:
    """A real client (smtplib) submitting with SMTPUTF8; AUTH PLAIN carries the UTF-8 login (RFC 4616)."""
    host = lab.host("smtp.ejemplo.es")
    password = lab.users[JOSE].password
    message = (f"From: Jos\u00e9 <{JOSE}>\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '.')}@ejemplo.es>\r\n\r\n\u00a1Hola!\r\n").encode()
    with smtplib.SMTP(host.address, host.ports["submission"], local_hostname="mua.test", timeout=30) as client:
        client.starttls(context=lab.services.client_context)
        client.ehlo()
        assert client.has_extn("smtputf8")
        token = base64.b64encode(f"\0{JOSE}\0{password}".encode()).decode()
        assert client.docmd("AUTH", "PLAIN " + token)[0] == 235
        assert client.mail(JOSE, ["SMTPUTF8"])[0] == 250  # smtplib sends the commands as UTF-8 from here
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        return client.data(message)


def test_jose_writes_to_bob_through_every_hop_in_utf8(lab: smtplab.Lab) -> None:
    code, _ = submit_as_jose(lab, ["bob@example.net"], "hola bob")
    assert code == 250
    assert lab.wait_for_delivery(timeout=30)
    [message] = lab.messages("bob@example.net")
    assert message["From"] == f"Jos\u00e9 <{JOSE}>"
    assert message["Return-Path"] == f"<{JOSE}>"  # the envelope sender crossed the relay intact
    mx_lines = [e.text.upper() for e in lab.trace.events() if e.host == "mx1.example.net" and e.direction == "C"]
    assert f"MAIL FROM:<{JOSE.upper()}> SMTPUTF8" in mx_lines  # the relay asked for it (RFC 6531 section 3.4)
    # RFC 6531 section 3.7.3: each hop names the SMTPUTF8 transfer in its Received header.
    hops = smtplab.received_hops(message)
    assert [(h.by, h.protocol) for h in hops] == [("smtp.ejemplo.es", "UTF8SMTPSA"), ("mx1.example.net", "UTF8SMTPS")]
    assert all(h.encrypted for h in hops)


def test_bob_writes_to_jose_who_reads_it_over_imap(lab: smtplab.Lab) -> None:
    lab.send("bob@example.net", JOSE, "hola jos\u00e9", "\u00bfqu\u00e9 tal?")
    assert lab.wait_for_delivery(timeout=30)
    host = lab.host("imap.ejemplo.es")
    client = imaplib.IMAP4(host.address, host.ports["imap"], timeout=30)
    try:
        client.starttls(ssl_context=lab.services.client_context)
        password = lab.users[JOSE].password
        # LOGIN takes ASCII strings in imaplib; AUTHENTICATE PLAIN carries the UTF-8 name (RFC 4616).
        typ, _ = client.authenticate("PLAIN", lambda _: f"\0{JOSE}\0{password}".encode())
        assert typ == "OK"
        client.select("INBOX")
        typ, data = client.fetch("1", "(RFC822)")
        assert typ == "OK"
        raw = data[0][1]
        message = message_from_bytes(raw, policy=policy.default)
        assert message["Subject"] == "hola jos\u00e9" and str(message["To"]) == JOSE
        assert f"for <{JOSE}>".encode() in raw
    finally:
        client.logout()


@pytest.fixture
def old_mta() -> Iterator[tuple[int, list[str]]]:
    """A real aiosmtpd server on loopback that does not offer SMTPUTF8 (an MTA from before RFC 6531);
    yields its port and the MAIL commands it received."""
    import asyncio
    import threading

    from aiosmtpd.smtp import SMTP

    seen: list[str] = []

    class Sink:
        async def handle_MAIL(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            seen.append(address)
            envelope.mail_from = address
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(Sink(), enable_SMTPUTF8=False, hostname="old.test"), "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_a_hop_without_smtputf8_gets_nothing_and_the_sender_learns_why(lab: smtplab.Lab,
                                                                        old_mta: tuple[int, list[str]]) -> None:
    """RFC 6531 section 3.4: a non-ASCII address cannot be downgraded, so the relay sends no MAIL at all and
    the recipient's status is a permanent 553 5.6.7 (the sender gets it back in a bounce)."""
    from smtplab.mail.mx_client import smtp_deliver

    port, seen = old_mta
    content = b"From: x@example.org\r\nSubject: caf\xc3\xa9\r\n\r\nbody\r\n"
    outcome, _ = smtp_deliver("old.test", "127.0.0.1", port, "127.0.0.1", "relay.test", lab.services.client_context,
                               JOSE, ["bob@old.test"], content)
    code, text = outcome.replies["bob@old.test"]
    assert code == 553 and text.startswith("5.6.7 ") and seen == []
    # Only UTF-8 in the header (no address needs it): sent as it is, without SMTPUTF8, as Postfix does.
    outcome, _ = smtp_deliver("old.test", "127.0.0.1", port, "127.0.0.1", "relay.test", lab.services.client_context,
                               "alice@example.org", ["bob@old.test"], content)
    assert outcome.replies["bob@old.test"][0] == 250 and seen == ["alice@example.org"]


def test_jose_sends_with_lab_send_and_bob_answers(lab: smtplab.Lab) -> None:
    """The public API a notebook uses: lab.send asks for SMTPUTF8 itself when an address needs it."""
    result = lab.send(JOSE, "bob@example.net", "pregunta", "\u00bfvienes?")
    assert result.reply.code == 250
    lab.send("bob@example.net", JOSE, "Re: pregunta", "s\u00ed")
    assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["pregunta"]
    assert [m["Subject"] for m in lab.messages(JOSE)] == ["Re: pregunta"]
    assert not [item for item in lab.queue if any(r.state == "bounced" for r in item.recipients)]


def test_lab_imap_logs_a_utf8_user_in(lab: smtplab.Lab) -> None:
    lab.send("bob@example.net", JOSE, "buz\u00f3n", "por IMAP")
    client = lab.imap(JOSE)
    try:
        assert client.select("INBOX")[0] == "OK"
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and "buz\u00f3n".encode() in data[0][1]
    finally:
        client.logout()
