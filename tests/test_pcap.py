"""`lab.pcap()` and `python -m smtplab pcap`: captures that tshark dissects, decrypts with the key log, and
finds correct (no TCP analysis warnings: the handshakes, sequence and acknowledgement numbers are right)."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import dns.message
import dns.query
import pytest
from conftest import require_tool

import smtplab
from smtplab.control import ControlServer
from smtplab.net.wire import LIMIT
from smtplab.views.pcap import Capture, summary

ALICE = "alice@example.org"
BOB = "bob@example.net"


def tshark(capture: Capture, display_filter: str, *fields: str, keys: bool = True,
           options: tuple[str, ...] = ()) -> list[list[str]]:
    """The frames of `capture` that match `display_filter`, as rows of `fields` (frame numbers by default)."""
    program = require_tool("tshark")
    args = [program, "-n", *capture.tshark_args(keys=keys), *options, "-Y", display_filter, "-T", "fields"]
    for field in fields or ("frame.number",):
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def numbers(rows: list[list[str]]) -> list[int]:
    return [int(row[0]) for row in rows]


@pytest.fixture
def traffic(lab: smtplab.Lab, tmp_path: Path) -> tuple[smtplab.Lab, smtplab.SendResult, Capture]:
    """A message submitted (STARTTLS + AUTH), relayed (STARTTLS), read over IMAP (STARTTLS), one DNS question
    over TCP; the capture of it all."""
    # First: the DNS server has long seen this connection end by the time the capture is written.
    query = dns.message.make_query("example.net", "MX")
    assert dns.query.tcp(query, lab.dns.address, port=lab.dns.port, timeout=10).answer
    sent = lab.send(ALICE, BOB, "wire lesson", "Hello over the wire\n")
    imap = lab.imap(BOB)
    imap.select("INBOX")
    imap.fetch("1", "(RFC822)")
    imap.logout()
    for conn in lab.trace.connections("smtp") + lab.trace.connections("imap"):
        wait_for_close(lab, conn)
    # The server's session may end before its TCP connection does (IMAP after LOGOUT waits for the client).
    for conn in [c for protocol in ("smtp", "imap", "dns") for c in lab.trace.connections(protocol)]:
        tap = lab.wire(conn)
        assert tap.transport == "udp" or tap.wait_closed(30), f"{conn} still open"
    return lab, sent, lab.pcap(tmp_path / "lab.pcapng")


def wait_for_close(lab: smtplab.Lab, conn: str, timeout: float = 30.0) -> None:
    """Block until the server recorded the end of connection `conn` (it learns of a client's close a moment later)."""
    closed = threading.Event()

    def listener(event: smtplab.TraceEvent) -> None:
        if event.conn == conn and event.kind == "close":
            closed.set()

    lab.trace.subscribe(listener)
    try:
        if not lab.trace.filter(conn=conn, kind="close"):
            assert closed.wait(timeout), f"{conn} never closed"
    finally:
        lab.trace.unsubscribe(listener)


def test_tshark_dissects_dns_smtp_and_imap(traffic: tuple[smtplab.Lab, smtplab.SendResult, Capture]) -> None:
    lab, _, capture = traffic
    pcap, keylog = capture  # unpacks as the two paths
    assert pcap.exists() and keylog == pcap.with_suffix(".keylog") and keylog.exists()
    mx_questions = tshark(capture, 'dns.qry.name == "example.net" && dns.qry.type == 15', "udp.srcport", "tcp.srcport")
    assert any(row[0] for row in mx_questions), "the relay's MX question over UDP"
    assert any(row[1] for row in mx_questions), "the question over TCP"
    assert tshark(capture, "dns.flags.response == 1 && dns.a == 127.0.2.11")
    greetings = tshark(capture, "smtp.response.code == 220", "ip.src", "smtp.rsp.parameter")
    assert any(row[0] == lab.host("smtp.example.org").address for row in greetings)
    assert any(row[0] == lab.host("mx1.example.net").address for row in greetings)
    assert tshark(capture, 'imap.request.command == "STARTTLS"')
    assert tshark(capture, 'imap.request.command == "LOGIN"')  # inside TLS: decrypted
    assert tshark(capture, 'imf.subject == "wire lesson"')  # the message, in SMTP DATA and IMAP FETCH


def test_smtp_after_starttls_is_only_tls_without_the_key_log(
        traffic: tuple[smtplab.Lab, smtplab.SendResult, Capture]) -> None:
    lab, _, capture = traffic
    mail = tshark(capture, 'upper(smtp.req.command) == "MAIL"', "frame.number", "smtp.req.parameter", "ip.src")
    submission = [row for row in mail if row[2] == "127.0.0.1"]  # the notebook's client, not the relay
    assert submission and f"<{ALICE}>" in submission[0][1]
    assert len(mail) == 2, "submission and relay both sent MAIL, both inside TLS"
    assert not tshark(capture, 'upper(smtp.req.command) == "MAIL"', keys=False)
    frame = submission[0][0]
    protocols = tshark(capture, f"frame.number == {frame}", "frame.protocols", keys=False)
    assert protocols[0][0].endswith(":tls"), protocols
    with_keys = tshark(capture, f"frame.number == {frame}", "frame.protocols")
    assert with_keys[0][0].endswith(":tls:smtp"), with_keys
    # STARTTLS itself is clear text, so is the 220 that answers it.
    assert tshark(capture, 'smtp.command_line matches "(?i)^starttls\\r"', keys=False)
    auth = tshark(capture, 'upper(smtp.req.command) == "AUTH"', "smtp.req.parameter")
    mechanism, token = auth[0][0].split()
    assert mechanism == "PLAIN"
    assert base64.b64decode(token) == f"\0{ALICE}\0{lab.users[ALICE].password}".encode()


def test_sequence_numbers_are_right_and_every_connection_closes(
        traffic: tuple[smtplab.Lab, smtplab.SendResult, Capture]) -> None:
    _, _, capture = traffic
    assert tshark(capture, "tcp") and not tshark(capture, "tcp.analysis.flags", "frame.number", "_ws.expert.message")
    assert not tshark(capture, "_ws.malformed")
    checksums = ("-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE")
    good = tshark(capture, 'ip.checksum.status == "Good" && (tcp.checksum.status == "Good" || '
                  'udp.checksum.status == "Good")', options=checksums)
    assert len(good) == capture.packets, "every IP, TCP and UDP checksum is right"
    streams = {row[0] for row in tshark(capture, "tcp", "tcp.stream")}
    syn = tshark(capture, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "tcp.stream")
    synack = tshark(capture, "tcp.flags.syn == 1 && tcp.flags.ack == 1", "tcp.stream")
    assert {row[0] for row in syn} == {row[0] for row in synack} == streams
    ended = {row[0] for row in tshark(capture, "tcp.flags.fin == 1 || tcp.flags.reset == 1", "tcp.stream")}
    assert ended == streams, "every connection ended (FIN or RST) before the capture was written"
    assert len(streams) == 4  # submission, relay, IMAP, DNS over TCP


def test_files_are_private_and_the_key_log_holds_only_the_captured_sessions(
        traffic: tuple[smtplab.Lab, smtplab.SendResult, Capture]) -> None:
    lab, _, capture = traffic
    for path in capture:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    randoms = {row[0] for row in tshark(capture, "tls.handshake.type == 1", "tls.handshake.random", keys=False)}
    lines = [line.split() for line in capture.keylog.read_text().splitlines() if not line.startswith("#")]
    assert lines and {line[1] for line in lines} == {r.replace(":", "") for r in randoms}
    assert capture.sessions == len(randoms) == 3  # submission, relay, IMAP
    assert {line[0] for line in lines} >= {"CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    lab_keylog = lab.ca.keylog()
    assert stat.S_IMODE(lab_keylog.stat().st_mode) == 0o600


def test_a_message_capture_holds_that_message_only(lab: smtplab.Lab, tmp_path: Path) -> None:
    first = lab.send(ALICE, BOB, "the first", "one\n")
    second = lab.send(ALICE, "carol@example.com" if "carol@example.com" in lab.users else BOB, "the second", "two\n")
    whole = lab.pcap(tmp_path / "all.pcapng")
    one = lab.pcap(tmp_path / "first.pcapng", message=first)
    assert tshark(whole, 'imf.subject == "the second"')
    assert tshark(one, 'imf.subject == "the first"')
    assert not tshark(one, 'imf.subject == "the second"')
    assert tshark(one, 'dns.qry.name == "example.net" && dns.qry.type == 15'), "the relay's MX lookup"
    assert 0 < one.connections < whole.connections and one.sessions == 2  # its submission and its relay
    by_id = lab.pcap(tmp_path / "by-id.pcapng", message=second.queue_id)
    assert tshark(by_id, 'imf.subject == "the second"') and not tshark(by_id, 'imf.subject == "the first"')
    with pytest.raises(smtplab.SmtpLabError, match="no traffic of message 'NOSUCHID'"):
        lab.pcap(tmp_path / "none.pcapng", message="NOSUCHID")
    with pytest.raises(smtplab.SmtpLabError, match="cannot write .*a-file.*give a path in a folder you can write"):
        (tmp_path / "a-file").write_text("")
        lab.pcap(tmp_path / "a-file" / "x.pcapng")
    lab.stop()
    with pytest.raises(smtplab.LabNotRunning):
        lab.pcap(tmp_path / "late.pcapng")


def test_a_connection_longer_than_the_tap_keeps_says_so(lab: smtplab.Lab, tmp_path: Path) -> None:
    big = "x" * 99 + "\n"
    lab.send(ALICE, BOB, "a big one", big * (LIMIT // 100 + 500))
    capture = lab.pcap(tmp_path / "big.pcapng")
    comments = tshark(capture, "frame.comment", "frame.comment")
    assert comments and "did not keep" in comments[0][0]
    assert not tshark(capture, "tcp.analysis.flags")
    lengths = [int(row[0]) for row in tshark(capture, "tcp.len > 0", "tcp.len")]
    assert max(lengths) <= 65_000 and sum(lengths) > LIMIT


def test_summary_reads_the_capture_without_tshark(traffic: tuple[smtplab.Lab, smtplab.SendResult, Capture]) -> None:
    lab, _, capture = traffic
    text = summary(capture.pcap, capture.decode_as)
    lines = text.splitlines()
    assert lines[0].split()[0] == "1" and "[S]" in lines[0]
    assert re.search(r"SMTP +220 smtp\.example\.org", text)
    assert re.search(r"SMTP +(?i:ehlo) ", text) and "STARTTLS" in text
    assert "TLS   encrypted" in text and "DNS" in text
    assert f"<{ALICE}>" not in text, "MAIL FROM crossed inside TLS"
    assert lab.users[ALICE].password not in text


def test_cli_writes_a_capture_of_a_running_lab(lab: smtplab.Lab, tmp_path: Path) -> None:
    control = ControlServer(lab)
    lab.services.call(control.start())
    control.write_file(lab.directory / "control.json")
    try:
        sent = lab.send(ALICE, BOB, "from the terminal", "hi\n")
        run = [sys.executable, "-m", "smtplab", "pcap"]
        result = subprocess.run([*run, "capture.pcapng", "--dir", str(lab.directory), "--message", sent.queue_id],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        pcap = tmp_path / "capture.pcapng"
        assert f"wrote {pcap}" in result.stdout and f"tls.keylog_file:{tmp_path / 'capture.keylog'}" in result.stdout
        capture = Capture(pcap, tmp_path / "capture.keylog", lab.pcap(tmp_path / "x.pcapng").decode_as)
        assert tshark(capture, 'imf.subject == "from the terminal"')
        result = subprocess.run([*run, str(tmp_path / "n.pcapng"), "--dir", str(lab.directory), "--message", "NOPE"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "no traffic of message 'NOPE'" in result.stderr
    finally:
        lab.services.call(control.stop())


def test_an_implicit_tls_server_is_tapped_below_tls(tmp_path: Path) -> None:
    """wire.start_server: what a POP3S, IMAPS or SMTPS (RFC 8314) service of the lab uses to be captured too."""
    import asyncio
    import socket

    from smtplab.net.tls import LabCA
    from smtplab.net.wire import WireTap, start_server
    from smtplab.views.pcap import write_taps

    ca = LabCA(tmp_path / "tls")
    taps: list[WireTap] = []

    def new_tap() -> WireTap:
        taps.append(WireTap("pop3s-1", "pop.example.org", service="pop3s"))
        return taps[-1]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK POP3 ready\r\n")
        line = await reader.readline()
        writer.write(b"+OK " + line)
        await writer.drain()
        writer.close()

    def client(port: int) -> bytes:
        context = ca.client_context()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="pop.example.org") as tls:
            greeting = tls.recv(100)
            tls.sendall(b"USER alice@example.org\r\n")
            return greeting + tls.recv(100)

    async def run() -> bytes:
        server = await start_server(serve, "127.0.0.1", 0, ssl_context=ca.server_context("pop.example.org"),
                                    new_tap=new_tap)
        port = server.sockets[0].getsockname()[1]
        try:
            return await asyncio.get_running_loop().run_in_executor(None, client, port)
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(run()) == b"+OK POP3 ready\r\n+OK USER alice@example.org\r\n"
    ca.close()
    (tap,) = taps
    assert tap.chunks[0].direction == "C" and tap.chunks[0].data[:1] == b"\x16", "the ClientHello, not plain text"
    assert b"USER" not in b"".join(chunk.data for chunk in tap.chunks)
    port = tap.server[1]
    capture = write_taps(taps, tmp_path / "pop3s.pcapng", keylog_source=ca.keylog(),
                         decode_as=(f"tcp.port=={port},tls", f"tls.port=={port},pop"))
    assert capture.sessions == 1
    assert tshark(capture, 'pop.request.command == "USER"', "pop.request.parameter") == [["alice@example.org"]]
    assert not tshark(capture, 'pop.request.command == "USER"', keys=False)
    assert not tshark(capture, "tcp.analysis.flags")
