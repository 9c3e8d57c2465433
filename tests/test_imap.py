"""pymap serves the lab's Maildirs to imaplib: LOGIN, LIST, SELECT, FETCH, SEARCH, STORE, NOOP."""

from __future__ import annotations

import imaplib
import os
import shutil
import tempfile

import pytest

import smtplab
import smtplab.net.imapd.mailbox


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
    client.starttls(ssl_context=lab.services.client_context)
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
    client.starttls(ssl_context=lab.services.client_context)
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


def _idle(imap: imaplib.IMAP4) -> bytes:
    """Start IDLE (RFC 2177) on imaplib's connection; return the tag to finish it with."""
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    assert imap.readline().startswith(b"+ ")
    return tag


def _done(imap: imaplib.IMAP4, tag: bytes) -> None:
    imap.send(b"DONE\r\n")
    while not (line := imap.readline()).startswith(tag):
        assert line, "the server closed the connection during IDLE"
    assert line.startswith(tag + b" OK")


def test_idle_announces_a_delivery_at_once(lab: smtplab.Lab, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Without a delivery the server would look again only after this long: the test ends long before.
    monkeypatch.setattr(smtplab.net.imapd.mailbox, "_IDLE_CHECK", 600.0)
    imap = lab.imap("bob@example.net")
    try:
        assert imap.select("INBOX")[1] == [b"0"]
        for number in (1, 2):
            tag = _idle(imap)
            result = lab.send("alice@example.org", "bob@example.net", f"Push {number}", "IDLE wakes up.", wait=False)
            assert imap.readline() == f"* {number} EXISTS\r\n".encode()  # socket timeout: 10 s
            _done(imap, tag)
            typ, data = imap.fetch(str(number), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            assert result.message_id.encode() in data[0][1]
    finally:
        imap.logout()


def test_idle_still_sees_a_message_put_in_the_maildir_by_hand(lab: smtplab.Lab, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(smtplab.net.imapd.mailbox, "_IDLE_CHECK", 0.05)
    maildir = lab.services.stores["example.net"].user_path("bob@example.net")
    imap = lab.imap("bob@example.net")
    try:
        imap.select("INBOX")
        tag = _idle(imap)
        (maildir / "tmp" / "by-hand").write_bytes(b"Subject: by hand\r\n\r\nhi\r\n")
        (maildir / "tmp" / "by-hand").rename(maildir / "new" / "by-hand")
        assert imap.readline() == b"* 1 EXISTS\r\n"
        _done(imap, tag)
    finally:
        imap.logout()


def test_two_sessions_see_each_others_flags_and_hand_deletions(lab: smtplab.Lab) -> None:
    for number in range(3):
        lab.send("alice@example.org", "bob@example.net", f"Note {number}", "flags")
    first, second = lab.imap("bob@example.net"), lab.imap("bob@example.net")
    try:
        assert first.select("INBOX")[1] == [b"3"] and second.select("INBOX")[1] == [b"3"]
        for number in range(3):  # UIDs follow arrival order (RFC 3501 2.3.1.1)
            subject = first.fetch(str(number + 1), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
            assert f"Note {number}".encode() in subject
        first.store("2", "+FLAGS", "\\Flagged \\Seen")
        second.noop()
        assert b"\\Flagged" in second.fetch("2", "(FLAGS)")[1][0]
        assert second.search(None, "UNSEEN")[1] == [b"1 3"]
        # A learner deletes a message file by hand: both sessions are told it is gone.
        maildir = lab.services.stores["example.net"].user_path("bob@example.net")
        victim = next(p for p in (maildir / "cur").iterdir() if "Note 1" in p.read_text(errors="replace"))
        victim.unlink()
        second.noop()
        assert second.untagged_responses.get("EXPUNGE") == [b"2"]
        assert second.search(None, "ALL")[1] == [b"1 2"]
        assert b"Note 2" in second.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
        first.noop()
        assert first.search(None, "ALL")[1] == [b"1 2"]
    finally:
        first.logout()
        second.logout()


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev,
                    reason="needs /dev/shm on another file system than the temporary directory (Linux)")
def test_a_lab_on_another_file_system_keeps_imap_state() -> None:
    """pymap wrote its state files (UID list, flags) in the system's temporary directory and renamed them
    into the mailbox: EXDEV when the lab lives on another file system, e.g. a home volume."""
    directory = tempfile.mkdtemp(prefix="smtplab-test-", dir="/dev/shm")
    try:
        with smtplab.start(directory=directory) as lab:
            lab.send("alice@example.org", "bob@example.net", "Elsewhere", "on tmpfs")
            imap = lab.imap("bob@example.net")
            try:
                assert imap.select("INBOX")[1] == [b"1"]
                assert imap.store("1", "+FLAGS", "\\Flagged")[0] == "OK"
                assert b"\\Flagged" in imap.fetch("1", "(FLAGS)")[1][0]
            finally:
                imap.logout()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_copy_keeps_the_whole_message_byte_for_byte(lab: smtplab.Lab) -> None:
    """COPY and UID COPY write the message itself (pymap 0.36.7 wrote an empty file: mutt's "save" lost mail)."""
    lab.send("alice@example.org", "bob@example.net", "Keep me", "Every byte of this body must be copied.\r\n" * 50)
    imap = lab.imap("bob@example.net")
    try:
        assert imap.create("Archive")[0] == "OK"
        assert imap.create("Saved")[0] == "OK"
        imap.select("INBOX")
        original = imap.fetch("1", "(BODY.PEEK[] FLAGS)")[1][0][1]
        imap.store("1", "+FLAGS", "(\\Flagged)")
        assert imap.copy("1", "Archive")[0] == "OK"
        assert imap.uid("COPY", "1", "Saved")[0] == "OK"
        for folder in ("Archive", "Saved"):
            assert imap.select(folder) == ("OK", [b"1"])
            assert imap.fetch("1", "(BODY.PEEK[])")[1][0][1] == original
            typ, data = imap.fetch("1", "(FLAGS RFC822.SIZE)")
            assert f"RFC822.SIZE {len(original)}".encode() in data[0]
            assert b"\\Flagged" in data[0]  # flags are copied too (RFC 3501 6.4.7)
        # Copy, then delete the original (mutt's "save to folder"): the copy is what is left.
        imap.select("INBOX")
        imap.store("1", "+FLAGS", "(\\Deleted)")
        imap.expunge()
    finally:
        imap.logout()
    assert [m["Subject"] for m in lab.messages("bob@example.net", "Archive")] == ["Keep me"]
    assert "Every byte of this body" in lab.messages("bob@example.net", "Archive")[0].get_content()
