"""A shared classroom host: what a hostile classmate tries must neither wipe, read nor stop a lab."""

from __future__ import annotations

import os

import pytest

import smtplab
from smtplab.files import exposed


def _tree(path: str) -> list[str]:
    """Every file and folder under `path`, relative to it (a snapshot to compare)."""
    found = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(root, name), path))
    return sorted(found)


@pytest.mark.parametrize("name", [".", "/", "..", "", "./", "../x", "a//b", ".a", "a.", "/a", "a/../../x", "a\x01b"])
def test_imap_mailbox_names_stay_inside_the_users_maildir(lab: smtplab.Lab, name: str) -> None:
    """DELETE/SELECT/CREATE/RENAME of a path-like name is refused by a tagged reply, the disk untouched.

    pymap 0.36.7 mapped "." to the provider's directory: `DELETE "."` wiped every user's mail.
    """
    lab.send("alice@example.org", "bob@example.net", "keep me", "Bob's mail must survive.")
    provider_dir = str(lab.directory / "mail" / "example.net")
    before = _tree(provider_dir)
    imap = lab.imap("bob@example.net")
    try:
        assert imap.create("Archive")[0] == "OK"
        before = _tree(provider_dir)
        quoted = '"' + name.replace("\\", "\\\\") + '"'
        for command, args in (("DELETE", (quoted,)), ("SELECT", (quoted,)), ("CREATE", (quoted,)),
                              ("RENAME", ('"Archive"', quoted)), ("STATUS", (quoted, "(MESSAGES)"))):
            typ, data = imap._simple_command(command, *args)  # the raw command, as a client would send it
            assert typ in ("NO", "BAD"), (command, name, typ, data)
            assert _tree(provider_dir) == before, (command, name)
        # The session is still alive and the user's own mail is where it was.
        assert imap.select("INBOX") == ("OK", [b"1"])
    finally:
        imap.logout()
    assert len(lab.messages("bob@example.net")) == 1
    assert imaplib_login_works(lab)


def imaplib_login_works(lab: smtplab.Lab) -> bool:
    """The provider's password files survived: bob can still log in."""
    imap = lab.imap("bob@example.net")
    imap.logout()
    return True


def test_ordinary_folder_names_still_work(lab: smtplab.Lab) -> None:
    imap = lab.imap("bob@example.net")
    try:
        assert imap.create("Projects")[0] == "OK"
        assert imap.create("Projects/2026")[0] == "OK"
        assert imap.create("&AMk-t&AOk-")[0] == "OK"  # "Été" in modified UTF-7
        assert imap.select("Projects/2026")[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
        assert imap.delete("Projects/2026")[0] == "OK"
        assert imap.delete("Projects")[0] == "OK"
    finally:
        imap.logout()


# --- item 5: nothing in the lab directory is readable by another user ------------------------------------

def _day_of_mail(lab: smtplab.Lab) -> None:
    """Submission, relay, a deferral, a bounce and IMAP reading: every kind of file the lab writes."""
    lab.send("alice@example.org", "bob@example.net", "hello", "Delivered through mx1.")
    lab.send("alice@example.org", "nobody@example.net", "lost", "Bounces: no such user.")
    lab.send("bob@example.net", "alice@example.org", "re: hello", "And back.")
    imap = lab.imap("bob@example.net")
    try:
        imap.select("INBOX")
        imap.fetch("1", "(RFC822)")
        imap.store("1", "+FLAGS", "\\Seen")
        imap.copy("1", "Junk")  # a folder the lab itself makes (where quarantined mail goes)
    finally:
        imap.logout()
    lab.host("mx1").down()
    lab.host("mx2").down()
    lab.send("alice@example.org", "bob@example.net", "later", "Waits in the queue.")  # spooled, deferred


def test_lab_directory_is_private_after_a_day_of_mail(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Under the usual umask 022, every folder the lab makes is 0700 and every file 0600 (passwords in
    lab.json, TLS and DKIM private keys, queue copies, Maildirs, IMAP state), parents of --dir included."""
    old = os.umask(0o022)
    try:
        top = tmp_path / "course"
        with smtplab.start(directory=top / "lab") as lab:
            _day_of_mail(lab)
            assert list((top / "lab" / "queue").iterdir()), "the deferred message should be spooled"
            assert exposed(top) == []
        assert exposed(top) == []
        with smtplab.start(directory=top / "lab") as lab:  # a restart rewrites lab.json, keeps it private
            assert lab.users
        assert exposed(top) == []
    finally:
        os.umask(old)


@pytest.mark.xfail(strict=True, reason="pymap 0.36.7's maildir layout creates `maildirfolder` with the default "
                                       "mode on IMAP CREATE; passes once the lab owns that backend (issue 15)")
def test_folders_created_over_imap_are_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    try:
        with smtplab.start(directory=tmp_path / "lab") as lab:
            imap = lab.imap("bob@example.net")
            try:
                assert imap.create("Archive")[0] == "OK"
            finally:
                imap.logout()
        assert exposed(tmp_path / "lab") == []
    finally:
        os.umask(old)
