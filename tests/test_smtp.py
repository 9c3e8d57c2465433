"""The submission server and the MX answer like real ones, to smtplib and to raw lines."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl

import pytest

import smtplab


def submission(lab: smtplab.Lab) -> smtplab.Host:
    return lab.host("smtp.example.org")


def raw_lines(address: str, port: int, *lines: bytes, timeout: float = 5) -> list[str]:
    """Send raw lines and return every reply line received (greeting included)."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        buffer = b""
        replies: list[str] = []

        def read_reply() -> None:
            nonlocal buffer
            while True:
                while b"\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                line, buffer = buffer.split(b"\r\n", 1)
                replies.append(line.decode())
                if line[3:4] != b"-":
                    return

        read_reply()
        for line in lines:
            sock.sendall(line)
            read_reply()
    return replies


def test_mail_before_starttls_is_refused_530(lab: smtplab.Lab) -> None:
    host = submission(lab)
    with smtplib.SMTP(host.address, host.ports["submission"], local_hostname="client.local", timeout=10) as c:
        c.ehlo()
        code, text = c.mail("alice@example.org")
        assert code == 530
        assert text.startswith(b"5.7.0")
        assert c.has_extn("starttls") and not c.has_extn("auth"), "AUTH is only offered after STARTTLS"


def test_wrong_password_535_then_right_password_works(lab: smtplab.Lab) -> None:
    host = submission(lab)
    context = ssl.create_default_context(cafile=lab.ca_file)
    with smtplib.SMTP(host.address, host.ports["submission"], local_hostname="client.local", timeout=10) as c:
        c.starttls(context=context)
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            c.login("alice@example.org", "not-the-password")
        assert info.value.smtp_code == 535
        c.login("alice@example.org", lab.users["alice@example.org"].password)
        assert c.noop()[0] == 250


def test_wrong_password_through_lab_send_says_what_to_do(lab: smtplab.Lab) -> None:
    with pytest.raises(smtplab.SendError, match=r"535.*lab.users") as info:
        lab.send("alice@example.org", "bob@example.net", password="nope")
    assert info.value.reply.code == 535


def test_users_may_only_send_as_themselves(lab: smtplab.Lab) -> None:
    session = lab.session("smtp.example.org")
    session.ehlo()
    assert session.starttls().code == 220
    session.ehlo()
    assert session.auth_plain("alice@example.org", lab.users["alice@example.org"].password).code == 235
    forged = session.mail("bob@example.net")
    assert (forged.code, forged.enhanced) == (553, "5.7.1")
    assert session.mail("alice@example.org").code == 250
    session.quit()


def test_other_providers_users_cannot_log_in(lab: smtplab.Lab) -> None:
    session = lab.session("smtp.example.org")
    session.ehlo()
    session.starttls()
    session.ehlo()
    reply = session.auth_plain("bob@example.net", lab.users["bob@example.net"].password)
    assert reply.code == 535
    session.close()


