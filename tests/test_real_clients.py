"""Real mail clients doing their whole job against the lab, configured as docs/terminal.md says: msmtp,
fetchmail, mbsync, mutt, curl, a real Postfix, and Python's own clients on the implicit-TLS ports.

Every client runs as the tests' user with HOME in a temporary directory; configuration files are
written 0600 (msmtp and fetchmail refuse anything more open).
"""

from __future__ import annotations

import getpass
import imaplib
import os
import poplib
import pty
import re
import secrets
import select
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool

import smtplab

ALICE = "alice@example.org"
BOB = "bob@example.net"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


def write_config(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return path


def run(args: list[str], home: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120,  # type: ignore[call-overload]
                          env={**os.environ, "HOME": str(home)}, cwd=home, **kwargs)


def imap_messages(lab: smtplab.Lab, folder: str = "INBOX") -> dict[str, tuple[bytes, bytes]]:
    """Subject -> (raw message, FLAGS) of every message in bob's `folder`, read over IMAP."""
    out = {}
    with lab.imap(BOB) as imap:
        typ, _ = imap.select(folder, readonly=True)
        assert typ == "OK", folder
        typ, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[])") if _count(imap) else ("OK", [])
        for part in data:
            if isinstance(part, tuple):
                raw = part[1]
                subject = re.search(rb"^Subject: (.*?)\r\n", raw, re.MULTILINE)
                out[subject.group(1).decode() if subject else ""] = (raw, part[0])
    return out


def _count(imap: imaplib.IMAP4) -> int:
    typ, data = imap.search(None, "ALL")
    return len(data[0].split())


def draft(subject: str, body: str = "Hello Bob!\n") -> str:
    return f"From: {ALICE}\nTo: {BOB}\nSubject: {subject}\n\n{body}"


# --- msmtp: send over STARTTLS (587's role) and over implicit TLS (465's role) ---


@pytest.mark.tool("msmtp")
def test_msmtp_sends_over_submission_and_submissions(lab: smtplab.Lab, home: Path) -> None:
    host = lab.submission_host(ALICE)
    password = lab.users[ALICE].password
    rc = write_config(home / ".msmtprc", f"""defaults
tls on
tls_trust_file {lab.ca_file}
auth plain
user {ALICE}
password {password}
from {ALICE}

account starttls
host {host.address}
port {host.ports['submission']}
tls_starttls on

account implicit
host {host.address}
port {host.ports['submissions']}
tls_starttls off
""")
    for account in ("starttls", "implicit"):
        result = run([require_tool("msmtp"), "-C", str(rc), "-a", account, BOB], home,
                     input=draft(f"msmtp {account}"))
        assert result.returncode == 0, result.stderr
    lab.wait_for_delivery()
    received = {m["Subject"]: m.get_all("Received")[-1] for m in lab.messages(BOB)}
    assert set(received) == {"msmtp starttls", "msmtp implicit"}
    assert all("with ESMTPSA" in line for line in received.values()), "authenticated, over TLS (RFC 3848)"
    ports = {e.port_name for e in lab.trace.events() if e.protocol == "smtp" and e.text.startswith("AUTH")}
    assert ports == {"submission", "submissions"}
    implicit = [e for e in lab.trace.events() if e.port_name == "submissions"]
    assert [e.kind for e in implicit[:2]] == ["connect", "tls"], "TLS before the first SMTP line"


# --- fetchmail: IMAP keeps the mail, POP3 downloads and deletes; both over verified TLS ---


def fetchmailrc(lab: smtplab.Lab, home: Path, protocol: str, port_name: str, mbox: Path, keep: bool) -> Path:
    host = lab.imap_host(BOB)
    tls = "ssl" if port_name in ("imaps", "pop3s") else "sslproto tls1.2+"  # implicit TLS, or STARTTLS/STLS
    return write_config(home / ".fetchmailrc", f"""set no bouncemail
poll {host.name} via {host.address} service {host.ports[port_name]} protocol {protocol}
  user "{BOB}" there with password "{lab.users[BOB].password}" is "{getpass.getuser()}" here
  {tls} sslcertfile "{lab.ca_file}" sslcertck sslcommonname {host.name}
  mda "cat >> {mbox}"
  {'keep' if keep else 'nokeep'}
""")


