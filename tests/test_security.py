"""Security layers in the lab: SPF, DKIM, DMARC, blocklists, spam score, TLS on the wire, smuggling,
and the two deliberate misconfigurations a teacher can switch on (open relay, AUTH without TLS)."""

from __future__ import annotations

import base64
import re

import pytest

import smtplab
from smtplab.trace.events import SmtpDataEnd


@pytest.fixture(params=["reject", "quarantine"])
def secure_lab(request):  # type: ignore[no-untyped-def]
    with smtplab.start(scenario=smtplab.Scenario.security(policy=request.param)) as lab:
        yield lab


def forge(lab: smtplab.Lab, subject: str = "Please pay this invoice") -> smtplab.Reply:
    """Mallory's host talks straight to bob's MX and pretends to be alice (envelope and header)."""
    s = lab.session("mx1.example.net", source="mail.evil.example")
    s.ehlo("mail.evil.example")
    s.mail("alice@example.org")
    s.rcpt("bob@example.net")
    reply = s.data(f"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: {subject}\n"
                   "Date: Sat, 28 Nov 2026 08:00:00 +0000\nMessage-ID: <forged@evil.example>\n\nSend the money.\n")
    s.quit()
    return reply


def test_genuine_mail_passes_spf_dkim_dmarc(secure_lab: smtplab.Lab) -> None:
    secure_lab.send("alice@example.org", "bob@example.net", "Lunch?", "Friday at noon?")
    [message] = secure_lab.messages("bob@example.net")
    results = message["Authentication-Results"]
    assert results.startswith("mx1.example.net;")
    assert "spf=pass" in results and "smtp.mailfrom=alice@example.org" in results
    assert "dkim=pass header.d=example.org" in results
    assert "dmarc=pass" in results and "header.from=example.org" in results
    assert message["DKIM-Signature"] and "d=example.org" in message["DKIM-Signature"]


def test_forged_mail_is_rejected_or_quarantined(secure_lab: smtplab.Lab) -> None:
    policy = secure_lab.scenario.provider_of("example.org").security["dmarc"].split("p=")[1]
    reply = forge(secure_lab)
    if policy == "reject":
        assert reply.code == 550 and reply.enhanced == "5.7.1"
        assert "DMARC policy of example.org" in reply.text and "spf=fail" in reply.text
        assert secure_lab.messages("bob@example.net") == [] and secure_lab.messages("bob@example.net", "Junk") == []
    else:
        assert reply.code == 250
        assert secure_lab.messages("bob@example.net") == []
        [junk] = secure_lab.messages("bob@example.net", "Junk")
        results = junk["Authentication-Results"]
        assert "spf=fail" in results and "dkim=none" in results and "dmarc=fail (p=quarantine)" in results
        imap = secure_lab.imap("bob@example.net")
        try:
            assert any(b"Junk" in line for line in imap.list()[1]), "Junk is an IMAP folder"
            assert imap.select("Junk")[1] == [b"1"]
        finally:
            imap.logout()
    notes = [e.text for e in secure_lab.trace.filter(host="mx1.example.net", kind="state")]
    assert any("spf=fail" in n for n in notes)


def test_dkim_fails_when_the_body_changes_in_transit() -> None:
    scenario = smtplab.Scenario.security(policy="none").to_dict()
    scenario["providers"][0]["hosts"]["smtp.example.org"] = {"services": ["submission", "smtp"],
                                                            "options": ["append_footer"]}
    with smtplab.start(scenario=scenario) as lab:
        lab.send("alice@example.org", "bob@example.net", "Signed", "Every word counts.")
        [message] = lab.messages("bob@example.net")
        results = message["Authentication-Results"]
        assert "dkim=fail header.d=example.org" in results, results
        assert "spf=pass" in results and "dmarc=pass" in results, "SPF still aligns, so DMARC passes"
        assert "footer added by smtp.example.org" in message.get_content()


