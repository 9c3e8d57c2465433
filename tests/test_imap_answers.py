"""What the lab's IMAP answers, read by imaplib and imapclient: ENVELOPE, BODYSTRUCTURE, BINARY, SEARCH, keywords.

Each expectation is RFC 3501's (section named), and each failed on pymap 0.36.7's maildir backend.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator

import pytest
from conftest import IN_CI

import smtplab

try:
    import imapclient  # pip install imapclient==2.3.1: a test requirement
except ImportError:
    if IN_CI:
        raise
    pytest.skip("imapclient is not installed (pip install imapclient==2.3.1)", allow_module_level=True)

GROUPS = (b"From: Alice Example <alice@example.org>\r\n"
          b"Sender:\r\n"
          b"Reply-To: \r\n"
          b"To: undisclosed-recipients:;\r\n"
          b"Cc: Team: carol@example.net, \"Dan D.\" <dan@example.net>;, erin@example.net\r\n"
          b"Date: Tue, 16 Mar 2010 16:45:32 +0000 (GMT)\r\n"
          b"Subject: =?utf-8?q?caf=C3=A9?= plans\r\n"
          b"Message-ID: <groups@example.org>\r\n"
          b"\r\n"
          b"Let us meet.\r\n")

MULTIPART = (b"From: Bob <bob@example.net>\r\n"
             b"To: alice@example.org\r\n"
             b"Subject: parts\r\n"
             b"MIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
             b"\r\n"
             b"--b1\r\n"
             b"Content-Type: text/plain; charset=us-ascii\r\n"
             b"\r\n"
             b"first line\r\nsecond line\r\n"
             b"\r\n"
             b"--b1\r\n"
             b"Content-Type: application/octet-stream\r\n"
             b"Content-Transfer-Encoding: base64\r\n"
             b"\r\n"
             b"AAECAw==\r\n"
             b"--b1--\r\n")

PLAIN = [  # (From, To, Cc, Subject, body)
    ("Alice Example <alice@example.org>", "Bob <bob@example.net>", "", "lunch", "Pizza at noon?"),
    ("alice@example.org", "bob@example.net, Carol <carol@example.net>", "dan@example.net", "re: lunch",
     "Sounds good. Mention Alice here."),
    ("Carol <carol@example.net>", "bob@example.net (Bobby Tables)", "Alice Example <alice@example.org>", "minutes",
     "Notes."),
]


def _message(sender: str, to: str, cc: str, subject: str, body: str) -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\n" + (f"Cc: {cc}\r\n" if cc else "") + f"Subject: {subject}\r\n"
    return (head + "\r\n" + body + "\r\n").encode()


@pytest.fixture
def bob(lab: smtplab.Lab) -> Iterator[imaplib.IMAP4]:
    imap = lab.imap("bob@example.net")
    yield imap
    imap.logout()


def _fetch(imap: imaplib.IMAP4, items: str, seq: str = "1") -> bytes:
    typ, data = imap.fetch(seq, items)
    assert typ == "OK", data
    return b"".join(part if isinstance(part, bytes) else b"".join(part) for part in data)


def test_envelope_is_the_header_as_sent(bob: imaplib.IMAP4) -> None:
    """RFC 3501 7.4.2: Date and Subject as sent, NIL for an absent name, groups as start/end markers,
    Sender and Reply-To from From when empty (pymap dropped the connection on the empty Sender)."""
    bob.append("INBOX", None, None, GROUPS)
    bob.select("INBOX")
    envelope = _fetch(bob, "(ENVELOPE)")
    assert envelope == (
        b'1 (ENVELOPE ("Tue, 16 Mar 2010 16:45:32 +0000 (GMT)" "=?utf-8?q?caf=C3=A9?= plans" '
        b'(("Alice Example" NIL "alice" "example.org")) (("Alice Example" NIL "alice" "example.org")) '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL NIL "Team" NIL)(NIL NIL "carol" "example.net")("Dan D." NIL "dan" "example.net")(NIL NIL NIL NIL)'
        b'(NIL NIL "erin" "example.net")) NIL NIL "<groups@example.org>"))')


def test_envelope_through_imapclient(lab: smtplab.Lab) -> None:
    host = lab.imap_host("bob@example.net")
    client = imapclient.IMAPClient(host.address, port=host.ports["imap"], ssl=False, timeout=30)
    client.starttls(lab.services.client_context)
    client.login("bob@example.net", lab.users["bob@example.net"].password)
    try:
        client.append("INBOX", GROUPS)
        client.select_folder("INBOX")
        uid = client.search(["ALL"])[0]
        envelope = client.fetch([uid], ["ENVELOPE"])[uid][b"ENVELOPE"]
        assert envelope.date.year == 2010 and envelope.subject == b"=?utf-8?q?caf=C3=A9?= plans"
        assert [(a.name, a.mailbox, a.host) for a in envelope.sender] == [(b"Alice Example", b"alice", b"example.org")]
        assert [(a.name, a.mailbox, a.host) for a in envelope.cc] == [
            (None, b"Team", None), (None, b"carol", b"example.net"), (b"Dan D.", b"dan", b"example.net"),
            (None, None, None), (None, b"erin", b"example.net")]  # the group's start and end markers
        assert envelope.bcc is None and envelope.in_reply_to is None
    finally:
        client.logout()


def test_bodystructure_counts_body_octets_and_lines(bob: imaplib.IMAP4) -> None:
    """RFC 3501 7.4.2: body-fld-octets and body-fld-lines are the part's body, not its header, and the CRLF
    before a boundary belongs to the boundary (RFC 2046 5.1.1): BODY[n] has exactly that many octets."""
    bob.append("INBOX", None, None, MULTIPART)
    bob.select("INBOX")
    structure = _fetch(bob, "(BODYSTRUCTURE)")
    assert b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 25 2 ' in structure
    assert b'("application" "octet-stream" NIL NIL NIL "base64" 8 ' in structure
    assert _fetch(bob, "(BODY.PEEK[1])").endswith(b"{25}first line\r\nsecond line\r\n)")
    assert _fetch(bob, "(BODY.PEEK[2])").endswith(b"{8}AAECAw==)")


def test_bodystructure_through_imapclient(lab: smtplab.Lab) -> None:
    host = lab.imap_host("bob@example.net")
    client = imapclient.IMAPClient(host.address, port=host.ports["imap"], ssl=False, timeout=30)
    client.starttls(lab.services.client_context)
    client.login("bob@example.net", lab.users["bob@example.net"].password)
    try:
        client.append("INBOX", b"Subject: one line\r\n\r\nFoo\r\n")
        client.select_folder("INBOX")
        uid = client.search(["ALL"])[0]
        body = client.fetch([uid], ["BODYSTRUCTURE"])[uid][b"BODYSTRUCTURE"]
        assert (body[0], body[1], body[6], body[7]) == (b"text", b"plain", 5, 1)  # "Foo\r\n": 5 octets, 1 line
    finally:
        client.logout()


def test_binary_peek_is_answered_as_binary(bob: imaplib.IMAP4) -> None:
    """RFC 3516 4.2: the answer to BINARY.PEEK[2] is BINARY[2], decoded, and the message stays unseen."""
    bob.append("INBOX", None, None, MULTIPART)
    bob.select("INBOX")
    answer = _fetch(bob, "(BINARY.PEEK[2])")
    assert answer.startswith(b"1 (BINARY[2] ") and b"BINARY.PEEK" not in answer
    assert answer.endswith(b"\x00\x01\x02\x03)")
    assert b"\\Seen" not in _fetch(bob, "(FLAGS)")


def test_search_body_reads_the_body_only(bob: imaplib.IMAP4) -> None:
    """RFC 3501 6.4.4: BODY searches the body, TEXT the header and the body."""
    for message in PLAIN:
        bob.append("INBOX", None, None, _message(*message))
    bob.select("INBOX")
    assert bob.search(None, "BODY", "Alice")[1] == [b"2"]  # only message 2 says "Alice" in its body
    assert bob.search(None, "TEXT", "Alice")[1] == [b"1 2 3"]
    assert bob.search(None, "BODY", "lunch")[1] == [b""]  # a subject word is not in any body
    assert bob.search(None, "NOT", "BODY", "Alice")[1] == [b"1 3"]


def test_search_address_keys_find_every_match(bob: imaplib.IMAP4) -> None:
    """RFC 3501 6.4.4: FROM/TO/CC match a substring of the field, display names included, any case."""
    for message in PLAIN:
        bob.append("INBOX", None, None, _message(*message))
    bob.select("INBOX")
    assert bob.search(None, "FROM", "alice")[1] == [b"1 2"]
    assert bob.search(None, "FROM", '"ALICE EXAMPLE"')[1] == [b"1"]
    assert bob.search(None, "TO", "carol")[1] == [b"2"]
    assert bob.search(None, "TO", "bob@example.net")[1] == [b"1 2 3"]
    assert bob.search(None, "CC", "Alice")[1] == [b"3"]
    assert bob.search(None, "TO", "bobby")[1] == [b"3"]  # the field as written, comment included
    assert bob.search(None, "OR", "CC", "dan", "FROM", "Carol")[1] == [b"2 3"]
    assert bob.search(None, "SUBJECT", "LUNCH")[1] == [b"1 2"]
    assert bob.search(None, "HEADER", "Cc", '""')[1] == [b"2 3"]


def test_search_through_imapclient(lab: smtplab.Lab) -> None:
    host = lab.imap_host("bob@example.net")
    client = imapclient.IMAPClient(host.address, port=host.ports["imap"], ssl=False, timeout=30)
    client.starttls(lab.services.client_context)
    client.login("bob@example.net", lab.users["bob@example.net"].password)
    try:
        for message in PLAIN:
            client.append("INBOX", _message(*message))
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        assert client.search(["FROM", "alice"]) == uids[:2]
        assert client.search(["BODY", "Alice"]) == uids[1:2]
    finally:
        client.logout()


def test_keywords_are_kept_and_listed(lab: smtplab.Lab, bob: imaplib.IMAP4) -> None:
    """RFC 3501 2.3.2 / 7.1: any keyword a client sets sticks, is listed in FLAGS, and PERMANENTFLAGS has \\*."""
    bob.append("INBOX", None, None, _message(*PLAIN[0]))
    bob.select("INBOX")
    assert b"\\*" in bob.untagged_responses["PERMANENTFLAGS"][-1]
    assert bob.store("1", "+FLAGS", "($Label1 $Junk)")[0] == "OK"
    assert b"$Label1" in bob.untagged_responses["FLAGS"][-1]  # the new flags announced (RFC 3501 7.2.6)
    assert set(re.search(rb"FLAGS \(([^)]*)\)", _fetch(bob, "(FLAGS)"))[1].split()) == {b"$Junk", b"$Label1", b"\\Recent"}
    other = lab.imap("bob@example.net")  # another session, another SELECT: the keywords are in FLAGS
    try:
        other.select("INBOX")
        flags = other.untagged_responses["FLAGS"][-1]
        assert b"$Label1" in flags and b"$Junk" in flags and b"\\*" not in flags
        assert b"$Label1" in _fetch(other, "(FLAGS)")
        assert other.search(None, "KEYWORD", "$Junk")[1] == [b"1"]
    finally:
        other.logout()
    # COPY carries the keywords into a folder that never heard of them.
    assert bob.copy("1", "Archive")[0] == "NO"  # no such folder: [TRYCREATE]
    bob.create("Archive")
    assert bob.copy("1", "Archive")[0] == "OK"
    bob.select("Archive")
    assert b"$Label1" in _fetch(bob, "(FLAGS)") and b"$Junk" in _fetch(bob, "(FLAGS)")


def test_copy_answers_copyuid_and_keeps_the_bytes(lab: smtplab.Lab, bob: imaplib.IMAP4) -> None:
    """UIDPLUS (RFC 4315 3): COPY answers [COPYUID]; the copy is the same bytes (FETCH BODY[])."""
    bob.append("INBOX", None, None, MULTIPART)
    bob.select("INBOX")
    original = _fetch(bob, "(BODY.PEEK[])")
    typ, data = bob.copy("1", "Junk")
    assert typ == "OK" and re.match(rb"\[COPYUID \d+ 1 1\]", data[0])
    assert lab.messages("bob@example.net", "Junk")[0]["Subject"] == "parts"
    bob.select("Junk")
    assert _fetch(bob, "(BODY.PEEK[])") == original