@pytest.mark.tool("fetchmail")
@pytest.mark.parametrize("protocol,port_name", [("IMAP", "imap"), ("IMAP", "imaps")])
def test_fetchmail_reads_imap_and_leaves_the_mail_on_the_server(lab: smtplab.Lab, home: Path, protocol: str,
                                                                 port_name: str) -> None:
    lab.send(ALICE, BOB, f"fetch me over {port_name}", "kept on the server")
    mbox = home / "inbox.mbox"
    rc = fetchmailrc(lab, home, protocol, port_name, mbox, keep=True)
    result = run([require_tool("fetchmail"), "-f", str(rc), "--nosyslog"], home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Subject: fetch me over {port_name}" in mbox.read_text()
    [(raw, flags)] = imap_messages(lab).values()
    assert b"\\Seen" in flags and b"kept on the server" in raw


@pytest.mark.tool("fetchmail")
@pytest.mark.parametrize("port_name", ["pop3", "pop3s"])
def test_fetchmail_pop3_downloads_and_deletes(lab: smtplab.Lab, home: Path, port_name: str) -> None:
    for n in (1, 2):
        lab.send(ALICE, BOB, f"pop {n}", f"message {n}\n.starts with a dot\n")
    mbox = home / "inbox.mbox"
    rc = fetchmailrc(lab, home, "POP3", port_name, mbox, keep=False)
    result = run([require_tool("fetchmail"), "-f", str(rc), "--nosyslog", "-v"], home)
    assert result.returncode == 0, result.stdout + result.stderr
    if port_name == "pop3":
        assert "POP3> STLS" in result.stdout and "POP3> USER" in result.stdout
    text = mbox.read_text()
    assert "Subject: pop 1" in text and "Subject: pop 2" in text
    assert "\n.starts with a dot\n" in text, "byte-stuffing undone by the client: the line is the original"
    assert lab.messages(BOB) == [], "POP3: download and delete (at QUIT)"
    result = run([require_tool("fetchmail"), "-f", str(rc), "--nosyslog"], home)
    assert result.returncode == 1, "nothing new: fetchmail says so with exit code 1"


# --- mbsync (isync): two-way synchronisation over imaps ---


def pinned_certificate(lab: smtplab.Lab, home: Path, host: smtplab.Host) -> Path:
    """The recipe of docs/terminal.md: fetch the server's certificate, verified by the lab CA and name."""
    result = subprocess.run(
        [require_tool("openssl"), "s_client", "-connect", f"{host.address}:{host.ports['imaps']}", "-CAfile",
         lab.ca_file, "-verify_hostname", host.name, "-verify_return_error"],
        input="", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", result.stdout, re.DOTALL)
    assert pem is not None, result.stdout
    path = home / f"{host.name}.crt"
    path.write_text(pem.group(0))
    return path


@pytest.mark.tool("mbsync")
@pytest.mark.tool("openssl")
def test_mbsync_syncs_both_ways(lab: smtplab.Lab, home: Path) -> None:
    lab.send(ALICE, BOB, "to sync", "one")
    host = lab.imap_host(BOB)
    certificate = pinned_certificate(lab, home, host)
    local = home / "Mail"
    rc = write_config(home / ".mbsyncrc", f"""IMAPAccount lab
Host {host.address}
Port {host.ports['imaps']}
User {BOB}
Pass {lab.users[BOB].password}
SSLType IMAPS
CertificateFile {certificate}

IMAPStore lab-remote
Account lab

MaildirStore lab-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel lab
Far :lab-remote:
Near :lab-local:
Patterns INBOX
Create Near
SyncState *
Sync All
""")
    mbsync = require_tool("mbsync")
    local.mkdir()
    result = run([mbsync, "-c", str(rc), "lab"], home)
    assert result.returncode == 0, result.stdout + result.stderr
    [name] = os.listdir(local / "INBOX" / "new")
    assert b"Subject: to sync" in (local / "INBOX" / "new" / name).read_bytes()
    # Flag it locally (Maildir: the F flag in the file name), and a second message arrives on the server.
    os.rename(local / "INBOX" / "new" / name, local / "INBOX" / "cur" / f"{name.split(':')[0]}:2,F")
    lab.send(ALICE, BOB, "arrived later", "two")
    result = run([mbsync, "-c", str(rc), "lab"], home)
    assert result.returncode == 0, result.stdout + result.stderr
    on_server = imap_messages(lab)
    assert b"\\Flagged" in on_server["to sync"][1], "the flag set locally reached the server"
    assert b"\\Flagged" not in on_server["arrived later"][1]
    synced = [p.read_bytes() for p in (local / "INBOX").glob("*/*")]
    assert any(b"Subject: arrived later" in data for data in synced), "the server's new mail reached the client"


# --- mutt: send (STARTTLS), read over imaps, save to a folder: the copy is byte for byte the original ---


def run_in_terminal(args: list[str], home: Path, timeout: float = 120) -> tuple[int, bytes]:
    """Run a full-screen program in a pseudo-terminal until it exits; return its code and screen output."""
    master, slave = pty.openpty()
    env = {**os.environ, "HOME": str(home), "TERM": "vt100", "LINES": "24", "COLUMNS": "100"}
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=home)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"{args[0]} did not finish; screen: {output[-2000:]!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the program ended and closed the terminal
                break
            if not chunk:
                break
            output += chunk
        return process.wait(30), output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)