def test_blocklisted_client_gets_554_with_the_reason() -> None:
    scenario = smtplab.Scenario.security().to_dict()
    scenario["blocklist"] = {"mail.evil.example": "known source of forged invoices"}
    with smtplab.start(scenario=scenario) as lab:
        listed = lab.session("mx1.example.net", source="mail.evil.example")
        listed.ehlo("mail.evil.example")
        listed.mail("mallory@evil.example")
        reply = listed.rcpt("bob@example.net")
        assert reply.code == 554 and reply.enhanced == "5.7.1"
        assert "blocked using bl.lab" in reply.text and "known source of forged invoices" in reply.text
        assert lab.host("mail.evil.example").address in reply.text
        listed.quit()
        clean = lab.session("mx1.example.net")  # the learner's own address is not listed
        clean.ehlo()
        clean.mail("someone@elsewhere.test")
        assert clean.rcpt("bob@example.net").code == 250
        clean.quit()
        test_entry = lab.dig("2.0.0.127.bl.lab", "A")
        assert test_entry.records and "127.0.0.2" in test_entry.records[0], "RFC 5782 test entry"
        assert lab.dig("1.0.0.127.bl.lab", "A").rcode == "NXDOMAIN", "127.0.0.1 is never listed"


def test_spam_score_is_shown_and_filters(secure_lab: smtplab.Lab) -> None:
    secure_lab.send("alice@example.org", "bob@example.net", "Quarterly report", "Attached, as promised.")
    secure_lab.send("alice@example.org", "bob@example.net", "YOU ARE A WINNER", "Claim your lottery prize!!!")
    inbox = secure_lab.messages("bob@example.net")
    junk = secure_lab.messages("bob@example.net", "Junk")
    assert [m["Subject"] for m in inbox] == ["Quarterly report"]
    assert inbox[0]["X-Spam-Score"] == "0"
    # Genuine DKIM-signed mail from alice, but scam words, capitals and !!! add up to 5: Junk.
    assert [m["Subject"] for m in junk] == ["YOU ARE A WINNER"]
    report = junk[0]["X-Spam-Report"]
    assert "BAIT_WORDS=2.5" in report and "SUBJECT_ALL_CAPS=1.5" in report and "MANY_EXCLAMATIONS=1" in report


def test_eavesdropper_sees_clear_text_before_starttls_and_only_tls_records_after(lab: smtplab.Lab) -> None:
    alice = lab.users["alice@example.org"]
    s = lab.session("smtp.example.org")
    s.ehlo()
    s.starttls()
    s.ehlo()
    s.auth_plain(alice.address, alice.password)
    s.quit()
    wire = lab.wire(s.conn).render()
    before, _, after = wire.partition("220 2.0.0 Ready to start TLS")
    assert "EHLO client.local" in before and "STARTTLS" in before
    assert "[TLS handshake" in after and "[TLS application data" in after
    token = base64.b64encode(f"\0{alice.address}\0{alice.password}".encode()).decode()
    assert token not in wire and alice.password not in wire, "the password never crosses in clear"
    assert "AUTH PLAIN" not in after


def test_plaintext_auth_teaching_toggle_exposes_the_password() -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"][1]["hosts"]["smtp.example.net"] = {"services": ["submission"],
                                                            "options": ["plaintext_auth"]}
    with smtplab.start(scenario=scenario) as lab:
        bob = lab.users["bob@example.net"]
        s = lab.session("smtp.example.net")
        ehlo = s.ehlo()
        assert "AUTH LOGIN PLAIN" in ehlo.lines, "AUTH offered without TLS on this host only"
        assert s.auth_plain(bob.address, bob.password).code == 235
        s.quit()
        wire = lab.wire(s.conn).render()
        token = re.search(r"AUTH PLAIN (\S+)", wire).group(1)
        assert base64.b64decode(token).split(b"\0")[2].decode() == bob.password
        notes = [e.text for e in lab.trace.filter(conn=s.conn, kind="state")]
        assert any("WITHOUT TLS" in n for n in notes), "clearly labelled in the trace"
        other = lab.session("smtp.example.org")  # every other host still refuses
        other.ehlo()
        refused = other.auth_plain("alice@example.org", "x")
        assert refused.code == 530 and "STARTTLS" in refused.text
        other.close()


def test_open_relay_only_on_a_deliberately_misconfigured_host() -> None:
    scenario = smtplab.Scenario.security().to_dict()
    scenario["providers"][2]["hosts"]["mail.evil.example"] = {"services": ["submission", "smtp", "imap"],
                                                             "options": ["open_relay"]}
    with smtplab.start(scenario=scenario) as lab:
        normal = lab.session("mx1.example.net")
        normal.ehlo()
        normal.mail("spammer@elsewhere.test")
        assert normal.rcpt("victim@example.org").code == 550
        normal.close()
        relay = lab.session("mail.evil.example", "smtp")
        relay.ehlo()
        relay.mail("spammer@elsewhere.test")
        assert relay.rcpt("alice@example.org").code == 250, "the open relay takes mail for anyone"
        assert relay.data("From: spammer@elsewhere.test\nSubject: cheap pills\n\nbuy now\n").code == 250
        relay.quit()
        lab.wait_for_delivery()
        got = lab.messages("alice@example.org") + lab.messages("alice@example.org", "Junk")
        assert [m["Subject"] for m in got] == ["cheap pills"]
        assert "from mail.evil.example" in got[0].get_all("Received")[0]