def test_mx_refuses_to_relay_for_outside_domains(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1.example.net")
    with smtplib.SMTP(mx.address, mx.ports["smtp"], local_hostname="client.local", timeout=10) as c:
        c.ehlo()
        assert c.mail("someone@example.org")[0] == 250
        code, text = c.rcpt("victim@elsewhere.test")
        assert code == 550 and text.startswith(b"5.7.1")
        code, text = c.rcpt("nobody@example.net")
        assert code == 550 and text.startswith(b"5.1.1")
        assert c.rcpt("bob@example.net")[0] == 250


def test_command_line_limit_is_512_octets(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1.example.net")
    at_limit = b"NOOP " + b"x" * (512 - 2 - 5) + b"\r\n"  # exactly 512 octets with CRLF
    over = b"NOOP " + b"x" * (513 - 2 - 5) + b"\r\n"  # 513 octets
    assert len(at_limit) == 512 and len(over) == 513
    replies = raw_lines(mx.address, mx.ports["smtp"], b"EHLO client.local\r\n", at_limit, over, b"NOOP\r\n")
    finals = [r for r in replies if r[3] == " "]
    assert finals[2].startswith("250")
    assert finals[3].startswith("500 5.5.2")
    assert finals[4].startswith("250"), "the same connection keeps working after the error"


def test_bare_lf_in_data_is_refused(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1.example.net")
    replies = raw_lines(
        mx.address, mx.ports["smtp"],
        b"EHLO client.local\r\n", b"MAIL FROM:<x@example.org>\r\n", b"RCPT TO:<bob@example.net>\r\n",
        b"DATA\r\n", b"Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<evil@example.org>\r\n.\r\n", b"NOOP\r\n",
    )
    finals = [r for r in replies if r[3] == " "]
    assert finals[-2].startswith("554 5.6.0"), finals
    assert finals[-1].startswith("250")
    assert lab.messages("bob@example.net") == [], "nothing half-delivered"


def test_mx_delivers_with_received_header(lab: smtplab.Lab) -> None:
    mx = lab.host("mx2.example.net")
    with smtplib.SMTP(mx.address, mx.ports["smtp"], local_hostname="sender.test", timeout=10) as c:
        c.sendmail("carol@example.org", ["bob@example.net"], b"Subject: direct\r\n\r\nto the backup MX\r\n")
    [message] = lab.messages("bob@example.net")
    received = message["Received"]
    assert "from sender.test" in received and "by mx2.example.net" in received and "[127.0.0.1]" in received
    assert message["Return-Path"] == "<carol@example.org>"


def test_errors_do_not_disturb_other_clients(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1.example.net")
    bad = socket.create_connection((mx.address, mx.ports["smtp"]), timeout=5)
    bad.recv(1024)
    bad.sendall(b"\x00\xff garbage\r\n" + b"y" * 5000 + b"\r\n")
    result = lab.send("alice@example.org", "bob@example.net", "still there", "yes")
    bad.close()
    assert result.reply.code == 250
    assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["still there"]


def test_replies_carry_enhanced_status_codes(lab: smtplab.Lab) -> None:
    session = lab.session("mx1.example.net")
    assert session.greeting.code == 220
    early = session.send("MAIL FROM:<a@example.org>")
    assert early.code == 503 and early.enhanced == "5.5.1"
    ehlo = session.ehlo()
    assert "ENHANCEDSTATUSCODES" in ehlo.text and "AUTH" not in ehlo.text
    assert session.send("RCPT TO:<bob@example.net>").enhanced == "5.5.1"  # no MAIL yet
    unknown = session.send("FOO bar")
    assert unknown.code == 500 and unknown.enhanced.startswith("5.5")
    assert "meaning" not in unknown.meaning and unknown.meaning
    session.quit()
    assert session.closed


def test_a_normal_day_logs_no_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # Anything asyncio or aiosmtpd logs lands as a red stderr box under a learner's notebook cell.
    caplog.set_level(logging.WARNING)
    with smtplab.start() as lab:
        lab.send("alice@example.org", "bob@example.net", "quiet", "please")
        lab.imap("bob@example.net").logout()
        s = lab.session("smtp.example.org")
        s.ehlo()
        s.starttls()
        s.quit()
    noisy = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy


def test_help_and_ehlo_offer_only_what_is_answered(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1.example.net")
    with smtplib.SMTP(mx.address, mx.ports["smtp"], local_hostname="client.local", timeout=10) as c:
        c.ehlo()
        assert not c.has_extn("auth") and c.has_extn("smtputf8")
        code, text = c.docmd("HELP")
        assert code == 214 and b" AUTH" not in text and b"VRFY" in text
        assert c.docmd("AUTH", "PLAIN")[0] == 503  # not offered here: not "538 encryption required"
        code, text = c.docmd("VRFY", "bob@example.net")  # RFC 5321 section 3.5.3: answered, without a promise
        assert code == 252 and b"will accept" not in text
        assert c.noop()[0] == 250
        assert b"STARTTLS" in c.docmd("HELP")[1]
        c.starttls(context=lab.services.client_context)
        c.ehlo()
        assert not c.has_extn("starttls") and b"STARTTLS" not in c.docmd("HELP")[1]  # a second one is a 503


def test_whatever_raises_at_the_end_of_data_the_next_mail_is_a_new_transaction() -> None:
    """RFC 5321 §4.1.1.4, for any handler (here one with no error handling at all): the reply to the final dot
    ends the transaction, and what went wrong is in the trace, not on the wire."""
    import asyncio
    import threading

    from smtplab.net.smtp import LabSMTP
    from smtplab.trace.ring import Trace

    class Broken:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            raise RuntimeError("secret internals")

    trace = Trace(lambda: 0.0)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(
        lambda: LabSMTP(Broken(), trace=trace, host_name="broken.test", port_name="smtp",
                        peer_name=lambda address: "client", loop=loop), "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.sockets[0].getsockname()[1], timeout=10) as c:
            c.ehlo()
            for _ in range(2):  # before the fix, the second MAIL got "503 nested MAIL"
                assert c.mail("a@example.org")[0] == 250
                assert c.rcpt("b@example.net")[0] == 250
                code, text = c.data(b"Subject: x\r\n\r\nbody\r\n")
                assert (code, text) == (451, b"4.3.0 Local error in processing: try again later")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    assert any(e.kind == "error" and "RuntimeError: secret internals" in e.text for e in trace.events())
