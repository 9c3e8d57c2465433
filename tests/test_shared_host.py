"""A shared classroom host: what a hostile classmate tries must neither wipe, read nor stop a lab."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pwd
import resource
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI

import smtplab
import smtplab.net.guard
from smtplab import Scenario
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


def test_what_imap_clients_do_leaves_nothing_readable(tmp_path: Path) -> None:
    """APPEND, CREATE, RENAME, SUBSCRIBE, flags and EXPUNGE: the IMAP server's files are private too
    (pymap 0.36.7 created APPEND's messages and CREATE's `maildirfolder` with the default mode)."""
    old = os.umask(0o022)
    try:
        with smtplab.start(directory=tmp_path / "lab") as lab:
            lab.send("alice@example.org", "bob@example.net", "hello", "x")
            imap = lab.imap("bob@example.net")
            try:
                assert imap.append("INBOX", None, None, b"Subject: appended\r\n\r\nbody\r\n")[0] == "OK"
                assert imap.create("Archive")[0] == "OK"
                assert imap.rename("Archive", "Kept")[0] == "OK"
                assert imap.subscribe("Kept")[0] == "OK"
                imap.select("INBOX")
                assert imap.copy("1", "Kept")[0] == "OK"
                imap.store("1", "+FLAGS", "(\\Deleted $Label1)")
                assert imap.expunge()[0] == "OK"
            finally:
                imap.logout()
            assert exposed(tmp_path / "lab") == []
    finally:
        os.umask(old)


# --- item 7: connection limits, a burst of connections, log floods, failed logins ------------------------

def _first_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data


def test_a_burst_of_500_connections_is_greeted_or_told_to_come_back(lab: smtplab.Lab) -> None:
    """500 clients connect at once: each hears the 220 greeting or `421 4.7.0` (above the listener's limit),
    none is reset or left waiting for the kernel to retransmit its SYN (the accept backlog is long)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))  # 500 clients + the lab's 500 accepted sockets
    mx = lab.host("mx1")
    limit = lab.services.guard.limits["smtp"]
    sockets = []
    try:
        for _ in range(500):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((mx.address, mx.ports["smtp"]))
            sockets.append(sock)
        answers = []
        for sock in sockets:
            sock.settimeout(30)  # a guard against a hang, not a measure: each answer comes at once
            answers.append(_first_line(sock))
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    greeted = [a for a in answers if a.startswith(b"220 ")]
    busy = [a for a in answers if a.startswith(b"421 4.7.0 mx1.example.net Too many connections")]
    assert len(greeted) + len(busy) == 500, {a for a in answers if a not in greeted + busy}
    assert len(greeted) == limit
    refused = [e for e in lab.trace if e.kind == "refused"]
    assert refused and "too many connections" in refused[0].text
    lab.send("alice@example.org", "bob@example.net", "after the burst", "still served")
    assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["after the burst"]


def test_imap_says_bye_above_its_connection_limit(lab: smtplab.Lab) -> None:
    imap = lab.host("imap.example.net")
    lab.services.guard.limits["imap"] = 3
    held = [socket.create_connection((imap.address, imap.ports["imap"])) for _ in range(3)]
    try:
        assert all(_first_line(s).startswith(b"* OK") for s in held)
        with socket.create_connection((imap.address, imap.ports["imap"])) as extra:
            assert _first_line(extra).startswith(b"* BYE [UNAVAILABLE] Too many connections")
            assert extra.recv(100) == b""  # and closed
    finally:
        for s in held:
            s.close()