@pytest.mark.parametrize("ending", [b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r\n.\r", b"\r.\r\n"])
def test_smuggling_variants_are_refused(lab: smtplab.Lab, ending: bytes) -> None:
    s = lab.session("mx1.example.net")
    s.ehlo()
    s.mail("carol@elsewhere.test")
    s.rcpt("bob@example.net")
    assert s.send("DATA").code == 354
    smuggled = (b"Subject: one\r\n\r\nfirst" + ending + b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n")
    reply = s.send_raw(smuggled)
    assert reply is not None and reply.code == 554 and reply.enhanced == "5.6.0"
    assert s.send("NOOP").code == 250, "the server keeps serving"
    s.quit()
    assert lab.messages("bob@example.net") == []


def test_bounces_survive_a_reject_policy() -> None:
    # A DSN comes from MAIL FROM:<> and MAILER-DAEMON@smtp.example.org: SPF checks the HELO name.
    with smtplab.start(scenario=smtplab.Scenario.security(policy="reject")) as lab:
        lab.send("alice@example.org", "nobody@example.net", "lost", "who?")
        [dsn] = lab.messages("alice@example.org")
        assert dsn.get_content_type() == "multipart/report"
        assert "spf=pass" in dsn["Authentication-Results"] and "dmarc=pass" in dsn["Authentication-Results"]


def test_a_messages_trace_holds_the_questions_the_mx_asked_about_it(secure_lab: smtplab.Lab) -> None:
    """The blocklist, SPF, DKIM and DMARC lookups are part of the message's story: in its trace, its
    ladder (as arrows from the MX to the DNS, and the verdict as a note) and its journey."""
    from smtplab.views import conversation, journey

    result = secure_lab.send("alice@example.org", "bob@example.net", "Lunch?", "Friday at noon?")
    events = secure_lab.trace.for_message(result.message_id)
    asked = [e.text for e in events if e.protocol == "dns" and e.kind == "query"]
    assert asked == ["example.net. MX? over udp",  # the relay at example.org finds the MX
                     "10.1.0.127.bl.lab. A? over udp",  # the MX: is the relay blocklisted? (at RCPT)
                     "10.1.0.127.in-addr.arpa. PTR? over udp",  # who is the client? (for Received: iprev)
                     "smtp.example.org. A? over udp",  # and does that name lead back to its address?
                     "example.org. TXT? over udp",  # SPF for the MAIL FROM domain
                     "lab._domainkey.example.org. TXT? over udp",  # the key of the DKIM signature
                     "_dmarc.example.org. TXT? over udp"]  # the From domain's DMARC policy
    mx_address = secure_lab.host("mx1.example.net").address
    assert all(e.client.startswith(mx_address + ":") and e.peer == "mx1.example.net"
               for e in events if e.protocol == "dns" and e.kind == "query" and "MX?" not in e.text)
    _, steps = conversation.steps(events, secure_lab)
    assert any(s.kind == "note" and s.source == "mx1.example.net" and "spf=pass" in " ".join(s.lines)
               for s in steps)
    assert any(s.lines == ("NXDOMAIN", "not on the blocklist") and s.tone == "dns" for s in steps)
    legs = journey.legs(events, secure_lab)
    blocklist = [leg for leg in legs if leg.protocol == "dns" and leg.source == "mx1.example.net"][0]
    assert blocklist.ok and "not on the blocklist" in blocklist.detail


def test_a_refused_message_keeps_its_trace(secure_lab: smtplab.Lab) -> None:
    policy = secure_lab.scenario.provider_of("example.org").security["dmarc"].split("p=")[1]
    forge(secure_lab)
    events = secure_lab.trace.for_message("<forged@evil.example>")
    dot = next(i for i, e in enumerate(events) if isinstance(e.payload, SmtpDataEnd))
    final = next(e for e in events[dot:] if e.protocol == "smtp" and e.direction == "S")  # the reply to the dot
    assert final.text.startswith("550 5.7.1" if policy == "reject" else "250 ")
    assert [e.text for e in events if e.protocol == "dns" and e.kind == "query"][-1] == "_dmarc.example.org. TXT? over udp"
