"""Unit tests of the lab's own IMAP backend (smtplab.net.imapd), module by module, without a server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pymap.mime import MessageContent
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.specials.flag import Flag, Seen, Wildcard

from smtplab.errors import LibraryMismatch
from smtplab.net.imapd import check_mailbox_name, pymap_patch
from smtplab.net.imapd.envelope import Envelope, parse_addresses
from smtplab.net.imapd.flags import MaildirFlags
from smtplab.net.imapd.layout import InvalidMailboxName, MaildirLayout
from smtplab.net.imapd.maildir import Maildir
from smtplab.net.imapd.message import body_lines, parse_content
from smtplab.net.imapd.protocol import Limits, LoginThrottle


@pytest.mark.parametrize(("value", "expected"), [
    (b"Bob <bob@example.net>", [(b"Bob", None, b"bob", b"example.net")]),
    (b'"Smith, Bob" <bob@example.net>', [(b"Smith, Bob", None, b"bob", b"example.net")]),
    (b"bob@example.net (Bob)", [(None, None, b"bob", b"example.net")]),
    (b"<@relay.example:bob@example.net>", [(None, b"@relay.example", b"bob", b"example.net")]),
    (b"=?utf-8?q?Jos=C3=A9?= <jose@example.es>", [(b"=?utf-8?q?Jos=C3=A9?=", None, b"jose", b"example.es")]),
    (b"undisclosed-recipients:;", [(None, None, b"undisclosed-recipients", None), (None, None, None, None)]),
    (b"A: a@x.org;, b@y.org", [(None, None, b"A", None), (None, None, b"a", b"x.org"), (None, None, None, None),
                               (None, None, b"b", b"y.org")]),
    (b"postmaster", [(None, None, b"postmaster", b"")]),  # no domain: "", since NIL would mean a group
    (b"", []),
])
def test_addresses_parse_as_rfc_3501_wants_them(value: bytes, expected: list[tuple[bytes | None, ...]]) -> None:
    assert parse_addresses(value) == expected


def test_envelope_keeps_fields_as_sent_and_falls_back_to_from() -> None:
    raw = (b"Date: Mon, 1 Jan 2024 10:00:00 +0100\r\nFrom: A <a@x.org>\r\nSender: \r\n"
           b"Subject: folded\r\n  subject\r\n\r\nbody\r\n")
    envelope = bytes(Envelope(MessageContent.parse(raw).header))
    assert envelope == (b'("Mon, 1 Jan 2024 10:00:00 +0100" "folded  subject" (("A" NIL "a" "x.org")) '
                        b'(("A" NIL "a" "x.org")) (("A" NIL "a" "x.org")) NIL NIL NIL NIL NIL)')


def test_multipart_parts_end_before_the_boundarys_line_end() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\none\r\n--x\r\n\r\ntwo\r\n\r\n--x--\r\n"
    content = parse_content(raw)
    assert [bytes(part.body) for part in content.body.nested] == [b"one", b"two\r\n"]
    assert [body_lines(part.body) for part in content.body.nested] == [1, 1]
    assert bytes(content) == raw


@pytest.mark.parametrize(("raw", "text"), [(b"INBOX", "INBOX"), (b"&AMk-t&AOk-", "Été"), (b"a&-b", "a&b"),
                                           (b"&Jjo-!", "☺!"), (b"plain", "plain")])
def test_mailbox_names_decode_from_modified_utf7(raw: bytes, text: str) -> None:
    assert pymap_patch.decode_mailbox_name(raw) == text


@pytest.mark.parametrize("raw", [b"&", b"&AGE", b"a&b", b"&ZZZ-", b"&A-", b"&!!-"])
def test_malformed_mailbox_names_are_parse_errors(raw: bytes) -> None:
    with pytest.raises(NotParseable):
        pymap_patch.decode_mailbox_name(raw)


def test_the_pymap_patch_refuses_another_pymap() -> None:
    from pymap.parsing import modutf7

    with pytest.raises(pymap_patch.PymapMismatch, match="needs pymap 0.36.7, found 0.37.0"):
        pymap_patch.check("0.37.0", modutf7.modutf7_decode, modutf7.modutf7_decode)
    with pytest.raises(pymap_patch.PymapMismatch, match="not pymap 0.36.7's own"):
        pymap_patch.check("0.36.7", pymap_patch.decode_mailbox_name, modutf7.modutf7_decode)
    assert issubclass(pymap_patch.PymapMismatch, LibraryMismatch)
    pymap_patch.check("0.36.7", modutf7.modutf7_decode, modutf7.modutf7_decode)  # the real one passes


def test_the_pymap_patch_is_applied_on_first_use_not_at_import() -> None:
    import subprocess
    import sys

    code = ("import smtplab, smtplab.net.imap, smtplab.net.imapd\n"
            "from pymap.parsing import modutf7\nfrom pymap.parsing.specials import mailbox\n"
            "assert mailbox.modutf7_decode is modutf7.modutf7_decode, 'patched at import'\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))


@pytest.mark.parametrize("name", [".", "..", "a.b", "", "a//b", "/a", "a/", "x\x00y", "x\ny", "é" * 150])
def test_names_that_are_not_folder_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidMailboxName):
        check_mailbox_name(name, "/")


def test_layout_renames_with_subfolders_and_never_over_an_existing_one(tmp_path: Path) -> None:
    root = tmp_path / "bob"
    Maildir(str(root), create=True)
    layout = MaildirLayout(str(root), Maildir)
    for name in ("A", "A/B", "C"):
        layout.add_folder(name, "/")
    assert oct((root / ".A" / "maildirfolder").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        layout.add_folder("A", "/")
    with pytest.raises(FileExistsError):
        layout.rename_folder("A", "C", "/")  # os.rename would have replaced the empty .C
    with pytest.raises(OSError):
        layout.rename_folder("A", "A/B/D", "/")
    layout.rename_folder("A", "D", "/")
    assert layout.list_folders("/") == ["INBOX", "C", "D", "D/B"]


def test_keywords_get_letters_and_are_written_down(tmp_path: Path) -> None:
    flags = MaildirFlags.file_read(str(tmp_path))
    assert Wildcard in flags.permanent_flags
    flags.add_keywords([Flag(b"$Label1"), Flag(b"$Junk"), Seen, Flag(b"\\Recent")])
    flags.file_write()
    again = MaildirFlags.file_read(str(tmp_path))
    assert again.keywords == {Flag(b"$Label1"), Flag(b"$Junk")}
    assert sorted(again.to_maildir([Flag(b"$Label1"), Flag(b"$Junk"), Seen])) == ["S", "a", "b"]
    again.add_keywords(Flag(b"$K%d" % i) for i in range(40))
    assert len(again.keywords) == MaildirFlags.MAX_KEYWORDS and Wildcard not in again.permanent_flags


def test_claiming_new_messages_moves_each_once(tmp_path: Path) -> None:
    box = Maildir(str(tmp_path / "m"), create=True)
    for name in ("1.a", "2.b", "3.c"):
        (tmp_path / "m" / "new" / name).write_bytes(b"Subject: x\r\n\r\n")
    assert box.claim_new({"1.a", "3.c"}) == {"1.a", "3.c"}
    assert box.claim_new() == {"2.b"}
    assert box.claim_new() == set()
    assert sorted(os.listdir(tmp_path / "m" / "cur")) == ["1.a", "2.b", "3.c"]


def test_listing_orders_new_messages_by_arrival(tmp_path: Path) -> None:
    box = Maildir(str(tmp_path / "m"), create=True)
    for when, name in ((30, "zz"), (10, "yy"), (20, "xx")):
        path = tmp_path / "m" / "new" / name
        path.write_bytes(b"x")
        os.utime(path, (when, when))
    assert list(box.listing().keys_by_arrival()) == ["yy", "xx", "zz"]


def test_login_delays_double_per_address_and_forget() -> None:
    now = [0.0]
    throttle = LoginThrottle(Limits(login_delay=1.0, login_delay_max=4.0), now=lambda: now[0])
    assert [throttle.failed("127.0.0.1", 1) for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert throttle.failed("127.0.0.9", 3) == 4.0  # the connection's own count when it is higher
    throttle.succeeded("127.0.0.1")
    assert throttle.failed("127.0.0.1", 1) == 1.0
    now[0] += LoginThrottle.FORGET_AFTER + 1
    assert throttle.failed("127.0.0.9", 1) == 1.0
