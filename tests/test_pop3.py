"""The lab's POP3 server (RFC 1939, CAPA RFC 2449, STLS RFC 2595, pop3s RFC 8314), driven with poplib and
raw sockets: download and delete, the UPDATE state, the maildrop lock, and bad input answered with -ERR."""

from __future__ import annotations

import asyncio
import imaplib
import os
import poplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import smtplab
from smtplab.net.pop3 import MAX_LINE, Pop3Service, uidl_of
from smtplab.trace.ring import Trace

BOB = "bob@example.net"


@pytest.fixture
def context(lab: smtplab.Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=lab.ca_file)


def pop(lab: smtplab.Lab, context: ssl.SSLContext, address: str = BOB) -> poplib.POP3:
    """Log in as `address` over STLS, as a careful mail client does."""
    host = lab.imap_host(address)
    client = poplib.POP3(host.address, host.ports["pop3"], timeout=10)
    client.stls(context)
    client.user(address)
    client.pass_(lab.users[address].password)
    return client


def maildir(lab: smtplab.Lab, address: str = BOB) -> Path:
    return lab.directory / "mail" / address.rpartition("@")[2] / address.partition("@")[0]


def files(lab: smtplab.Lab, address: str = BOB) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(maildir(lab, address) / sub)) for sub in ("new", "cur")}


def deliver(lab: smtplab.Lab, *subjects: str, body: str = "Hello Bob!\n") -> None:
    for subject in subjects:
        lab.send("alice@example.org", BOB, subject, body)


class Raw:
    """A POP3 conversation over a plain socket, line by line (STLS upgrades it)."""

    def __init__(self, lab: smtplab.Lab, port_name: str = "pop3") -> None:
        host = lab.imap_host(BOB)
        self.lab = lab
        self.sock: socket.socket = socket.create_connection((host.address, host.ports[port_name]), timeout=10)
        self.file = self.sock.makefile("rb")

    def line(self) -> str:
        data = self.file.readline()
        assert data.endswith(b"\r\n"), f"not a CRLF line: {data!r}"
        return data[:-2].decode()

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def ask(self, command: str) -> str:
        self.send(command + "\r\n")
        return self.line()

    def multiline(self) -> list[str]:
        lines = []
        while (line := self.line()) != ".":
            lines.append(line)
        return lines

    def stls(self, context: ssl.SSLContext) -> None:
        assert self.ask("STLS").startswith("+OK")
        self.sock = context.wrap_socket(self.sock, server_hostname="imap.example.net")
        self.file = self.sock.makefile("rb")

    def login(self, context: ssl.SSLContext) -> None:
        self.stls(context)
        assert self.ask(f"USER {BOB}").startswith("+OK")
        assert self.ask(f"PASS {self.lab.users[BOB].password}").startswith("+OK")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw(lab: smtplab.Lab) -> Iterator[Raw]:
    conn = Raw(lab)
    assert conn.line().startswith("+OK imap.example.net POP3 server ready")
    yield conn
    conn.close()


