"""The SMTP trace records what aiosmtpd read: one parser, bounded work on a line without an end."""

from __future__ import annotations

import socket
import tracemalloc

import smtplab
from smtplab.trace.events import ClientLine, SmtpData


def _reply(stream) -> bytes:  # type: ignore[no-untyped-def]
    while True:
        line = stream.readline()
        if line[3:4] != b"-":
            return line


def test_a_data_line_without_crlf_is_drained_not_kept(lab: smtplab.Lab) -> None:
    """8 MiB of one DATA line without a line end: the server answers 500 at the dot (RFC 5321 §4.5.3.1.6), and
    neither its reader nor the trace holds the line (issue 14: 128 MB took 51 s and 448 MB)."""
    mx = lab.host("mx1.example.net")
    chunk = b"x" * 65536
    with socket.create_connection((mx.address, mx.ports["smtp"]), timeout=30) as sock:
        stream = sock.makefile("rb")
        _reply(stream)
        sock.sendall(b"EHLO big.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
        assert [_reply(stream)[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        tracemalloc.start()
        try:
            for _ in range(128):
                sock.sendall(chunk)
            sock.sendall(b"\r\n.\r\n")
            final = _reply(stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert final.startswith(b"500"), final
        sock.sendall(b"QUIT\r\n")
        _reply(stream)
    # Less than the line itself: the trace keeps its first megabyte (the code before held 26 MB here).
    assert peak < 8 * 1024 * 1024, f"{peak} bytes held for an 8 MiB line"
    [data] = lab.trace.filter(kind="data", host="mx1.example.net")
    assert isinstance(data.payload, SmtpData) and data.payload.size == 128 * 65536 + 2
    assert data.payload.kept <= 1_000_000
    assert lab.messages("bob@example.net") == []


def test_an_over_long_command_line_is_traced_once(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1.example.net")
    with socket.create_connection((mx.address, mx.ports["smtp"]), timeout=30) as sock:
        stream = sock.makefile("rb")
        _reply(stream)
        sock.sendall(b"EHLO " + b"a" * 5000 + b"\r\nNOOP\r\n")
        assert _reply(stream).startswith(b"500")
        assert _reply(stream).startswith(b"250")
        sock.sendall(b"QUIT\r\n")
        _reply(stream)
    lines = [e for e in lab.trace.filter(host="mx1.example.net") if e.kind == "line" and e.direction == "C"]
    assert isinstance(lines[0].payload, ClientLine) and not lines[0].payload.complete
    assert "5007 bytes" in lines[0].text
    assert [e.text for e in lines[1:]] == ["NOOP", "QUIT"]


def test_input_that_ends_mid_line_is_traced(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1.example.net")
    with socket.create_connection((mx.address, mx.ports["smtp"]), timeout=30) as sock:
        stream = sock.makefile("rb")
        _reply(stream)
        sock.sendall(b"NOOP\r\nHELO half")
        assert _reply(stream).startswith(b"250")
        sock.shutdown(socket.SHUT_WR)
        assert stream.read() == b""
    lab.trace.filter(host="mx1.example.net")
    unfinished = [e for e in lab.trace.filter(host="mx1.example.net") if isinstance(e.payload, ClientLine)]
    assert [(e.payload.text, e.payload.complete) for e in unfinished] == [("HELO half", False)]


def test_an_auth_answer_over_the_line_limit_is_refused_by_its_type(lab: smtplab.Lab) -> None:
    """The reader raises LineTooLong (not asyncio's bare ValueError), which the handler answers by type."""
    import smtplib

    from smtplab.net import replies

    host = lab.host("smtp.example.org")
    with smtplib.SMTP(host.address, host.ports["submission"], timeout=30) as client:
        client.starttls(context=lab.services.client_context)
        client.ehlo()
        code, _ = client.docmd("AUTH", "LOGIN")
        assert code == 334
        code, message = client.docmd("A" * 3000)
    assert f"{code} {message.decode()}" == replies.AUTH_LINE_TOO_LONG  # RFC 4954 section 6
    too_long = [e for e in lab.trace.filter(host="smtp.example.org")
                if isinstance(e.payload, ClientLine) and not e.payload.complete]
    assert len(too_long) == 1
