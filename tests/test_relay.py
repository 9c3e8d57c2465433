"""The relay: MX choice, fallback, deferral, retries on the virtual clock, bounces, persistence."""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from email import message_from_bytes, policy

import smtplab
from smtplab.mail.mx_client import is_protocol_error, smtp_deliver


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


class StuckMX:
    """A raw SMTP server on loopback that misbehaves as a broken MX does, for the relay to meet.

    With `mail_reply` it answers that to every MAIL. With `fail_dot` it answers 451 to the final dot but,
    like a server that forgot to end the transaction (issue 14), stays inside it: a MAIL that follows
    without RSET gets "503 5.5.1 Error: nested MAIL command". `log` keeps every command it read.
    """

    def __init__(self, address: str, port: int, *, mail_reply: str = "", fail_dot: bool = False) -> None:
        self.address, self.port = address, port
        self.mail_reply, self.fail_dot = mail_reply, fail_dot
        self.log: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the misbehaving server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, self.address, self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        in_transaction = False
        writer.write(b"220 stuck.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb, _, rest = line.decode().strip().partition(" ")
                verb = verb.upper()
                self.log.append(f"{verb} {rest}".strip())
                if verb in ("EHLO", "HELO"):
                    reply = "250-stuck.example\r\n250 ENHANCEDSTATUSCODES"
                elif verb == "MAIL":
                    if self.mail_reply:
                        reply = self.mail_reply
                    elif in_transaction:
                        reply = "503 5.5.1 Error: nested MAIL command"
                    else:
                        in_transaction, reply = True, "250 2.1.0 OK"
                elif verb == "RCPT":
                    reply = "250 2.1.5 OK"
                elif verb == "DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    while await reader.readline() not in (b".\r\n", b""):
                        pass
                    if self.fail_dot:
                        reply = "451 4.3.0 Local error in processing"  # and the transaction stays open
                    else:
                        in_transaction, reply = False, "250 2.0.0 OK"
                elif verb == "RSET":
                    in_transaction, reply = False, "250 2.0.0 OK"
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    reply = "502 5.5.1 Command not implemented"
                writer.write(reply.encode() + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # connections still open (e.g. one the relay kept)
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def test_a_503_to_mail_is_deferred_as_a_protocol_error_never_bounced(lab: smtplab.Lab) -> None:
    """Issue 14 item 2: a 5xx about the conversation (here 503 to MAIL) is no verdict on the mail."""
    stuck = []
    for name in ("mx1", "mx2"):
        host = lab.host(name)
        host.down()  # the host's address and SMTP port are now free for the broken server
        stuck.append(StuckMX(host.address, host.ports["smtp"], mail_reply="503 5.5.1 Error: nested MAIL command"))
    try:
        result = lab.send("alice@example.org", "bob@example.net", "Not a bounce", "the MX is confused, not me")
    finally:
        for server in stuck:
            server.close()
    assert any(line.startswith("MAIL FROM:") for line in stuck[0].log), "the relay met the broken MX"
    [status] = lab.queue_item(result.queue_id).recipients
    assert status.state == "deferred", status
    assert status.last_reply.startswith("503 5.5.1") and "protocol error" in status.last_reply
    assert lab.messages("alice@example.org") == [], "no bounce for a protocol error"
    lab.host("mx1").up()
    lab.clock.advance("2m")
    assert lab.queue_item(result.queue_id).recipients[0].state == "delivered"
    assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["Not a bounce"]


def test_a_recipient_syntax_501_still_bounces(lab: smtplab.Lab) -> None:
    """A 5xx whose enhanced code puts it under addressing (5.1.3) is about the recipient: permanent."""
    assert is_protocol_error(503, "5.5.1 Error: nested MAIL command")
    assert is_protocol_error(500, "5.5.2 Error: bad syntax") and is_protocol_error(502, "Command not implemented")
    assert not is_protocol_error(501, "5.1.3 Bad recipient address syntax")
    assert not is_protocol_error(500, "5.6.7 Non-ASCII characters without SMTPUTF8")
    assert not is_protocol_error(550, "5.1.1 User unknown")
    lab.host("mx1").inject("RCPT", "501 5.1.3 Bad recipient address syntax")
    result = lab.send("alice@example.org", "bob@example.net", "Bad address", "bounces")
    assert lab.queue_item(result.queue_id).recipients[0].state == "bounced"


def test_a_connection_with_a_failed_end_of_data_is_reset_before_it_is_reused(lab: smtplab.Lab) -> None:
    """After a failure reply to the final dot the relay sends RSET (or opens a new connection) before the
    next MAIL: a server that left the transaction open no longer turns the next message into a 503."""
    host = lab.host("mx1")
    host.down()
    stuck = StuckMX(host.address, host.ports["smtp"], fail_dot=True)
    source = lab.host("smtp.example.org").address
    context = ssl.create_default_context()
    try:
        first, kept = smtp_deliver("mx1.example.net", host.address, host.ports["smtp"], source, "smtp.example.org",
                                    context, "alice@example.org", ["bob@example.net"], b"Subject: 1\r\n\r\nx\r\n",
                                    None, True)
        assert first.replies["bob@example.net"][0] == 451
        stuck.fail_dot = False
        second, kept = smtp_deliver("mx1.example.net", host.address, host.ports["smtp"], source,
                                     "smtp.example.org", context, "alice@example.org", ["bob@example.net"],
                                     b"Subject: 2\r\n\r\nx\r\n", kept, True)
        assert second.replies["bob@example.net"][0] == 250, (second, stuck.log)
        if kept is not None:
            kept.close()
    finally:
        stuck.close()
    mails = [i for i, line in enumerate(stuck.log) if line.startswith("MAIL")]
    assert len(mails) == 2
    assert "RSET" in stuck.log[mails[0]:mails[1]] or stuck.log.count("EHLO smtp.example.org") == 2


def test_a_protocol_error_closes_the_connection(lab: smtplab.Lab) -> None:
    host = lab.host("mx1")
    host.down()
    stuck = StuckMX(host.address, host.ports["smtp"], mail_reply="503 5.5.1 Error: nested MAIL command")
    try:
        outcome, kept = smtp_deliver("mx1.example.net", host.address, host.ports["smtp"],
                                      lab.host("smtp.example.org").address, "smtp.example.org",
                                      ssl.create_default_context(), "alice@example.org", ["bob@example.net"],
                                      b"Subject: 1\r\n\r\nx\r\n", None, True)
    finally:
        stuck.close()
    assert outcome.replies["bob@example.net"][0] == 503
    assert kept is None, "a connection in an unknown state is never reused"