def test_failed_smtp_logins_make_the_next_ones_wait(lab: smtplab.Lab) -> None:
    """After two failed AUTH attempts each further one waits longer (per connection and per address);
    the wait is in the trace. The delays are shortened here; the lab's start at 1 s and double."""
    lab.services.login_throttle.FIRST_DELAY = 0.05  # type: ignore[misc]
    host = lab.submission_host("alice@example.org")
    wrong = base64.b64encode(b"\0alice@example.org\0not-her-password").decode()
    right = base64.b64encode(f"\0alice@example.org\0{lab.user('alice@example.org').password}".encode()).decode()
    mark = lab.mark()
    with smtplib.SMTP(host.address, host.ports["submission"]) as client:
        client.starttls(context=lab.ca.client_context())
        client.ehlo()
        began = time.monotonic()
        codes = [client.docmd("AUTH", f"PLAIN {wrong}")[0] for _ in range(4)]
        waited = time.monotonic() - began
    assert codes == [535] * 4
    notes = [e.text for e in lab.trace.since(mark) if "login attempt after failed ones" in e.text]
    assert [n.split("answered after ")[1].split(" s")[0] for n in notes] == ["0.05", "0.1"]
    assert waited >= 0.15  # the waits really happened (a lower bound: sleeping is never shorter)
    with smtplib.SMTP(host.address, host.ports["submission"]) as client:  # a new connection from the address
        client.starttls(context=lab.ca.client_context())
        client.ehlo()
        assert client.docmd("AUTH", f"PLAIN {right}")[0] == 235
    notes = [e.text for e in lab.trace.since(mark) if "login attempt after failed ones" in e.text]
    assert len(notes) == 3 and "answered after 0.2 s" in notes[-1]
    lab.services.login_throttle.FIRST_DELAY = 5.0  # type: ignore[misc]
    with smtplib.SMTP(host.address, host.ports["submission"]) as client:  # a success started afresh
        client.starttls(context=lab.ca.client_context())
        client.ehlo()
        assert client.docmd("AUTH", f"PLAIN {right}")[0] == 235