@pytest.mark.tool("mutt")
def test_mutt_sends_reads_and_saves_a_byte_identical_copy(lab: smtplab.Lab, home: Path) -> None:
    mutt = require_tool("mutt")
    sub, imap = lab.submission_host(ALICE), lab.imap_host(BOB)
    send_rc = write_config(home / "muttrc-alice", f"""set from="{ALICE}" realname="Alice"
set smtp_url="smtp://alice%40example.org@{sub.address}:{sub.ports['submission']}/"
set smtp_pass="{lab.users[ALICE].password}"
set ssl_starttls=yes ssl_force_tls=yes
set ssl_ca_certificates_file="{lab.ca_file}"
set record=""
""")
    (home / "message.txt").write_text(draft("from mutt", "Hello from mutt.\n.a line with a dot\n"))
    result = run([mutt, "-n", "-F", str(send_rc), "-H", "message.txt"], home, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    lab.wait_for_delivery()
    [message] = lab.messages(BOB)
    assert message["Subject"] == "from mutt", "the headers of the draft are headers, not body text"
    assert message.get_content() == "Hello from mutt.\n.a line with a dot\n"
    original, _ = imap_messages(lab)["from mutt"]

    read_rc = write_config(home / "muttrc-bob", f"""set folder="imaps://bob%40example.net@{imap.address}:{imap.ports['imaps']}/"
set spoolfile="+INBOX" imap_pass="{lab.users[BOB].password}"
set ssl_ca_certificates_file="{lab.ca_file}"
set record="" confirmcreate=no confirmappend=no delete=yes quit=yes move=no
set header_cache="" message_cachedir=""
""")
    code, screen = run_in_terminal([mutt, "-n", "-F", str(read_rc), "-e",
                                    'push "<save-message>=Archive<enter><quit>"'], home)
    assert code == 0, screen[-2000:]
    assert b"from mutt" in screen, "mutt listed the message"
    assert b"does not exist. Create it?" not in screen, "no ~/Mail prompt: the folders are on the IMAP server"
    archived = imap_messages(lab, "Archive")
    assert archived["from mutt"][0] == original, "the saved copy is the message, byte for byte (IMAP COPY)"
    assert imap_messages(lab) == {}, "save moves: the INBOX copy was deleted and expunged"


# --- curl: SMTP, IMAP and POP3 URLs, with STARTTLS and with implicit TLS ---


@pytest.mark.tool("curl")
def test_curl_speaks_smtp_imap_and_pop3(lab: smtplab.Lab, home: Path) -> None:
    curl = [require_tool("curl"), "--silent", "--show-error", "--cacert", lab.ca_file]
    sub, imap = lab.submission_host(ALICE), lab.imap_host(BOB)
    alice = f"{ALICE}:{lab.users[ALICE].password}"
    bob = f"{BOB}:{lab.users[BOB].password}"
    (home / "message.txt").write_text(draft("from curl", "Hello over smtps.\n"))
    sent = run([*curl, "--user", alice, "--mail-from", ALICE, "--mail-rcpt", BOB, "--upload-file", "message.txt",
                "--crlf", f"smtps://{sub.address}:{sub.ports['submissions']}"], home)
    assert sent.returncode == 0, sent.stderr
    lab.wait_for_delivery()
    assert [m["Subject"] for m in lab.messages(BOB)] == ["from curl"]

    search = run([*curl, "--ssl-reqd", "--user", bob, f"imap://{imap.address}:{imap.ports['imap']}/INBOX?ALL"], home)
    assert search.stdout.strip() == "* SEARCH 1", search.stderr
    fetched = run([*curl, "--user", bob, f"imaps://{imap.address}:{imap.ports['imaps']}/INBOX;UID=1"], home)
    assert "Subject: from curl" in fetched.stdout and "Hello over smtps." in fetched.stdout, fetched.stderr

    listing = run([*curl, "--ssl-reqd", "--user", bob, f"pop3://{imap.address}:{imap.ports['pop3']}/"], home)
    [line] = listing.stdout.splitlines()
    assert re.fullmatch(r"1 \d+", line), listing.stderr
    retrieved = run([*curl, "--user", bob, f"pop3s://{imap.address}:{imap.ports['pop3s']}/1"], home)
    assert "Subject: from curl" in retrieved.stdout, retrieved.stderr
    assert len(retrieved.stdout.encode().replace(b"\n", b"\r\n")) == int(line.split()[1]), "RETR sends LIST's size"
    refused = run([*curl, "--user", bob, f"pop3://{imap.address}:{imap.ports['pop3']}/"], home)
    assert refused.returncode != 0, "without --ssl-reqd curl would send the password in clear: the server refuses"


# --- Python's own clients on the implicit-TLS ports ---


def test_python_clients_on_the_implicit_tls_ports(lab: smtplab.Lab) -> None:
    context = ssl.create_default_context(cafile=lab.ca_file)
    sub, imap = lab.submission_host(ALICE), lab.imap_host(BOB)
    with smtplib.SMTP_SSL(sub.address, sub.ports["submissions"], context=context, timeout=10) as client:
        client.ehlo("client.local")
        assert "starttls" not in client.esmtp_features, "no STARTTLS inside TLS"
        client.login(ALICE, lab.users[ALICE].password)
        client.sendmail(ALICE, [BOB], draft("smtps").replace("\n", "\r\n").encode())
    lab.wait_for_delivery()
    with imaplib.IMAP4_SSL(imap.address, imap.ports["imaps"], ssl_context=context, timeout=10) as client:
        client.login(BOB, lab.users[BOB].password)
        client.select("INBOX")
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: smtps" in data[0][1]
    client3 = poplib.POP3_SSL(imap.address, imap.ports["pop3s"], context=context, timeout=10)
    client3.user(BOB)
    client3.pass_(lab.users[BOB].password)
    assert b"Subject: smtps" in b"\r\n".join(client3.retr(1)[1])
    client3.quit()
    for name in ("submissions", "imaps", "pop3s"):
        host = sub if name == "submissions" else imap
        with socket.create_connection((host.address, host.ports[name]), timeout=10) as plain:
            plain.sendall(b"QUIT\r\n")  # clear text where a TLS ClientHello belongs
            answer = plain.recv(100)
            assert answer == b"" or answer[:1] == b"\x15", f"{name}: only a TLS alert, or a close ({answer!r})"
        with socket.create_connection((host.address, host.ports[name]), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host.name) as tls:
                assert tls.recv(100)[:1] in (b"2", b"+", b"*"), f"{name} still serves after the bad client"


# --- a real Postfix relaying into the lab's MX ---


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def open_lab() -> Iterator[smtplab.Lab]:
    """The default lab, open to other Unix users: Postfix's smtp client runs as the user `postfix`."""
    scenario = smtplab.Scenario.default().to_dict()
    scenario["options"] = {**scenario.get("options", {}), "allow_other_users": True}
    with smtplab.start(scenario) as running:
        yield running


@pytest.fixture
def postfix(open_lab: smtplab.Lab) -> Iterator[int]:
    """A private Postfix instance on 127.0.0.1 whose relayhost is the lab's mx1; yields its SMTP port."""
    lab = open_lab
    binary = require_tool("postfix")
    if os.geteuid() != 0:
        pytest.skip("a Postfix instance needs root to start its master")
    mx = lab.host("mx1")
    port = free_port()
    # Postfix's daemons run as the postfix user: its directories must be reachable, unlike pytest's tmp_path.
    root = Path(tempfile.mkdtemp(prefix="smtplab-postfix-"))
    root.chmod(0o755)
    etc, queue, data = root / "etc", root / "queue", root / "data"
    for path in (etc, queue, data):
        path.mkdir(parents=True)
    shutil.chown(data, "postfix")
    master = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line[:1] not in ("#", " ", "\t") and len(fields) >= 8:
            fields[4] = "n"  # no chroot: this instance's queue has no copy of /etc
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{port}"
            line = "  ".join(fields)
        master.append(line)
    (etc / "master.cf").write_text("\n".join(master) + "\n")
    (etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [{mx.address}]:{mx.ports['smtp']}
smtp_dns_support_level = disabled
smtp_tls_security_level = verify
smtp_tls_CAfile = {lab.ca_file}
smtp_tls_verify_cert_match = {mx.name}
alias_maps =
alias_database =
local_recipient_maps =
""")
    started = subprocess.run([binary, "-c", str(etc), "start"], capture_output=True, text=True, timeout=120)
    log = root / "maillog"
    assert started.returncode == 0, started.stderr + (log.read_text() if log.exists() else "")
    try:
        yield port
    finally:
        subprocess.run([binary, "-c", str(etc), "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.tool("postfix")
def test_postfix_relays_into_the_lab_mx(open_lab: smtplab.Lab, postfix: int) -> None:
    lab = open_lab
    subject = f"via postfix {secrets.token_hex(3)}"
    delivered = threading.Event()

    def watch(event: smtplab.TraceEvent) -> None:
        if event.host == "mx1.example.net" and event.direction == "S" and "delivered as" in event.text:
            delivered.set()

    lab.trace.subscribe(watch)
    with smtplib.SMTP("127.0.0.1", postfix, local_hostname="client.local", timeout=30) as client:
        client.sendmail("carol@relay.test", [BOB], f"Subject: {subject}\r\n\r\nrelayed by Postfix\r\n".encode())
    assert delivered.wait(120), "Postfix did not deliver into the lab's MX"
    [message] = lab.messages(BOB)
    assert message["Subject"] == subject
    assert "by mx1.example.net" in message.get_all("Received")[0] and "with ESMTPS" in message.get_all("Received")[0]
    said = [e.text for e in lab.trace.events() if e.host == "mx1.example.net" and e.direction == "C"]
    assert said[:3] == ["EHLO relay.test", "STARTTLS", "EHLO relay.test"], "STARTTLS, verified against the lab CA"
