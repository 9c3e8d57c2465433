"""IMAP sessions that pymap 0.36.7 ended with ``* BYE [SERVERBUG]``, hung or answered wrongly; \\Recent; IDLE writes."""

from __future__ import annotations

import imaplib
import re
import threading
from collections.abc import Iterator

import pytest

import smtplab


@pytest.fixture
def bob(lab: smtplab.Lab) -> Iterator[imaplib.IMAP4]:
    imap = lab.imap("bob@example.net")
    yield imap
    imap.logout()


def _raw(imap: imaplib.IMAP4, *args: str) -> tuple[str, list[bytes]]:
    """Send a command as a client would write it (imaplib's own state checks bypassed)."""
    imap.untagged_responses.clear()
    try:
        return imap._simple_command(*args)  # type: ignore[no-any-return]
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:  # imaplib raises on BAD
        return "BAD", [str(exc).encode()]


def _alive(imap: imaplib.IMAP4) -> bool:
    return imap.noop()[0] == "OK"


def test_create_of_an_existing_folder_is_no_alreadyexists(bob: imaplib.IMAP4) -> None:
    """RFC 3501 6.3.3 and RFC 5530 3: a tagged NO [ALREADYEXISTS], the session goes on."""
    assert bob.create("Projects")[0] == "OK"
    for name in ("Projects", "Junk", "Sent"):
        typ, data = bob.create(name)
        assert (typ, data[0][:15]) == ("NO", b"[ALREADYEXISTS]"), (name, data)
    assert _alive(bob)


def test_rename_onto_an_existing_folder_or_into_itself_is_refused(lab: smtplab.Lab, bob: imaplib.IMAP4) -> None:
    bob.create("A")
    bob.create("A/inner")
    bob.create("B")
    lab_root = lab.services.stores["example.net"].user_path("bob@example.net")
    before = sorted(p.name for p in lab_root.iterdir())
    assert bob.rename("A", "B")[0] == "NO" and bob.untagged_responses.get("ALREADYEXISTS") is not None
    assert bob.rename("A", "A/deeper")[0] == "NO"
    assert bob.rename("Nothing", "C")[0] == "NO"
    assert sorted(p.name for p in lab_root.iterdir()) == before
    assert bob.rename("A", "C")[0] == "OK"  # and a real rename takes the sub-folders along (RFC 3501 6.3.5)
    names = [line.rsplit(b'"/" ', 1)[1] for line in bob.list()[1]]
    assert b"C" in names and b"C/inner" in names and b"A" not in names
    assert _alive(bob)


@pytest.mark.parametrize("name", ['"&AGE"', '"&"', '"a&b"', '"&ZZZ"', '"&Jjo"', '"&AAA-"', '"*"', '"%"', '"new"', '"cur"',
                                  '"INBOX/x"', '"Junk/"', "{3}\r\nabc"])
def test_select_of_unusual_names_is_answered(lab: smtplab.Lab, bob: imaplib.IMAP4, name: str) -> None:
    """A name that is malformed (RFC 3501 5.1.3) is a BAD, one that does not exist a NO; the session and the
    lab go on. pymap looped forever on an unclosed "&" (the whole lab froze) and ended the session on bad base64."""
    bob.state = "AUTH"
    typ, _ = _raw(bob, "SELECT", name)
    assert typ in ("NO", "BAD")
    assert _alive(bob)
    other = lab.imap("bob@example.net")  # the lab's loop is free: a new session is served
    assert other.select("INBOX")[0] == "OK"
    other.logout()


def test_move_into_the_selected_folder_gives_a_new_uid(bob: imaplib.IMAP4) -> None:
    """RFC 6851: MOVE into the selected mailbox completes (pymap took one lock twice and hung)."""
    bob.append("INBOX", None, None, b"Subject: stay\r\n\r\nhere\r\n")
    bob.select("INBOX")
    before = bob.fetch("1", "(BODY.PEEK[])")[1][0][1]
    bob.state = "SELECTED"
    typ, data = _raw(bob, "MOVE", "1", "INBOX")
    assert typ == "OK"
    assert re.fullmatch(rb"\d+ 1 2", bob.untagged_responses["COPYUID"][0])  # UIDPLUS (RFC 4315 3)
    assert bob.untagged_responses.get("EXPUNGE") == [b"1"]
    assert bob.uid("SEARCH", "ALL")[1] == [b"2"]
    data = bob.fetch("1", "(BODY.PEEK[])")[1]
    assert next(part for part in data if isinstance(part, tuple))[1] == before


def test_delete_of_the_selected_folder_leaves_it_and_goes_on(bob: imaplib.IMAP4) -> None:
    """No BYE: the session leaves the folder ([CLOSED]) and stays authenticated."""
    bob.create("Old")
    bob.select("Old")
    typ, _ = bob.delete("Old")
    assert typ == "OK" and "CLOSED" in bob.untagged_responses
    bob.state = "SELECTED"
    with pytest.raises(imaplib.IMAP4.error, match="select a mailbox first"):
        bob.fetch("1", "(FLAGS)")
    assert _alive(bob) and bob.select("INBOX")[0] == "OK"