def test_a_lab_where_the_owner_cannot_be_checked_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtplab.net.guard, "_available", False)
    with pytest.warns(RuntimeWarning, match="other users of this machine can connect"), smtplab.start() as lab:
        assert not lab.services.guard.checking
    scenario = Scenario.default().to_dict()
    scenario["options"] = {"allow_other_users": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opened on purpose: nothing to warn about
        with smtplab.start(scenario) as lab:
            assert not lab.services.guard.checking


FLOOD_SCRIPT = """
import resource, sys, json, smtplab
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
lab = smtplab.start()
print(json.dumps([[h.address, p] for h in lab.hosts.values() for s, p in h.ports.items() if s != "imap"]), flush=True)
sys.stdin.read()
lab.stop()
"""


def test_running_out_of_file_descriptors_logs_one_line_per_cause() -> None:
    """A lab out of file descriptors once wrote 126,040 tracebacks in 35 s (asyncio reports EMFILE once per
    connection waiting, and re-arms as often): now the first of each cause, and a count of the rest."""
    proc = subprocess.Popen([sys.executable, "-c", FLOOD_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    log: list[str] = []
    exhausted = threading.Event()

    def read_log() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            log.append(line)
            if "out of system resource" in line:
                exhausted.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    held: list[socket.socket] = []
    try:
        listeners = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        for address, port in listeners:  # more connections than the lab has descriptors
            for _ in range(60):
                held.append(socket.create_connection((address, port), timeout=5))
        assert exhausted.wait(60), "the test did not exhaust the lab's descriptors: " + "".join(log)[:2000]
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(60)
    finally:
        for sock in held:
            sock.close()
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    text = "".join(log)
    assert text.count("Traceback") <= 6, text[:3000]


# --- item 9 (DNS): a UDP flood neither grows the reply cache nor keeps legitimate questions out -------------

FLOODER = r"""
import select, socket, struct, sys
address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

def query(name, qid, pad=60000):
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    qname = b"".join(bytes([len(label)]) + label for label in name.split(b".")) + b"\0"
    option = struct.pack("!HH", 12, pad) + bytes(pad)  # EDNS padding (RFC 7830), 60 KB of it
    return header + qname + struct.pack("!HH", 15, 1) + b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option

sent = 0
for i in range(count):
    # Half the same question with a new id, half a new name each time: neither may grow the cache.
    name = b"example.net" if i % 2 else b"x%d.example.net" % i
    try:
        sock.sendto(query(name, i & 0xFFFF), (address, port))
        sent += 1
    except OSError:
        pass
    if i == 100:
        print("flooding", flush=True)
    if i % 100 == 0 and select.select([sys.stdin], [], [], 0)[0]:
        break
print(sent, flush=True)
"""


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_a_udp_flood_leaves_the_dns_cache_bounded_and_answers_legitimate_questions(lab: smtplab.Lab) -> None:
    from smtplab.net.dns_server import CACHE_BYTES, CACHE_ENTRIES

    lab.lookup_mx("example.net")
    rss_before = _rss_kb()
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, lab.dns.address, str(lab.dns.port), "300000"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    answered = during = 0
    try:
        assert flooder.stdout.readline().strip() == "flooding"  # type: ignore[union-attr]
        for _ in range(45):
            records = lab.lookup_mx("example.net")  # raises DnsLookupError if the question went unanswered
            assert [r.exchange for r in records] == ["mx1.example.net", "mx2.example.net"]
            answered += 1
            during += flooder.poll() is None
    finally:
        flooder.stdin.close()  # type: ignore[union-attr]
        sent = int(flooder.stdout.read().split()[-1])  # type: ignore[union-attr]
        flooder.wait(60)
    server = lab._network.dns_server
    assert server is not None
    print(f"flood: {sent} queries of 60 KB; legitimate answered {answered}/45 ({during} while flooding); "
          f"RSS {rss_before / 1024:.0f} -> {_rss_kb() / 1024:.0f} MB; cache {server.cache_entries} replies")
    assert answered == 45 and during >= 1
    assert server.cache_entries <= CACHE_ENTRIES and server._reply_bytes <= CACHE_BYTES
    notes = [e.text for e in lab.trace if e.protocol == "dns" and "oversized query" in e.text]
    assert 1 <= len(notes) <= 5 and sent > 100 * len(notes), notes  # one note per interval, not one per query


def test_the_dns_cache_is_keyed_by_the_question_and_bounded(lab: smtplab.Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same question with another id or other EDNS padding is one cached reply; endless different
    questions do not grow the cache past its bound (it once kept every query's bytes: 180 MB in a flood)."""
    import dns.message
    import dns.rcode

    from smtplab.net import dns_server

    def ask(name: str, padding: int, qid: int) -> dns.message.Message:
        query = dns.message.make_query(name, "MX", use_edns=0, payload=1232)
        query.id = qid
        wire = query.to_wire()
        if padding:  # an EDNS padding option (RFC 7830) appended to the OPT record, as a client may send
            wire = wire[:-2] + struct.pack("!HHH", padding + 4, 12, padding) + bytes(padding)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(wire, (lab.dns.address, lab.dns.port))
            reply = dns.message.from_wire(sock.recv(65535))
        assert reply.id == qid
        return reply

    server = lab._network.dns_server
    assert server is not None
    before = server.cache_entries
    for qid, padding in enumerate((0, 100, 400, 1000, 3000)):
        reply = ask("example.net", padding, qid)
        assert sorted(str(r.exchange) for r in reply.answer[0]) == ["mx1.example.net.", "mx2.example.net."]
    assert server.cache_entries == before + 1
    reply = ask("EXAMPLE.net", 0, 77)  # the question is echoed as asked (RFC 1035 section 4.1.1; 0x20 clients)
    assert str(reply.question[0].name) == "EXAMPLE.net." and reply.answer
    monkeypatch.setattr(dns_server, "CACHE_ENTRIES", 40)
    for n in range(100):
        assert ask(f"n{n}.example.net", 200, n).rcode() == dns.rcode.NXDOMAIN
    assert server.cache_entries == 40
    huge = ask("example.net", 5000, 5)  # larger than any question: FORMERR, read from the header alone
    assert huge.rcode() == dns.rcode.FORMERR and server.cache_entries == 40


# --- item 11: scenario names are names, never paths; a lab directory it cannot write is one sentence ----------

def _with(**changes: object) -> dict:  # type: ignore[type-arg]
    data = Scenario.default().to_dict()
    data["providers"][1].update(changes)
    return data


@pytest.mark.parametrize(("scenario", "field"), [
    (_with(users=["../../../x"]), "providers[1].users"),
    (_with(users=["/tmp/evil"]), "providers[1].users"),
    (_with(users=[".hidden"]), "providers[1].users"),
    (_with(users=["pymap-etc-passwd"]), "providers[1].users"),  # the IMAP server's users file
    (_with(users=["pymap-etc-shadow"]), "providers[1].users"),
    (_with(domain="../../d", hosts={"mx1.example.net": ["smtp", "imap"]}, mx={"mx1.example.net": 10},
           users=["bob@../../d"]), "providers[1].domain"),
    (_with(domain="/etc"), "providers[1].domain"),
    (_with(hosts={"../../tls/x": ["smtp", "imap"]}, mx={}), "providers[1].hosts"),
    ({**_with(), "dns_name": "../dns"}, "dns_name"),
    ({**_with(), "options": {"allow_other_users": "yes"}}, "options.allow_other_users"),
])
def test_scenario_names_that_are_paths_are_refused_before_anything_is_made(tmp_path, scenario, field) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "lab"
    with pytest.raises(smtplab.ScenarioError, match=field.replace("[", r"\[").replace("]", r"\]")):
        smtplab.start(scenario, directory=directory)
    assert not directory.exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_a_scenario_built_by_hand_is_checked_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    default = Scenario.default()
    bob = default.providers[1]
    bad = dataclasses.replace(default, providers=(default.providers[0],
                                                  dataclasses.replace(bob, users=(("../../x@example.net", None),))))
    with pytest.raises(smtplab.ScenarioError, match=r"providers\[1\]\.users"):
        smtplab.start(bad, directory=tmp_path / "lab")
    assert not (tmp_path / "lab").exists()


@pytest.fixture
def small_disk(tmp_path):  # type: ignore[no-untyped-def]
    """A tiny tmpfs of its own (root only: CI runs as root), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    mounts = []

    def mount(name: str, options: str):  # type: ignore[no-untyped-def]
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                                text=True)
        if result.returncode != 0:  # e.g. a container without CAP_SYS_ADMIN: a capability, not a tool to install
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


def _up(directory: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smtplab", "up", "--dir", directory], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_a_read_only_or_full_lab_directory_is_one_clear_sentence(small_disk) -> None:  # type: ignore[no-untyped-def]
    read_only = small_disk("ro", "ro,size=256k")
    result = _up(str(read_only / "lab"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"smtplab: the lab cannot write in its directory {read_only / 'lab'}: it is on a "
                                    "read-only file system"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(smtplab.LabDirectoryError, match="read-only"):
        smtplab.start(directory=read_only / "lab")

    full = small_disk("full", "size=256k")
    (full / "lab").mkdir(mode=0o700)
    with open(full / "filler", "wb") as filler:  # fill the file system to its last block
        try:
            while True:
                filler.write(bytes(65536))
                filler.flush()
        except OSError:
            pass
    result = _up(str(full / "lab"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "its disk is full" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- acceptance: the lab of one Unix user, attacked by another --------------------------------------------

OWNER, OTHER = "smtplab-a", "smtplab-b"


def _unix_user(name: str) -> pwd.struct_passwd:
    """The Unix user `name`, made if missing (CI runs as root; locally the test is skipped without root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                       capture_output=True)
        return pwd.getpwnam(name)


class _Channel:
    """JSON messages over a socket pair between the test and a child running as another user."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rw")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, value: object) -> None:
        self.file.write(json.dumps(value) + "\n")
        self.file.flush()

    def recv(self) -> Any:
        self.sock.settimeout(300)  # a guard against a hung child, not a measure
        line = self.file.readline()
        if not line:
            raise EOFError("the child process ended early (see its traceback above)")
        return json.loads(line)


def _as_user(user: pwd.struct_passwd, work: Callable[[_Channel], None]) -> tuple[int, _Channel]:
    """Run `work` in a child process that is `user` (fork, then setgid/setuid: the child needs no interpreter
    of its own, so the test works wherever the interpreter lives)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ["HOME"] = os.environ["TMPDIR"] = "/nonexistent"
            work(_Channel(theirs))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    theirs.close()
    return pid, _Channel(ours)


def _owner(lab_dir: Path) -> Callable[[_Channel], None]:
    def run(channel: _Channel) -> None:
        from smtplab.control import ControlServer

        lab = smtplab.start(directory=lab_dir)
        control = ControlServer(lab)
        lab.services.call(control.start())
        control.write_file(lab.directory / "control.json")
        imap = lab.host("imap.example.net")
        channel.send({"uid": os.geteuid(), "targets": [
            ["smtp", lab.host("mx1").address, lab.host("mx1").ports["smtp"]],
            ["submission", lab.host("smtp.example.org").address, lab.host("smtp.example.org").ports["submission"]],
            ["imap", imap.address, imap.ports["imap"]],
            ["dns-tcp", lab.dns.address, lab.dns.port],
            ["control", control.address, control.port]], "dns": [lab.dns.address, lab.dns.port]})
        assert channel.recv() == "send your mail"
        for n in range(5):  # the owner's mail flows while the classmate attacks
            lab.send("alice@example.org", "bob@example.net", f"during the attack {n}", "Still here.")
        client = lab.imap("bob@example.net")
        client.select("INBOX")
        subjects = len(client.search(None, "ALL")[1][0].split())
        client.logout()
        refused = [e.text for e in lab.trace if e.kind == "refused"]
        channel.send({"in_inbox": subjects, "refused": refused})
        assert channel.recv() == "stop"
        lab.services.call(control.stop())
        lab.stop()
    return run


def _attacker(top: Path, lab_dir: Path) -> Callable[[_Channel], None]:
    def run(channel: _Channel) -> None:
        task = channel.recv()
        readable = []
        for path in [top, lab_dir, *(lab_dir / p for p in ("lab.json", "control.json", "tls/ca-key.pem",
                                                             "tls/mx1.example.net.pem", "mail", "queue"))]:
            try:
                if path.is_dir():
                    os.listdir(path)
                    if path != top:  # the home folder may be listable, as on JupyterHub; the lab's is not
                        readable.append(str(path))
                else:
                    path.read_bytes()
                    readable.append(str(path))
            except PermissionError:
                pass
        for root, dirs, files in os.walk(lab_dir):  # anything the walk can reach at all
            readable += [os.path.join(root, n) for n in dirs + files]
        answers = {}
        for service, address, port in task["targets"]:
            with socket.create_connection((address, port), timeout=30) as sock:
                sock.settimeout(30)
                try:
                    answers[service] = sock.recv(200).decode("utf-8", "replace")
                except ConnectionResetError:
                    answers[service] = ""
        token_seen = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if task["token"].encode() in cmdline.read_bytes():
                    token_seen.append(str(cmdline))
            except OSError:
                pass
        udp = dns_query_udp(*task["dns"])  # UDP has no connection to check: documented as not isolated
        channel.send({"uid": os.geteuid(), "readable": readable, "answers": answers, "token_seen": token_seen,
                      "udp_dns_answered": udp})
        # Then keep opening connections (a flood) until the test says stop: none may be served.
        attempts = served = 0
        channel.sock.setblocking(False)
        while True:
            try:
                if channel.sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            for _service, address, port in task["targets"]:
                attempts += 1
                try:
                    with socket.create_connection((address, port), timeout=30) as sock:
                        sock.settimeout(30)
                        served += bool(sock.recv(100))
                except OSError:
                    pass
        channel.sock.setblocking(True)
        channel.recv()
        channel.send({"attempts": attempts, "served": served})
    return run


def dns_query_udp(address: str, port: int) -> bool:
    import dns.message
    import dns.query

    try:
        return bool(dns.query.udp(dns.message.make_query("example.net", "MX"), address, port=port, timeout=5).answer)
    except Exception:
        return False


def test_a_classmate_can_neither_read_nor_use_nor_stop_your_lab(tmp_path: Path) -> None:
    """The lab runs as one Unix user, the attacks as another: nothing of the lab is readable, the control
    token is in no command line, every TCP connection of the other user is refused (SMTP, submission, IMAP,
    DNS over TCP, control), and the owner's mail flows during the attack."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI must run this test as root (it makes two Unix users)")
        pytest.skip("needs root to make two Unix users and run a lab as each (CI runs as root)")
    owner, other = _unix_user(OWNER), _unix_user(OTHER)
    with smtplab.start() as warm:  # everything the children use is imported before they give up root
        warm.send("alice@example.org", "bob@example.net", "warm up", "x")
        warm.imap("bob@example.net").logout()
        dns_query_udp(warm.dns.address, warm.dns.port)
    top = Path(tempfile.mkdtemp(prefix="smtplab-shared-"))
    home = top / "home"
    os.mkdir(home, 0o755)  # a home folder others may enter, as on many JupyterHub hosts
    os.chown(home, owner.pw_uid, owner.pw_gid)
    os.chown(top, owner.pw_uid, owner.pw_gid)
    lab_dir = home / "lab"
    children = []
    channels: list[_Channel] = []
    try:
        pid, lab = _as_user(owner, _owner(lab_dir))
        children.append(pid)
        channels.append(lab)
        started = lab.recv()
        assert started["uid"] == owner.pw_uid
        token = json.loads((lab_dir / "control.json").read_text())["token"]
        pid, attacker = _as_user(other, _attacker(top, lab_dir))
        children.append(pid)
        channels.append(attacker)
        attacker.send({"targets": started["targets"], "token": token, "dns": started["dns"]})
        seen = attacker.recv()
        assert seen["uid"] == other.pw_uid
        assert seen["readable"] == []
        assert exposed(lab_dir) == []
        assert seen["answers"] == {service: "" for service, _a, _p in started["targets"]}, seen["answers"]
        assert seen["token_seen"] == []
        assert seen["udp_dns_answered"]  # not isolated (no connection to check): see docs/teaching.md
        lab.send("send your mail")
        mail = lab.recv()
        attacker.send("stop")
        flood = attacker.recv()
        assert mail["in_inbox"] == 5
        assert flood["attempts"] > 0 and flood["served"] == 0
        assert any(f"uid {other.pw_uid}" in text for text in mail["refused"]), mail["refused"]
        lab.send("stop")
        while children:  # both children end on their own, the lab stopped cleanly
            assert os.waitpid(children.pop(), 0)[1] == 0
    finally:
        for channel in channels:
            channel.close()
        for pid in children:  # only after a failure: end what is left
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        shutil.rmtree(top, ignore_errors=True)


# --- item 6: the control token is in no command line ----------------------------------------------------

def _cmdlines() -> list[bytes]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(path.read_bytes())
        except OSError:
            pass
    return found


def test_the_control_token_never_appears_in_a_command_line(tmp_path: Path) -> None:
    """`up` prints a `ctl` recipe without the token, and every documented `ctl` command finds it in the lab
    directory (or SMTPLAB_TOKEN): /proc/*/cmdline, which every user can read, never shows it."""
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("no /proc on this system")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    up = subprocess.Popen([sys.executable, "-m", "smtplab", "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        printed = []
        while not printed or not printed[-1].startswith("control from another terminal"):
            line = up.stdout.readline()  # type: ignore[union-attr]
            assert line, up.stderr.read()  # type: ignore[union-attr]
            printed.append(line)
        assert "--token" not in "".join(printed)
        recipe = printed[-1].split(": ", 1)[1].split()  # python -m smtplab ctl --dir PATH down mx1
        directory = recipe[recipe.index("--dir") + 1]
        info = json.loads((Path(directory) / "control.json").read_text())
        token = info["token"].encode()
        commands = [["hosts"], ["down", "mx1"], ["up", "mx1"], ["fail", "mx2", "RCPT", "451 4.7.1 Greylisted"],
                    ["drop", "mx2", "DATA"], ["slow", "mx2", "MAIL", "0.1"], ["faults"], ["clear", "mx2"], ["clear"],
                    ["advance", "5m"], ["queue"]]
        runs = [(["--dir", directory, *c], env) for c in commands]
        runs.append((["--port", str(info["port"]), "hosts"], {**env, "SMTPLAB_TOKEN": info["token"]}))
        for args, run_env in runs:
            ctl = subprocess.Popen([sys.executable, "-m", "smtplab", "ctl", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=run_env)
            saw_ctl = False
            while ctl.poll() is None:  # look at every command line while the ctl process lives
                lines = _cmdlines()
                assert not [c for c in lines if token in c], args
                saw_ctl = saw_ctl or any(b"smtplab\0ctl\0" in c for c in lines)
            out, err = ctl.communicate()
            assert ctl.returncode == 0, (args, err)
            assert saw_ctl, "the scan should have seen the ctl process's command line"
    finally:
        up.terminate()
        up.wait(60)
