"""pymap serves the lab's Maildirs to imaplib: LOGIN, LIST, SELECT, FETCH, SEARCH, STORE, NOOP."""

from __future__ import annotations

import imaplib

import pytest

import smtplab


def test_bob_reads_alices_mail(lab: smtplab.Lab) -> None:
    result = lab.send("alice@example.org", "bob@example.net", "Over IMAP", "Read me, Bob.")
    imap = lab.imap("bob@example.net")
    try:
        typ, folders = imap.list()
        assert typ == "OK" and any(b"INBOX" in f for f in folders)
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"1"])
        typ, data = imap.search(None, "UNSEEN")
        assert data == [b"1"]
        typ, data = imap.search(None, "SUBJECT", '"Over IMAP"')
        assert data == [b"1"]
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        raw = data[0][1]
        assert b"Read me, Bob." in raw and result.message_id.encode() in raw
        imap.store("1", "+FLAGS", "\\Seen")
        typ, data = imap.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0]
        assert imap.search(None, "UNSEEN")[1] == [b""]
    finally:
        imap.logout()


def test_new_mail_shows_up_on_noop(lab: smtplab.Lab) -> None:
    imap = lab.imap("bob@example.net")
    try:
        assert imap.select("INBOX")[1] == [b"0"]
        lab.send("alice@example.org", "bob@example.net", "Live", "while you watch")
        typ, _ = imap.noop()
        assert typ == "OK"
        assert imap.untagged_responses.get("EXISTS", [])[-1:] == [b"1"]
        assert imap.search(None, "ALL")[1] == [b"1"]
    finally:
        imap.logout()


def test_wrong_password_is_refused_and_server_stays_up(lab: smtplab.Lab) -> None:
    host = lab.host("imap.example.net")
    client = imaplib.IMAP4(host.address, host.ports["imap"], timeout=10)
    client.starttls(ssl_context=lab._client_context)
    with pytest.raises(imaplib.IMAP4.error):
        client.login("bob@example.net", "wrong")
    client.logout()
    lab.imap("bob@example.net").logout()


def test_imap_lines_are_traced_both_ways(lab: smtplab.Lab) -> None:
    imap = lab.imap("bob@example.net")
    imap.select("INBOX")
    imap.logout()
    events = lab.trace.filter(protocol="imap")
    directions = {e.direction for e in events if e.kind == "line"}
    assert directions == {"C", "S"}
    texts = [e.text for e in events]
    assert any(t.startswith("* OK") and "imap.example.net" in t for t in texts), "greeting names the host"
    assert any("SELECT INBOX" in t for t in texts)
    assert any(e.kind == "tls" for e in events)
    after_tls = [e for e in events if e.direction == "C" and " LOGIN " in e.text]
    assert after_tls and all(e.tls for e in after_tls), "LOGIN happened inside TLS"


def test_alice_cannot_read_bobs_mailbox(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "bob@example.net", "Private", "for bob only")
    host = lab.host("imap.example.org")
    client = imaplib.IMAP4(host.address, host.ports["imap"], timeout=10)
    client.starttls(ssl_context=lab._client_context)
    with pytest.raises(imaplib.IMAP4.error):
        client.login("bob@example.net", lab.users["bob@example.net"].password)  # wrong provider
    client.logout()


def test_no_password_before_starttls(lab: smtplab.Lab) -> None:
    host = lab.host("imap.example.net")
    client = imaplib.IMAP4(host.address, host.ports["imap"], timeout=10)
    try:
        assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="disabled"):
            client.login("bob@example.net", lab.users["bob@example.net"].password)
    finally:
        client.logout()


def test_fetched_messages_use_crlf(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "bob@example.net", "Lines", "one\ntwo\n")
    imap = lab.imap("bob@example.net")
    try:
        imap.select("INBOX")
        raw = imap.fetch("1", "(BODY.PEEK[])")[1][0][1]
        assert raw.endswith(b"one\r\ntwo\r\n")
        assert raw.count(b"\n") == raw.count(b"\r\n"), "no bare LF inside IMAP literals (RFC 3501 2.2)"
    finally:
        imap.logout()