def test_close_after_examine_is_ok_and_expunges_nothing(bob: imaplib.IMAP4) -> None:
    """RFC 3501 6.4.2: CLOSE of a mailbox selected read-only just leaves it."""
    bob.append("INBOX", r"(\Deleted)", None, b"Subject: keep\r\n\r\nkept\r\n")
    bob.select("INBOX", readonly=True)
    assert bob.close()[0] == "OK"
    assert bob.select("INBOX")[1] == [b"1"]
    assert bob.close()[0] == "OK"  # read-write: now it expunges
    assert bob.select("INBOX")[1] == [b"0"]


def test_namespace_enable_unselect(bob: imaplib.IMAP4) -> None:
    capabilities = bob.capability()[1][0].split()
    for name in ("NAMESPACE", "ENABLE", "UNSELECT", "SPECIAL-USE", "UIDPLUS", "IDLE", "MOVE"):
        assert name.encode() in capabilities, name
    assert bob.namespace() == ("OK", [b'(("" "/")) NIL NIL'])  # RFC 2342 5
    bob.state = "AUTH"
    assert _raw(bob, "ENABLE", "CONDSTORE")[0] == "OK" and bob.untagged_responses.get("ENABLED") == [b""]
    bob.append("INBOX", r"(\Deleted)", None, b"Subject: x\r\n\r\ny\r\n")
    bob.select("INBOX")
    assert bob.unselect()[0] == "OK"  # RFC 3691: no expunge
    assert bob.select("INBOX")[1] == [b"1"]


def test_special_use_folders_exist_for_every_user(lab: smtplab.Lab) -> None:
    """RFC 6154: Sent, Drafts, Trash and Junk, listed with their attribute; Junk is the quarantine's."""
    for address in lab.users:
        imap = lab.imap(address)
        try:
            listed = {line.rsplit(b'"/" ', 1)[1]: line for line in imap.list()[1]}
            for name, use in (("Sent", b"\\Sent"), ("Drafts", b"\\Drafts"), ("Trash", b"\\Trash"), ("Junk", b"\\Junk")):
                assert use in listed[name.encode()], (address, name)
        finally:
            imap.logout()
    assert lab.messages("bob@example.net", "Junk") == []


def test_recent_belongs_to_the_first_session_that_selects(lab: smtplab.Lab) -> None:
    """RFC 3501 2.3.2, the same on every run: EXAMINE shows \\Recent but claims nothing; the first SELECT
    gets it on every new message; a later SELECT, none; a message arriving while a session has the folder
    selected is \\Recent in that session only."""
    for number in range(3):
        lab.send("alice@example.org", "bob@example.net", f"R{number}", "recent?")
    watcher, first, second = (lab.imap("bob@example.net") for _ in range(3))
    try:
        watcher.select("INBOX", readonly=True)
        assert watcher.untagged_responses["RECENT"] == [b"3"]
        assert watcher.search(None, "RECENT")[1] == [b"1 2 3"]
        first.select("INBOX")
        assert first.untagged_responses["RECENT"] == [b"3"]
        assert first.search(None, "RECENT")[1] == [b"1 2 3"]
        assert all(b"\\Recent" in line for line in first.fetch("1:3", "(FLAGS)")[1])
        second.select("INBOX")
        assert second.untagged_responses["RECENT"] == [b"0"]
        assert second.search(None, "RECENT")[1] == [b""]
        lab.send("alice@example.org", "bob@example.net", "R3", "while selected")
        second.noop()  # told first: this one gets it
        first.noop()
        assert second.search(None, "RECENT")[1] == [b"4"]
        assert first.search(None, "RECENT")[1] == [b"1 2 3"]
        first.select("INBOX")  # a new SELECT: nothing new since
        assert first.untagged_responses["RECENT"] == [b"0"]
    finally:
        for imap in (watcher, first, second):
            imap.logout()


def test_idle_updates_arrive_as_whole_lines(lab: smtplab.Lab) -> None:
    """Every TLS record of an IDLE update ends at a line end (pymap sent "* 1 FETCH (FLAGS ())" in five
    records; imapclient took a fragment for the whole line)."""
    lab.send("alice@example.org", "bob@example.net", "Flag me", "and watch")
    idler, other = lab.imap("bob@example.net"), lab.imap("bob@example.net")
    try:
        idler.select("INBOX")
        other.select("INBOX")
        sock = idler.sock
        idler.send(b"t1 IDLE\r\n")
        assert idler.readline().startswith(b"+ ")
        records: list[bytes] = []
        done = threading.Event()

        def read() -> None:
            buffered = b""
            while b"\\Seen" not in buffered or b"\\Flagged" not in buffered:
                chunk = sock.recv(65536)  # one TLS record's data at most
                if not chunk:
                    break
                records.append(chunk)
                buffered += chunk
            done.set()

        reader = threading.Thread(target=read)
        reader.start()
        other.store("1", "+FLAGS", "(\\Seen)")
        other.store("1", "+FLAGS", "(\\Flagged)")
        reader.join(30)
        assert done.is_set(), records
        assert records and all(record.endswith(b"\r\n") for record in records), records
        sock.settimeout(30)
        idler.send(b"DONE\r\n")
        while not (line := idler.readline()).startswith(b"t1 "):
            assert line
        assert line.startswith(b"t1 OK")
    finally:
        other.logout()
        idler.logout()