def test_capa_offers_user_only_after_stls(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    host = lab.imap_host(BOB)
    client = poplib.POP3(host.address, host.ports["pop3"], timeout=10)
    before = client.capa()
    assert {"STLS", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"} <= set(before)
    assert "USER" not in before, "RFC 2595 section 4: no password in clear, so USER is not offered yet"
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Plaintext authentication disallowed"):
        client.user(BOB)
    client.stls(context)
    after = client.capa()
    assert "USER" in after and "STLS" not in after, "after STLS the capabilities change (RFC 2595 section 4)"
    client.user(BOB)
    assert client.pass_(lab.users[BOB].password).startswith(b"+OK maildrop locked and ready: 0 message(s)")
    assert client.quit().startswith(b"+OK")


def test_pop3s_is_tls_from_the_first_byte(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "over pop3s")
    host = lab.imap_host(BOB)
    client = poplib.POP3_SSL(host.address, host.ports["pop3s"], context=context, timeout=10)
    assert client.getwelcome().startswith(b"+OK imap.example.net POP3 server ready")
    capabilities = client.capa()
    assert "USER" in capabilities and "STLS" not in capabilities
    client.user(BOB)
    client.pass_(lab.users[BOB].password)
    assert b"Subject: over pop3s" in b"\r\n".join(client.retr(1)[1])
    client.quit()
    events = [e for e in lab.trace.events() if e.port_name == "pop3s"]
    assert events[1].kind == "tls" and "implicit TLS" in events[1].text
    assert all(e.tls for e in events if e.kind == "line")


def test_stat_list_uidl_retr_match_the_maildir(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "first", "second")
    client = pop(lab, context)
    keys = [name.split(":")[0] for name in files(lab)["new"]]
    count, octets = client.stat()
    _, listing, _ = client.list()
    sizes = [int(line.split()[1]) for line in listing]
    assert count == 2 and sum(sizes) == octets
    _, uidls, _ = client.uidl()
    assert sorted(line.split()[1].decode() for line in uidls) == sorted(uidl_of(k) for k in keys) == sorted(keys)
    for number, size in enumerate(sizes, start=1):
        _, lines, length = client.retr(number)
        content = b"\r\n".join(lines) + b"\r\n"
        assert len(content) == size, "LIST gives the exact size of what RETR sends (RFC 1939 section 5)"
        stored = [(maildir(lab) / "new" / name).read_bytes() for name in files(lab)["new"]]
        assert content in stored, "RETR sends the Maildir file byte for byte"
    client.quit()


def test_lines_starting_with_a_dot_are_byte_stuffed(lab: smtplab.Lab, raw: Raw, context: ssl.SSLContext) -> None:
    deliver(lab, "dots", body=".\n..two dots\n.one dot\nplain\n")
    raw.login(context)
    assert raw.ask("RETR 1").startswith("+OK")
    body = raw.multiline()
    assert body[-4:] == ["..", "...two dots", "..one dot", "plain"], "RFC 1939 section 3: a leading '.' is doubled"
    [message] = lab.messages(BOB)
    assert message.get_content() == ".\n..two dots\n.one dot\nplain\n"


def test_top_sends_the_header_and_n_body_lines(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "top", body="one\ntwo\nthree\n")
    client = pop(lab, context)
    _, lines, _ = client.top(1, 2)
    blank = lines.index(b"")
    assert b"Subject: top" in lines[:blank] and lines[blank + 1:] == [b"one", b"two"]
    _, lines, _ = client.top(1, 0)
    assert lines[-1] == b"" and b"one" not in lines
    client.quit()
    assert files(lab)["cur"] == [], "TOP is not a retrieval: the message stays unread"


def test_dele_removes_only_at_quit_and_rset_takes_it_back(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "keep", "delete")
    client = pop(lab, context)
    assert client.dele(2).startswith(b"+OK")
    assert client.stat()[0] == 1 and [line.split()[0] for line in client.list()[1]] == [b"1"]
    with pytest.raises(poplib.error_proto, match="-ERR message 2 is deleted"):
        client.retr(2)
    assert len(lab.messages(BOB)) == 2, "DELE only marks: nothing is removed before QUIT"
    assert client.rset().startswith(b"+OK maildrop has 2 message(s)")
    client.dele(2)
    client.quit()
    assert [m["Subject"] for m in lab.messages(BOB)] == ["keep"]


def test_a_session_that_ends_without_quit_deletes_nothing(lab: smtplab.Lab, raw: Raw, context: ssl.SSLContext) -> None:
    deliver(lab, "survives")
    raw.login(context)
    assert raw.ask("DELE 1").startswith("+OK")
    closed = threading.Event()
    lab.trace.subscribe(lambda e: closed.set() if e.protocol == "pop3" and e.kind == "close" else None)
    raw.close()  # no QUIT: the session never enters the UPDATE state (RFC 1939 section 6)
    assert closed.wait(10)
    client = pop(lab, context)  # the lock is free again once the server saw the close
    assert client.stat()[0] == 1
    client.quit()
    assert [m["Subject"] for m in lab.messages(BOB)] == ["survives"]


def test_retrieved_messages_become_read_in_imap(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "read me", "not me")
    client = pop(lab, context)
    client.retr(1)
    assert files(lab)["cur"] == [], "nothing changes on disk before QUIT"
    client.quit()
    current = files(lab)
    assert len(current["new"]) == 1 and len(current["cur"]) == 1 and current["cur"][0].endswith(":2,S")
    with lab.imap(BOB) as imap:
        imap.select("INBOX")
        typ, data = imap.search(None, "SEEN")
        assert typ == "OK" and len(data[0].split()) == 1
        typ, data = imap.fetch(data[0], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"read me" in data[0][1]


def test_uidl_is_stable_across_sessions(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "a", "b", "c")
    client = pop(lab, context)
    first = dict(line.split()[::-1] for line in client.uidl()[1])  # uid -> number
    client.retr(1)
    client.dele(2)
    client.quit()
    client = pop(lab, context)
    second = dict(line.split()[::-1] for line in client.uidl()[1])
    client.quit()
    deleted = next(uid for uid, number in first.items() if number == b"2")
    assert set(second) == set(first) - {deleted}, "the others keep their unique-ids, read or not"


def test_the_maildrop_is_locked_for_a_second_session(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    first = pop(lab, context)
    host = lab.imap_host(BOB)
    second = poplib.POP3_SSL(host.address, host.ports["pop3s"], context=context, timeout=10)
    second.user(BOB)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(lab.users[BOB].password)
    first.quit()
    second.user(BOB)
    assert second.pass_(lab.users[BOB].password).startswith(b"+OK")
    second.quit()


def test_a_snapshot_mail_arriving_later_waits_for_the_next_session(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "before")
    client = pop(lab, context)
    deliver(lab, "after")
    assert client.stat()[0] == 1
    client.quit()
    client = pop(lab, context)
    assert client.stat()[0] == 2
    client.quit()


def test_wrong_password_and_foreign_user_get_auth_errors(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    host = lab.imap_host(BOB)
    client = poplib.POP3_SSL(host.address, host.ports["pop3s"], context=context, timeout=10)
    client.user(BOB)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] invalid user name or password"):
        client.pass_("wrong")
    client.user("alice@example.org")  # a user of example.org, not of this host
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        client.pass_(lab.users["alice@example.org"].password)
    client.user(BOB)
    assert client.pass_(lab.users[BOB].password).startswith(b"+OK")
    client.quit()


def test_the_password_never_reaches_the_trace(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    pop(lab, context).quit()
    texts = [e.text for e in lab.trace.events() if e.protocol == "pop3"]
    assert "PASS <password hidden>" in texts
    assert not any(lab.users[BOB].password in text for text in texts)


def test_bad_commands_get_err_and_the_server_keeps_serving(lab: smtplab.Lab, raw: Raw, context: ssl.SSLContext) -> None:
    assert raw.ask("STAT") == "-ERR STAT is not valid in the AUTHORIZATION state (RFC 1939 section 3)"
    assert raw.ask("HELO there") == "-ERR unknown command"
    assert raw.ask("PASS nothing") == "-ERR [AUTH] Plaintext authentication disallowed before STLS: send STLS first"
    assert raw.ask("X" * (MAX_LINE + 100)).startswith("-ERR line too long")
    assert raw.ask("APOP bob@example.net 0123456789abcdef").startswith("-ERR APOP is not offered")
    raw.send(b"\x00\xff\r\n")
    assert raw.line() == "-ERR unknown command"
    raw.login(context)
    deliver(lab, "one")
    for command in ("LIST 0", "LIST abc", "RETR 2", "TOP 1", "TOP 1 x", "DELE", "UIDL -1", "LIST 99999999999"):
        assert raw.ask(command).startswith("-ERR"), command
    assert raw.ask("USER bob@example.net").startswith("-ERR USER is not valid in the TRANSACTION state")
    assert raw.ask("STLS").startswith("-ERR")
    assert raw.ask("NOOP") == "+OK"
    assert raw.ask("STAT") == "+OK 0 0", "the maildrop is the snapshot taken at PASS"
    assert raw.ask("QUIT").startswith("+OK")
    assert not [e for e in lab.trace.events() if e.protocol == "pop3" and e.kind == "error"]


def test_pipelined_commands_are_answered_in_order(lab: smtplab.Lab, raw: Raw, context: ssl.SSLContext) -> None:
    deliver(lab, "piped")
    raw.login(context)
    raw.send("STAT\r\nLIST\r\nUIDL 1\r\nNOOP\r\nQUIT\r\n")
    assert raw.line().startswith("+OK 1 ")
    assert raw.line().startswith("+OK 1 message(s)")
    assert len(raw.multiline()) == 1
    assert raw.line().startswith("+OK 1 ")
    assert raw.line() == "+OK"
    assert raw.line().startswith("+OK imap.example.net POP3 server signing off")


def test_plaintext_sent_after_stls_is_discarded(lab: smtplab.Lab, raw: Raw, context: ssl.SSLContext) -> None:
    # A man in the middle appends a command after STLS: it must not run inside TLS (RFC 3207 section 4.2).
    raw.send("STLS\r\nUSER mallory@example.net\r\n")
    assert raw.line() == "+OK Begin TLS negotiation"
    raw.sock = context.wrap_socket(raw.sock, server_hostname="imap.example.net")
    raw.file = raw.sock.makefile("rb")
    assert raw.ask("PASS anything") == "-ERR give USER first", "the injected USER was not kept"
    assert any("discarded" in e.text for e in lab.trace.events() if e.protocol == "pop3")


def test_too_many_bad_commands_end_the_session(lab: smtplab.Lab, raw: Raw) -> None:
    for _ in range(19):
        assert raw.ask("BOGUS") == "-ERR unknown command"
    assert raw.ask("BOGUS") == "-ERR too many bad commands, closing connection"
    assert raw.file.readline() == b""


def test_host_down_drops_the_session_without_update(lab: smtplab.Lab, raw: Raw, context: ssl.SSLContext) -> None:
    deliver(lab, "kept")
    raw.login(context)
    assert raw.ask("DELE 1").startswith("+OK")
    host = lab.imap_host(BOB)
    port = host.ports["pop3"]
    host.down()
    assert raw.file.readline() == b""
    host.up()
    assert host.ports["pop3"] == port
    client = pop(lab, context)
    assert client.stat()[0] == 1
    client.quit()


def test_a_file_with_bare_lf_is_sent_with_crlf_and_sized_so(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    content = b"Subject: written by another tool\n\nline one\nline two\n"
    (maildir(lab) / "new" / "1700000000.M1P1Q1.elsewhere").write_bytes(content)
    client = pop(lab, context)
    assert client.list(1).split()[-1] == str(len(content.replace(b"\n", b"\r\n"))).encode()
    assert client.retr(1)[1] == content.rstrip(b"\n").split(b"\n")
    client.quit()


def test_a_long_maildir_key_gets_a_stable_hashed_uidl() -> None:
    key = "k" * 80
    assert uidl_of(key) == uidl_of(key) and len(uidl_of(key)) == 40
    assert uidl_of("1700000000.M1P1Q1.host") == "1700000000.M1P1Q1.host"
    assert len(uidl_of("é")) == 40, "UIDL characters are 0x21-0x7E (RFC 1939 section 7)"


def test_autologout_closes_without_update(tmp_path: Path) -> None:
    # RFC 1939 section 3: the autologout timer closes the connection, no response and no UPDATE.
    root = tmp_path / "bob"
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "new" / "1.M1P1Q1.host").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    trace = Trace(lambda: 0.0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    service = Pop3Service("pop.test", "127.0.0.1", context, trace, implicit_tls=False,
                          check_password=lambda user, password: password == "secret",
                          maildrop=lambda user: root if user == "bob@test" else None)
    service.idle_timeout = 0.2
    asyncio.run_coroutine_threadsafe(service.start(), loop).result(10)
    try:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            file = sock.makefile("rb")
            assert file.readline().startswith(b"+OK")
            assert file.readline() == b"", "the server closed the idle connection without a word"
        assert any("autologout" in e.text for e in trace.events())
        assert os.listdir(root / "new") == ["1.M1P1Q1.host"]
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_imaplib_reads_on_imaps(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "over imaps")
    host = lab.imap_host(BOB)
    with imaplib.IMAP4_SSL(host.address, host.ports["imaps"], ssl_context=context, timeout=10) as imap:
        assert "STARTTLS" not in imap.capabilities and "LOGINDISABLED" not in imap.capabilities
        imap.login(BOB, lab.users[BOB].password)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"over imaps" in data[0][1]


def test_a_pop3_session_draws_as_a_ladder(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "drawn")
    client = pop(lab, context)
    client.capa()
    client.retr(1)
    client.quit()
    svg = lab.ladder(conn=lab.trace.connections("pop3")[-1], full=True).svg  # every line, the TLS handshake too
    for label in ("connect to port", "(pop3, 110 on the internet)", "+OK Begin TLS negotiation", "RETR 1",
                  "&lt;message: ", "more lines", "UPDATE: 0 message(s) removed, 1"):
        assert label in svg, label


def test_imap_changes_during_a_session_are_met_with_care(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    deliver(lab, "flagged meanwhile", "expunged meanwhile")
    client = pop(lab, context)
    with lab.imap(BOB) as imap:  # IMAP is not locked out: it moves one file and removes the other
        imap.select("INBOX")
        imap.store("1", "+FLAGS", "\\Flagged")
        imap.store("2", "+FLAGS", "\\Deleted")
        imap.expunge()
    assert b"flagged meanwhile" in b"\r\n".join(client.retr(1)[1]), "found again under its new name"
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\] that message was removed by another client"):
        client.retr(2)
    client.dele(2)
    assert client.quit().startswith(b"+OK"), "deleting what is gone already is no error"
    [name] = files(lab)["cur"]
    assert name.endswith(":2,FS"), "retrieved: Seen added to IMAP's Flagged, both kept"


def test_a_maildrop_locked_by_another_process_is_in_use(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    # Another lab process on the same directory (`up --dir` twice) holds the flock on the Maildir.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()", str(maildir(lab))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            pop(lab, context)
    finally:
        holder.communicate("", timeout=30)
    pop(lab, context).quit()


def test_lab_pop3_gives_a_logged_in_client(lab: smtplab.Lab) -> None:
    deliver(lab, "via lab.pop3")
    client = lab.pop3(BOB)
    assert client.stat()[0] == 1
    client.dele(1)
    client.quit()
    assert lab.messages(BOB) == []
    client = lab.pop3(BOB)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        lab.pop3(BOB)
    client.quit()


def test_pop3_events_have_typed_fields_and_belong_to_the_message(lab: smtplab.Lab, context: ssl.SSLContext) -> None:
    from smtplab.trace.events import Close, Connect, Note, Pop3Command, Pop3Response, TlsStarted

    sent = lab.send("alice@example.org", BOB, "typed", "fields")
    closed = threading.Event()
    lab.trace.subscribe(lambda e: closed.set() if e.protocol == "pop3" and e.kind == "close" else None)
    client = pop(lab, context)
    client.retr(1)
    client.quit()
    assert closed.wait(10), "the server recorded the end of the session"
    conn = lab.trace.connections("pop3")[-1]
    events = lab.trace.filter(conn=conn)
    assert isinstance(events[0].payload, Connect) and isinstance(events[-1].payload, Close)
    assert [e.payload.version for e in events if isinstance(e.payload, TlsStarted)] in (["TLSv1.3"], ["TLSv1.2"])
    commands = [e.payload.verb for e in events if isinstance(e.payload, Pop3Command)]
    assert commands == ["CAPA", "STLS", "USER", "PASS", "RETR", "QUIT"]  # poplib asks CAPA before STLS
    assert [e.payload.argument for e in events if isinstance(e.payload, Pop3Command) and e.payload.verb == "PASS"] \
        == ["<password hidden>"]
    assert sum(1 for e in events if isinstance(e.payload, Pop3Response) and e.payload.ok) == 7  # greeting and each command
    assert any(isinstance(e.payload, Note) and "UPDATE" in e.text for e in events)
    assert len({e.corr for e in events}) == 1 and events[0].corr.startswith("pop3:")
    retrieval = [e.text for e in lab.trace.for_message(sent.message_id) if e.protocol == "pop3"]
    assert retrieval[0].endswith(" octets") and retrieval[-1] == ".", "RETR belongs to the message it carried"
