"""Bad input: the lab's servers answer garbage, floods, lies and hang-ups with the right reply, and keep serving.

The SMTP corpus talks raw bytes to the submission host (smtp.example.org, port "submission") and to an MX
(mx1.example.net, port "smtp"). Every reply line is checked on the way in: ASCII only, CRLF, and an
enhanced status code (RFC 3463) on every 2xx/4xx/5xx reply except the greeting and the answer to
EHLO/HELO (RFC 2034). After each case the same server completes a normal transaction for a fresh
client, and bob's mailbox holds exactly what was meant to arrive: nothing half-delivered, nothing twice.

IMAP and DNS get their own, shorter corpora at the end of the file.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import make_msgid

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import pytest
from conftest import IN_CI, require_tool

import smtplab
from smtplab.net import replies
from smtplab.net.replies import Reply

SUBMISSION, MX = "submission", "smtp"
HOSTS = {SUBMISSION: "smtp.example.org", MX: "mx1.example.net"}
BOTH = (SUBMISSION, MX)
SENDER = {SUBMISSION: "alice@example.org", MX: "carol@example.org"}
CLOSED = "<closed>"  # expected instead of a reply: the server hung up
BIG = 10 * 1024 * 1024  # the lab's SIZE limit
CORPUS_ID = re.compile(rb"Message-ID: <[^>]*@corpus\.test>")


@pytest.fixture(scope="module")
def lab() -> Iterator[smtplab.Lab]:
    """One lab for the whole corpus: each case must leave it serving, which is the point."""
    with smtplab.start() as running:
        yield running


# --- a byte-exact SMTP client ----------------------------------------------------------------------


class Wire:
    """Write exactly the bytes given; read replies line by line and check each one."""

    def __init__(self, lab: smtplab.Lab, service: str, timeout: float = 15.0) -> None:
        self.lab = lab
        self.service = service
        self.host = lab.host(HOSTS[service])
        self.sock: socket.socket = socket.create_connection((self.host.address, self.host.ports[service]), timeout)
        self.buffer = b""
        self.answering = "greeting"
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.answering = data.split(b" ", 1)[0].split(b"\r", 1)[0].upper().decode("ascii", "replace")
        self.sock.sendall(data)

    def reply(self) -> str:
        """Read one whole reply and return its last line (CLOSED if the server hung up)."""
        while True:
            while b"\n" not in self.buffer:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    assert not self.buffer, f"half a reply before the server hung up: {self.buffer!r}"
                    return CLOSED
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\n", 1)
            line = self.check(raw + b"\n")
            if line[3:4] != "-":
                return line

    def check(self, raw: bytes) -> str:
        assert raw.endswith(b"\r\n"), f"reply line without CRLF: {raw!r}"
        body = raw[:-2]
        assert all(0x20 <= b <= 0x7E for b in body), f"reply with control or 8-bit characters: {body!r}"
        line = body.decode("ascii")
        code = line[:3]
        assert code.isdigit() and line[3:4] in (" ", "-"), f"not an SMTP reply: {line!r}"
        exempt = self.answering in ("greeting", "EHLO", "HELO")
        if code[0] in "245" and line[3] == " " and not exempt:
            assert Reply.parse([line]).enhanced, f"reply without an enhanced status code: {line!r}"
        return line

    def command(self, data: bytes) -> str:
        self.send(data)
        return self.reply()

    def starttls(self) -> None:
        assert self.command(b"STARTTLS\r\n").startswith("220 2.0.0")
        self.sock = self.lab.services.client_context.wrap_socket(self.sock, server_hostname=self.host.name)

    def closed(self, within: float = 10.0) -> bool:
        """True when the server closes the connection (within `within` seconds)."""
        self.sock.settimeout(within)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def login_token(lab: smtplab.Lab) -> bytes:
    return base64.b64encode(b"\0alice@example.org\0" + lab.users["alice@example.org"].password.encode())


def prepare(wire: Wire, setup: str) -> None:
    """Bring the session to `setup`: none, hello, tls, ready (authenticated on submission), mail, rcpt."""
    if setup == "none":
        return
    assert wire.command(b"EHLO client.test\r\n").startswith("250 ")
    if setup == "hello":
        return
    if wire.service == SUBMISSION or setup == "tls":
        wire.starttls()
        assert wire.command(b"EHLO client.test\r\n").startswith("250 ")
    if setup == "tls":
        return
    if wire.service == SUBMISSION:
        assert wire.command(b"AUTH PLAIN " + login_token(wire.lab) + b"\r\n").startswith("235 2.7.0")
    if setup == "ready":
        return
    assert wire.command(f"MAIL FROM:<{SENDER[wire.service]}>\r\n".encode()).startswith("250 2.1.0")
    if setup == "mail":
        return
    assert wire.command(b"RCPT TO:<bob@example.net>\r\n").startswith("250 2.1.5")


def message(subject: str, body: bytes = b"hello\r\n", *, message_id: str | None = None) -> bytes:
    """A small message in wire form (CRLF, no final dot); a non-ASCII subject goes out as raw UTF-8."""
    message_id = message_id or make_msgid(domain="corpus.test")
    head = f"From: carol@example.org\r\nTo: bob@example.net\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\r\n"
    return head.encode() + body


def stored(lab: smtplab.Lab, subject: str, service: str) -> bytes:
    """The bytes bob's Maildir holds for the message with `subject` sent through `service`."""
    wanted = b"\r\nSubject: " + subject.encode() + b"\r\n"
    found = [raw for path in lab.directory.glob("mail/example.net/bob/*/*") if path.is_file()
             and wanted in (raw := path.read_bytes()) and (b"by smtp.example.org" in raw) == (service == SUBMISSION)]
    assert len(found) == 1, f"{len(found)} messages with subject {subject!r} via {service}"
    return found[0]


def body_kept(subject: str, expected: bytes) -> Callable[[smtplab.Lab, str], None]:
    def check(lab: smtplab.Lab, service: str) -> None:
        assert expected in stored(lab, subject, service)
    return check


# --- the corpus ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One kind of bad input: raw steps and the reply each one must get, or a function for the odd ones."""

    name: str
    setup: str = "ready"
    steps: tuple[tuple[bytes, str | dict[str, str]], ...] = ()
    run: Callable[[Wire], None] | None = None
    services: tuple[str, ...] = BOTH
    delivers: int = 0  # messages bob should receive from the case itself
    check: Callable[[smtplab.Lab, str], None] | None = None  # what bob received, byte for byte
    idle_timeout: float | None = None  # the servers' idle timeout while the case runs (seconds)


def expected_for(expect: str | dict[str, str], service: str) -> str:
    return expect[service] if isinstance(expect, dict) else expect


def run_steps(wire: Wire, steps: tuple[tuple[bytes, str | dict[str, str]], ...]) -> None:
    for data, expect in steps:
        # The corpus is built once; each run sends its own Message-ID, so every message is distinct.
        data = CORPUS_ID.sub(lambda _: f"Message-ID: {make_msgid(domain='corpus.test')}".encode(), data)
        expect = expected_for(expect, wire.service)
        got = wire.command(data)
        assert got.startswith(expect), f"{data[:80]!r}: expected {expect!r}, got {got!r}"


def data_steps(body: bytes, final: str, *, data_reply: str = "354") -> tuple[tuple[bytes, str], ...]:
    return ((b"DATA\r\n", data_reply), (body + b"\r\n.\r\n", final))


# The functions for cases that need more than "send this, expect that".

def pipelined_noop_flood(wire: Wire) -> None:
    wire.send(b"NOOP\r\n" * 1000)  # one write, 1000 commands (RFC 2920: the server answers in order)
    replies = [wire.reply() for _ in range(1000)]
    assert replies == ["250 2.0.0 OK"] * 1000
    assert wire.command(b"RSET\r\n") == "250 2.0.0 OK"


def pipelined_transaction(wire: Wire) -> None:
    sender = SENDER[wire.service]
    wire.send(f"RSET\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n".encode())
    assert [wire.reply() for _ in range(4)] == [
        "250 2.0.0 OK", "250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "354 End data with <CR><LF>.<CR><LF>",
    ]
    wire.send(message("pipelined") + b"\r\n.\r\n")
    assert wire.reply().startswith("250 2.0.0 OK")


def message_before_354(wire: Wire) -> None:
    # The client does not wait for 354 (RFC 2920 says it must): the server still takes it as the message.
    wire.send(b"DATA\r\n" + message("eager") + b"\r\n.\r\n")
    assert wire.reply().startswith("354")
    assert wire.reply().startswith("250 2.0.0 OK")


def thousand_recipients(wire: Wire) -> None:
    # RFC 5321 section 4.5.3.1.8: at least 100 recipients must be accepted; the lab stops there.
    wire.send(b"RCPT TO:<bob@example.net>\r\n" * 1000)
    replies = [wire.reply() for _ in range(1000)]
    assert replies[:100] == ["250 2.1.5 Recipient OK"] * 100
    assert set(replies[100:]) == {"452 4.5.3 Too many recipients"}
    wire.send(b"DATA\r\n")
    assert wire.reply().startswith("354")
    wire.send(message("a hundred times bob") + b"\r\n.\r\n")
    assert wire.reply().startswith("250 2.0.0 OK")  # and bob gets one copy (duplicates collapse)


def size_lie_small(wire: Wire) -> None:
    # RFC 1870: SIZE is an estimate; what counts is the server's limit, not what the client declared.
    assert wire.command(f"MAIL FROM:<{SENDER[wire.service]}> SIZE=100\r\n".encode()).startswith("250")
    assert wire.command(b"RCPT TO:<bob@example.net>\r\n").startswith("250")
    body = (b"x" * 78 + b"\r\n") * 2000  # 160 KB
    run_steps(wire, data_steps(message("bigger than declared", body), "250 2.0.0 OK"))


def size_lie_over_limit(wire: Wire) -> None:
    assert wire.command(f"MAIL FROM:<{SENDER[wire.service]}> SIZE=1000\r\n".encode()).startswith("250")
    assert wire.command(b"RCPT TO:<bob@example.net>\r\n").startswith("250")
    assert wire.command(b"DATA\r\n").startswith("354")
    line = b"y" * 998 + b"\r\n"
    chunk = line * 1024  # 1 MB
    wire.send(message("over the limit"))
    for _ in range(11):
        wire.send(chunk)
    assert wire.command(b"\r\n.\r\n").startswith("552 5.3.4")
    assert wire.command(b"NOOP\r\n") == "250 2.0.0 OK", "the connection still works"


def silent_client(wire: Wire) -> None:
    began = time.monotonic()
    assert wire.reply() == "421 4.4.2 " + wire.host.name + " Error: timeout exceeded, closing connection"
    assert wire.closed()
    assert time.monotonic() - began < 5


def one_byte_per_second(wire: Wire) -> None:
    began = time.monotonic()
    wire.sock.settimeout(1.0)
    for byte in b"NOOP\r\n":
        wire.sock.sendall(bytes([byte]))
        try:
            chunk = wire.sock.recv(65536)
        except TimeoutError:
            continue
        wire.buffer += chunk
        break
    wire.sock.settimeout(10)
    assert wire.reply().startswith("421 4.4.2"), "the idle timer is not reset by a trickle of bytes"
    assert wire.closed()
    assert time.monotonic() - began < 6


def silent_in_data(wire: Wire) -> None:
    assert wire.command(b"DATA\r\n").startswith("354")
    wire.send(message("never finished"))
    assert wire.reply().startswith("421 4.4.2")
    assert wire.closed()


def hang_up(partial: bytes, *, reset: bool = False) -> Callable[[Wire], None]:
    def run(wire: Wire) -> None:
        if partial:
            wire.sock.sendall(partial)
        if reset:  # RST instead of FIN
            wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        wire.close()
        time.sleep(0.05)  # the server notices; the health check below must still be served
    return run


def hang_up_mid_data(reset: bool) -> Callable[[Wire], None]:
    def run(wire: Wire) -> None:
        assert wire.command(b"DATA\r\n").startswith("354")
        hang_up(message("cut off") + b"half a line", reset=reset)(wire)
    return run


def starttls_then_garbage(wire: Wire) -> None:
    assert wire.command(b"STARTTLS\r\n").startswith("220 2.0.0")
    wire.sock.sendall(b"this is not a TLS ClientHello\r\n" * 4)
    assert wire.closed(), "a failed TLS handshake ends the connection"


def starttls_injection(wire: Wire) -> None:
    # CVE-2011-0411 style: plaintext pipelined after STARTTLS must be thrown away (RFC 3207 section 4.2).
    wire.send(b"STARTTLS\r\nRSET\r\n")
    assert wire.reply().startswith("220 2.0.0")
    wire.sock = wire.lab.services.client_context.wrap_socket(wire.sock, server_hostname=wire.host.name)
    assert wire.command(b"NOOP\r\n") == "250 2.0.0 OK"
    wire.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        wire.sock.recv(1024)  # no reply to the injected RSET ever comes


def too_many_unknown_commands(wire: Wire) -> None:
    for _ in range(4):
        assert wire.command(b"XYZZY\r\n").startswith("500 5.5.1")
    # RFC 5321 section 3.8: a server that hangs up says 421 first.
    assert wire.command(b"XYZZY\r\n").startswith("421 4.7.0")
    assert wire.closed()


def auth_login_bad_base64(wire: Wire) -> None:
    assert wire.command(b"AUTH LOGIN\r\n").startswith("334 ")
    assert wire.command(b"%%% not base64 %%%\r\n").startswith("501 5.5.2")
    assert wire.command(b"NOOP\r\n") == "250 2.0.0 OK"


def auth_aborted(wire: Wire) -> None:
    assert wire.command(b"AUTH PLAIN\r\n").startswith("334 ")
    assert wire.command(b"*\r\n").startswith("501 5.7.0")  # RFC 4954 section 4: "*" cancels


def auth_long_response(size: int) -> Callable[[Wire], None]:
    def run(wire: Wire) -> None:
        assert wire.command(b"AUTH PLAIN\r\n").startswith("334 ")
        # RFC 4954 section 6: too long for the mechanism's buffer, one reply for the whole line; nothing of
        # it may be read as a command (20 KB used to arrive in pieces, and the rest got a 500 of its own).
        assert wire.command(b"QUFB" * (size // 4) + b"\r\n") == "500 5.5.6 Authentication Exchange line is too long"
        assert wire.command(b"NOOP\r\n") == "250 2.0.0 OK"
        assert wire.command(b"RSET\r\n") == "250 2.0.0 OK"
    return run


def auth_login_prompts(wire: Wire) -> None:
    # The LOGIN prompts every client knows: base64 of "Username:" and "Password:", no trailing NUL.
    assert wire.command(b"AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6"
    assert wire.command(base64.b64encode(b"alice@example.org") + b"\r\n") == "334 UGFzc3dvcmQ6"
    password = wire.lab.users["alice@example.org"].password.encode()
    assert wire.command(base64.b64encode(password) + b"\r\n").startswith("235 2.7.0")


def text_line(octets: int) -> bytes:
    """A DATA text line of exactly `octets` octets, CRLF included."""
    return b"z" * (octets - 2) + b"\r\n"


PLAIN = base64.b64encode
CORPUS: list[Case] = [
    # RFC 5321 section 4.5.3.1: command lines up to 512 octets, text lines up to 1000, both with CRLF.
    Case("command line of 512 octets", steps=((b"NOOP " + b"x" * 505 + b"\r\n", "250 2.0.0"),)),
    Case("command line of 513 octets", steps=((b"NOOP " + b"x" * 506 + b"\r\n", "500 5.5.2"),
                                              (b"NOOP\r\n", "250 2.0.0"))),
    Case("command line of 100 KB", steps=((b"NOOP " + b"x" * 100_000 + b"\r\n", "500 5.5.2"),
                                          (b"NOOP\r\n", "250 2.0.0"))),
    # With DSN offered a RCPT line may be 500 characters longer (RFC 3461 section 4): 1,010 in all.
    Case("address too long for a command line", setup="mail",
         steps=((b"RCPT TO:<" + b"b" * 1100 + b"@example.net>\r\n", "500 5.5.2"),)),
    Case("text line of 1000 octets", setup="rcpt", delivers=1, check=body_kept("long line", text_line(1000)),
         steps=data_steps(message("long line", text_line(1000)), "250 2.0.0")),
    Case("text line of 1001 octets", setup="rcpt", steps=data_steps(message("too long", text_line(1001)), "500 5.5.2")
         + ((b"NOOP\r\n", "250 2.0.0"),)),
    Case("text line of 100 KB", setup="rcpt", steps=data_steps(message("far too long", text_line(100_000)), "500 5.5.2")),
    # NUL and other control bytes: refused in commands and addresses, never echoed back raw.
    Case("NUL inside a command verb", steps=((b"NO\x00OP\r\n", "500 5.5.1 Error: command \"NO?OP\""),)),
    Case("CR inside a command line", steps=((b"NOOP\rRSET\r\n", "500 5.5.1"),)),
    Case("NUL in an address", setup="mail", steps=((b"RCPT TO:<bo\x00b@example.net>\r\n", "553 5.1.3"),)),
    Case("escape byte in the sender", steps=((b"MAIL FROM:<a\x1bb@example.org>\r\n", "553 5.1.3"),)),
    Case("NUL in the EHLO name", setup="none", steps=((b"EHLO evil\x00.test\r\n", "501 5.5.2"),
                                                      (b"EHLO client.test\r\n", "250 "))),
    Case("NUL in the message", setup="rcpt", steps=data_steps(message("nul", b"a\x00b\r\n"), "554 5.6.0")),
    Case("other control bytes in the message", setup="rcpt", delivers=1,
         check=body_kept("controls", b"bell \x07 escape \x1b form feed \x0c delete \x7f\r\n"),
         steps=data_steps(message("controls", b"bell \x07 escape \x1b form feed \x0c delete \x7f\r\n"), "250 2.0.0")),
    Case("bare LF in the message", setup="rcpt", steps=data_steps(message("lf", b"one\ntwo\r\n"), "554 5.6.0")),
    Case("bare CR in the message", setup="rcpt", steps=data_steps(message("cr", b"one\rtwo\r\n"), "554 5.6.0")),
    Case("bare LF ending a command", steps=((b"NOOP\n", "250 2.0.0"),)),  # tolerated, as Postfix does
    # A header line without a colon (RFC 5322 §2.2): the submission host cannot DKIM-sign it; a permanent,
    # honest 554 5.6.0 (not a 451 retried forever), and the session goes on.
    Case("header line without a colon", setup="rcpt", services=(SUBMISSION,),
         steps=data_steps(b"this line is no header\r\n" + message("no colon"), "554 5.6.0")
         + ((f"MAIL FROM:<{SENDER[SUBMISSION]}>\r\n".encode(), "250 2.1.0"),)),
    # 8-bit without SMTPUTF8 (RFC 6531): refused in commands; in DATA it travels as 8BITMIME (RFC 6152).
    Case("8-bit address without SMTPUTF8", setup="mail",
         steps=(("RCPT TO:<bj\u00f6rn@example.net>\r\n".encode(), "553 5.6.7"),)),
    Case("8-bit sender without SMTPUTF8", steps=(("MAIL FROM:<bj\u00f6rn@example.org>\r\n".encode(), "553 5.6.7"),)),
    Case("address that is not UTF-8, with SMTPUTF8", steps=(
        (f"MAIL FROM:<{SENDER[SUBMISSION]}> SMTPUTF8\r\n".encode(), {SUBMISSION: "250 2.1.0", MX: "250 2.1.0"}),
        (b"RCPT TO:<bj\xf6rn@example.net>\r\n", "553 5.6.7"))),
    Case("8-bit EHLO name", setup="none", steps=(("EHLO caf\u00e9.test\r\n".encode(), "501 5.5.2"),
                                                 (b"EHLO client.test\r\n", "250 "))),
    Case("8-bit command verb", steps=(("N\u00d6OP\r\n".encode(), "500 5.5.2"),)),
    Case("binary garbage line", steps=((b"\xff\xfe\xfd\x80\x81\r\n", "500 5.5.2"), (b"NOOP\r\n", "250 2.0.0"))),
    Case("SMTPUTF8 with an argument", steps=((b"MAIL FROM:<carol@example.org> SMTPUTF8=yes\r\n", "501 5.5.4"),)),
    Case("8-bit header in the message", setup="rcpt", delivers=1,
         check=body_kept("caf\u00e9 \u2615", "Subject: caf\u00e9 \u2615\r\n".encode()),
         steps=data_steps(message("caf\u00e9 \u2615"), "250 2.0.0")),
    # Malformed addresses, quoted local parts, source routes.
    Case("unclosed angle bracket", setup="mail", steps=((b"RCPT TO:<bob@example.net\r\n", "553 5.1.3"),)),
    Case("two at signs", setup="mail", steps=((b"RCPT TO:<bob@@example.net>\r\n", "553 5.1.3"),)),
    Case("no domain", setup="mail", steps=((b"RCPT TO:<bob>\r\n", "501 5.1.3"),)),
    Case("empty recipient", setup="mail", steps=((b"RCPT TO:<>\r\n", "501 5.1.3"),)),
    Case("no address at all", setup="mail", steps=((b"RCPT TO:\r\n", "501 5.5.4"),)),
    Case("quoted local part of a real user", setup="mail", delivers=1,
         steps=((b'RCPT TO:<"bob"@example.net>\r\n', "250 2.1.5"),) + data_steps(message("quoted"), "250 2.0.0")),
    Case("quoted local part hiding another domain", setup="mail", services=(MX,),
         steps=((b'RCPT TO:<"bob@elsewhere.test"@example.net>\r\n', "550 5.1.1"),)),
    Case("source route to a local user", setup="mail", delivers=1,  # RFC 5321 appendix C: route ignored
         steps=((b"RCPT TO:<@a.test,@b.test:bob@example.net>\r\n", "250 2.1.5"),)
         + data_steps(message("routed"), "250 2.0.0")),
    Case("source route to another domain", setup="mail", services=(MX,),
         steps=((b"RCPT TO:<@example.net:victim@elsewhere.test>\r\n", "550 5.7.1"),)),
    Case("address literal", setup="mail",
         steps=((b"RCPT TO:<bob@[127.0.0.1]>\r\n", {SUBMISSION: "550 5.1.2", MX: "550 5.7.1"}),)),
    # Unknown commands and commands out of order.
    Case("unknown command", steps=((b"XYZZY plugh\r\n", "500 5.5.1"),)),
    # CHUNKING (RFC 3030) is not offered (see docs/teaching.md): BDAT is a command this server does not know
    # (a client may send BDAT only when EHLO listed CHUNKING, RFC 3030 section 2).
    Case("BDAT without CHUNKING", setup="rcpt", steps=((b"BDAT 5 LAST\r\n", "500 5.5.1"),
                                                       (b"RSET\r\n", "250 2.0.0"))),
    Case("empty line", steps=((b"\r\n", "500 5.5.2"),)),
    Case("too many unknown commands", run=too_many_unknown_commands),
    Case("MAIL before EHLO", setup="none",
         steps=((b"MAIL FROM:<carol@example.org>\r\n", {SUBMISSION: "530 5.7.0", MX: "503 5.5.1"}),)),
    Case("RCPT before MAIL", steps=((b"RCPT TO:<bob@example.net>\r\n", "503 5.5.1"),)),
    Case("DATA before RCPT", setup="mail", steps=((b"DATA\r\n", "503 5.5.1"),)),
    Case("nested MAIL", setup="mail", steps=((b"MAIL FROM:<carol@example.org>\r\n", "503 5.5.1"),)),
    Case("MAIL after STARTTLS, before AUTH", setup="tls", services=(SUBMISSION,),
         steps=((b"MAIL FROM:<alice@example.org>\r\n", "530 5.7.0"),)),
    Case("arguments where none belong", setup="rcpt",
         steps=((b"DATA now\r\n", "501 5.5.4"), (b"RSET all\r\n", "501 5.5.4"), (b"QUIT now\r\n", "501 5.5.4"))),
    Case("EXPN, VRFY and HELP", steps=((b"EXPN staff\r\n", "502 5.5.1"), (b"VRFY bob\r\n", "252 2.0.0 Cannot VRFY"),
                                       (b"HELP\r\n", "214 2.0.0"))),
    # Pipelining floods (RFC 2920).
    Case("1,000 pipelined NOOPs", run=pipelined_noop_flood),
    Case("whole transaction pipelined", run=pipelined_transaction, delivers=1),
    Case("message sent before the 354", setup="rcpt", run=message_before_354, delivers=1),
    # SIZE (RFC 1870) lies.
    Case("SIZE above the limit", steps=((f"MAIL FROM:<carol@example.org> SIZE={BIG + 1}\r\n".encode(), "552 5.3.4"),)),
    Case("SIZE that is not a number", steps=((b"MAIL FROM:<carol@example.org> SIZE=lots\r\n", "501 5.5.4"),)),
    Case("SIZE declared small, sent bigger", run=size_lie_small, delivers=1),
    Case("SIZE declared small, sent over the limit", run=size_lie_over_limit),
    # 1,000 recipients.
    Case("1,000 RCPT", setup="mail", run=thousand_recipients, delivers=1),
    # AUTH garbage (RFC 4954) on the submission port.
    Case("AUTH with invalid base64", setup="tls", services=(SUBMISSION,),
         steps=((b"AUTH PLAIN !!!not-base64!!!\r\n", "501 5.5.2"),)),
    Case("AUTH PLAIN without NUL separators", setup="tls", services=(SUBMISSION,),
         steps=((b"AUTH PLAIN " + PLAIN(b"alice@example.org password") + b"\r\n", "501 5.5.2"),)),
    Case("AUTH with a wrong password", setup="tls", services=(SUBMISSION,),
         steps=((b"AUTH PLAIN " + PLAIN(b"\0alice@example.org\0wrong") + b"\r\n", "535 5.7.8"),)),
    Case("AUTH with 8-bit garbage as the login", setup="tls", services=(SUBMISSION,),
         steps=((b"AUTH PLAIN " + PLAIN(b"\0\xff\xfe@example.org\0\xff") + b"\r\n", "535 5.7.8"),)),
    Case("AUTH with an unknown mechanism", setup="tls", services=(SUBMISSION,),
         steps=((b"AUTH CRAM-MD5\r\n", "504 5.5.4"),)),
    Case("AUTH without a mechanism", setup="tls", services=(SUBMISSION,), steps=((b"AUTH\r\n", "501 5.5.4"),)),
    Case("AUTH with too many arguments", setup="tls", services=(SUBMISSION,),
         steps=((b"AUTH PLAIN a b c\r\n", "501 5.5.4"),)),
    Case("AUTH LOGIN answered with garbage", setup="tls", services=(SUBMISSION,), run=auth_login_bad_base64),
    Case("AUTH cancelled with *", setup="tls", services=(SUBMISSION,), run=auth_aborted),
    Case("AUTH response over the line limit", setup="tls", services=(SUBMISSION,), run=auth_long_response(12_000)),
    Case("AUTH response of 20 KB", setup="tls", services=(SUBMISSION,), run=auth_long_response(20_000)),
    Case("AUTH response of 1 MB", setup="tls", services=(SUBMISSION,), run=auth_long_response(1_000_000)),
    Case("AUTH LOGIN prompts", setup="tls", services=(SUBMISSION,), run=auth_login_prompts),
    Case("AUTH twice", services=(SUBMISSION,),
         steps=((b"AUTH PLAIN " + PLAIN(b"\0alice@example.org\0x") + b"\r\n", "503 5.5.1"),)),
    Case("AUTH before STARTTLS", setup="hello",
         steps=((b"AUTH PLAIN " + PLAIN(b"\0alice@example.org\0x") + b"\r\n",
                 {SUBMISSION: "530 5.7.0", MX: "503 5.5.1 Error: authentication not enabled"}),)),
    Case("AUTH on an MX, which offers none", setup="tls", services=(MX,),
         steps=((b"AUTH PLAIN " + PLAIN(b"\0alice@example.org\0x") + b"\r\n", "503 5.5.1 Error: authentication not enabled"),
                (b"AUTH LOGIN\r\n", "503 5.5.1"), (b"NOOP\r\n", "250 2.0.0"))),
    # STARTTLS misuse (RFC 3207).
    Case("STARTTLS twice", setup="tls", steps=((b"STARTTLS\r\n", "503 5.5.1"), (b"NOOP\r\n", "250 2.0.0"))),
    Case("STARTTLS with an argument", setup="hello", steps=((b"STARTTLS now\r\n", "501 5.5.4"),)),
    Case("STARTTLS, then no TLS at all", setup="hello", run=starttls_then_garbage),
    Case("plaintext pipelined after STARTTLS", setup="hello", run=starttls_injection),
    # Clients that are silent or slow (RFC 5321 section 4.5.3.2: the server times out with 421).
    Case("a client that sends nothing", setup="none", run=silent_client, idle_timeout=0.5),
    Case("one byte per second", setup="none", run=one_byte_per_second, idle_timeout=1.5),
    Case("silence in the middle of DATA", setup="rcpt", run=silent_in_data, idle_timeout=1.0),
    # Abrupt disconnects.
    Case("hang up right after the greeting", setup="none", run=hang_up(b"")),
    Case("hang up in the middle of a command", run=hang_up(b"MAIL FROM:<carol@exa")),
    Case("hang up in the middle of DATA", setup="rcpt", run=hang_up_mid_data(reset=False)),
    Case("reset in the middle of DATA", setup="rcpt", run=hang_up_mid_data(reset=True)),
    Case("hang up during the TLS handshake", setup="hello", run=hang_up(b"STARTTLS\r\n")),
]
PARAMS = [pytest.param(case, service, id=f"{service}: {case.name}") for case in CORPUS for service in case.services]


def test_the_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 40 and len(PARAMS) >= 100


# --- checks after each case ------------------------------------------------------------------------


def mailbox(lab: smtplab.Lab, address: str = "bob@example.net") -> list[str]:
    return [str(m["Message-ID"]) for m in lab.messages(address)]


def serve_a_fresh_client(lab: smtplab.Lab, service: str) -> str:
    """Complete a whole transaction with a well-behaved client (smtplib); return its Message-ID."""
    if service == SUBMISSION:
        return lab.send("alice@example.org", "bob@example.net", "still serving", "after bad input").message_id
    mx = lab.host(HOSTS[MX])
    message_id = make_msgid(domain="health.test")
    with smtplib.SMTP(mx.address, mx.ports[MX], local_hostname="client.test", timeout=10) as client:
        client.starttls(context=lab.services.client_context)
        client.sendmail("carol@example.org", ["bob@example.net"], message("still serving", message_id=message_id))
    return message_id


def no_half_messages(lab: smtplab.Lab) -> None:
    for store in lab.directory.glob("mail/*/*/tmp"):
        assert not any(store.iterdir()), f"a message stuck half-written in {store}"
    assert lab.wait_for_delivery(timeout=30)
    assert all(item.done for item in lab.queue), "nothing left in the queue"
    assert not [r for item in lab.queue for r in item.recipients if r.state == "bounced"]


@pytest.mark.parametrize(("case", "service"), PARAMS)
def test_bad_input(lab: smtplab.Lab, case: Case, service: str) -> None:
    before = mailbox(lab)
    alice_before = len(mailbox(lab, "alice@example.org"))
    saved = lab.smtp_idle_timeout
    if case.idle_timeout is not None:
        lab.smtp_idle_timeout = case.idle_timeout  # read when a connection opens
    try:
        wire = Wire(lab, service)
    finally:
        lab.smtp_idle_timeout = saved
    try:
        assert wire.greeting.startswith("220 " + wire.host.name)
        prepare(wire, case.setup)
        if case.run is not None:
            case.run(wire)
        else:
            run_steps(wire, case.steps)
    finally:
        wire.close()

    # The same server serves the next client, and nothing arrived but what was meant to.
    health = serve_a_fresh_client(lab, service)
    no_half_messages(lab)
    after = mailbox(lab)
    assert health in after
    assert len(after) == len(before) + case.delivers + 1, "a message was lost, duplicated or half-delivered"
    assert len(set(after)) == len(after)
    assert len(mailbox(lab, "alice@example.org")) == alice_before, "no bounce was sent"
    if case.check is not None:
        case.check(lab, service)


# --- IMAP ------------------------------------------------------------------------------------------


class ImapWire:
    """A byte-exact IMAP client (after STARTTLS unless told otherwise)."""

    def __init__(self, lab: smtplab.Lab, *, tls: bool = True) -> None:
        self.host = lab.host("imap.example.net")
        self.sock: socket.socket = socket.create_connection((self.host.address, self.host.ports["imap"]), 10)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")
        if tls:
            self.sock.sendall(b"t0 STARTTLS\r\n")
            assert self.file.readline().startswith(b"t0 OK")
            self.sock = lab.services.client_context.wrap_socket(self.sock, server_hostname=self.host.name)
            self.file = self.sock.makefile("rb")

    def ask(self, data: bytes) -> bytes:
        """Send `data`, return the first line of the answer (b"" when the server hung up)."""
        self.sock.sendall(data)
        return self.file.readline()

    def close(self) -> None:
        self.sock.close()


def imap_still_serves(lab: smtplab.Lab) -> None:
    client = lab.imap("bob@example.net")
    try:
        assert client.select("INBOX")[0] == "OK"
        assert client.noop()[0] == "OK"
    finally:
        client.logout()


IMAP_CASES = [
    ("wrong password", b"a1 LOGIN bob@example.net not-the-password\r\n", b"a1 NO [AUTHENTICATIONFAILED]"),
    ("unknown user", b"a1 LOGIN nobody@example.net secret\r\n", b"a1 NO [AUTHENTICATIONFAILED]"),
    ("another provider's user", b"a1 LOGIN alice@example.org secret\r\n", b"a1 NO [AUTHENTICATIONFAILED]"),
    ("LOGIN without a password", b"a1 LOGIN bob@example.net\r\n", b"a1 BAD"),
    ("unknown command", b"a1 FROBNICATE\r\n", b"a1 BAD"),
    ("no tag", b"LOGIN\r\n", b"LOGIN BAD"),
    ("binary garbage", b"\x00\xff\xfe\r\n", b"* BAD"),
    ("NUL inside a command", b"a1 NOOP\x00\r\n", b"a1 BAD"),
    ("SELECT before LOGIN", b"a1 SELECT INBOX\r\n", b"a1 BAD"),
    ("FETCH before SELECT", b"a1 FETCH 1:* (FLAGS)\r\n", b"a1 BAD"),
    ("literal length that is not a number", b"a1 LOGIN {lots}\r\n", b"a1 BAD"),
    ("APPEND literal far over the limit", b"a1 APPEND INBOX {99999999999}\r\n", b"a1 BAD"),
    ("huge non-synchronizing literal", b"a1 LOGIN {999999999+}\r\nbob", b"* BYE [LIMIT]"),
    ("command line over 64 KiB", b"a1 NOOP " + b"x" * 100_000 + b"\r\n", b"* BYE [LIMIT]"),
]


@pytest.mark.parametrize(("name", "data", "answer"), IMAP_CASES, ids=[c[0] for c in IMAP_CASES])
def test_imap_bad_input(lab: smtplab.Lab, name: str, data: bytes, answer: bytes) -> None:
    client = ImapWire(lab)
    try:
        assert client.ask(data).startswith(answer)
    finally:
        client.close()
    imap_still_serves(lab)


def test_imap_login_before_starttls_is_refused(lab: smtplab.Lab) -> None:
    client = ImapWire(lab, tls=False)
    try:
        password = lab.users["bob@example.net"].password.encode()
        assert client.ask(b"a1 LOGIN bob@example.net " + password + b"\r\n").startswith(b"a1 NO [CANNOT]")
    finally:
        client.close()
    imap_still_serves(lab)


def test_imap_literal_promise_not_kept(lab: smtplab.Lab) -> None:
    client = ImapWire(lab)
    try:
        assert client.ask(b"a1 LOGIN {100}\r\n").startswith(b"+ ")
        client.sock.sendall(b"only ten b")  # 90 bytes short, then gone
    finally:
        client.close()
    imap_still_serves(lab)


def test_imap_ten_wrong_logins_then_the_right_one(lab: smtplab.Lab) -> None:
    # Each failure waits a doubling delay (tests/test_imap_limits.py): a short one here, the answers are the point.
    lab._network.imap["imap.example.net"].limits.login_delay = 0.001
    client = ImapWire(lab)
    try:
        for n in range(10):
            assert client.ask(f"a{n} LOGIN bob@example.net wrong{n}\r\n".encode()).startswith(f"a{n} NO".encode())
        password = lab.users["bob@example.net"].password.encode()
        assert client.ask(b"b1 LOGIN bob@example.net " + password + b"\r\n").startswith(b"b1 OK")
    finally:
        client.close()


def test_imap_bad_input_is_traced_not_printed(lab: smtplab.Lab, capfd: pytest.CaptureFixture[str]) -> None:
    client = ImapWire(lab)
    try:
        assert client.ask(b"a1 NOOP " + b"y" * 70_000 + b"\r\n").startswith(b"* BYE [LIMIT]")
    finally:
        client.close()
    imap_still_serves(lab)
    assert "Traceback" not in capfd.readouterr().err


# --- DNS -------------------------------------------------------------------------------------------
# tests/test_labdns.py already sends a garbage UDP packet, a too-short one and a short TCP read.


def udp(lab: smtplab.Lab, wire: bytes, *, expect_answer: bool = True) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0 if expect_answer else 0.3)
        sock.sendto(wire, (lab.dns.address, lab.dns.port))
        try:
            return sock.recvfrom(65535)[0]
        except TimeoutError:
            assert not expect_answer, "no answer"
            return None


def dns_still_answers(lab: smtplab.Lab) -> None:
    query = dns.message.make_query("example.net", "MX")
    assert dns.query.udp(query, lab.dns.address, port=lab.dns.port, timeout=2).rcode() == dns.rcode.NOERROR
    assert dns.query.tcp(query, lab.dns.address, port=lab.dns.port, timeout=2).rcode() == dns.rcode.NOERROR


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0x0F


@pytest.mark.parametrize("name", ["gmail.com", "com", ".", "example.net.evil.test", "org", "example"])
def test_dns_names_outside_the_zones_are_refused(lab: smtplab.Lab, name: str) -> None:
    reply = udp(lab, dns.message.make_query(name, "MX").to_wire())
    assert reply is not None and rcode_of(reply) == dns.rcode.REFUSED
    dns_still_answers(lab)


def test_dns_malformed_queries(lab: smtplab.Lab) -> None:
    header = struct.pack("!HHHHHH", 0x4242, 0x0100, 0, 0, 0, 0)  # no question at all
    assert rcode_of(udp(lab, header)) == dns.rcode.FORMERR
    two = dns.message.make_query("example.net", "MX")
    two.question.append(dns.message.make_query("example.org", "MX").question[0])
    assert rcode_of(udp(lab, two.to_wire())) == dns.rcode.FORMERR
    notify = dns.message.make_query("example.net", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert rcode_of(udp(lab, notify.to_wire())) == dns.rcode.NOTIMP
    chaos = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    assert rcode_of(udp(lab, chaos.to_wire())) == dns.rcode.REFUSED
    # A compression pointer that points at itself: a parser that follows it never ends.
    loop = struct.pack("!HHHHHH", 0x4343, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 15, 1)
    assert rcode_of(udp(lab, loop)) == dns.rcode.FORMERR
    # A label longer than 63 octets.
    long_label = struct.pack("!HHHHHH", 0x4444, 0x0100, 1, 0, 0, 0) + b"\x50" + b"a" * 80 + b"\x00" + b"\x00\x0f\x00\x01"
    assert rcode_of(udp(lab, long_label)) == dns.rcode.FORMERR
    dns_still_answers(lab)


def test_dns_ignores_responses_sent_as_queries(lab: smtplab.Lab) -> None:
    query = dns.message.make_query("example.net", "MX")
    response = dns.message.make_response(query)
    assert response.flags & dns.flags.QR
    assert udp(lab, response.to_wire(), expect_answer=False) is None  # answering could start a loop
    dns_still_answers(lab)


def test_dns_udp_flood_of_garbage(lab: smtplab.Lab) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(500):
            sock.sendto(bytes([n % 256]) * (n % 40), (lab.dns.address, lab.dns.port))
    # The flood may overflow the socket buffer and drop a datagram, so ask again as a resolver would.
    query = dns.message.make_query("example.net", "MX")
    for _ in range(5):
        try:
            reply = dns.query.udp(query, lab.dns.address, port=lab.dns.port, timeout=1)
            break
        except dns.exception.Timeout:
            continue
    assert reply.rcode() == dns.rcode.NOERROR
    dns_still_answers(lab)


def tcp_dns(lab: smtplab.Lab) -> socket.socket:
    return socket.create_connection((lab.dns.address, lab.dns.port), timeout=3)


def read_framed(sock: socket.socket) -> bytes:
    length = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))[0]
    return sock.recv(length, socket.MSG_WAITALL)


def test_dns_tcp_framing_errors(lab: smtplab.Lab) -> None:
    with tcp_dns(lab) as sock:  # a zero-length message: nothing to answer, so the server hangs up
        sock.sendall(struct.pack("!H", 0))
        assert sock.recv(2) == b""
    with tcp_dns(lab) as sock:  # two queries in one write: both answered, in order (RFC 7766 section 6.2.1)
        first = dns.message.make_query("example.net", "MX").to_wire()
        second = dns.message.make_query("example.org", "MX").to_wire()
        sock.sendall(struct.pack("!H", len(first)) + first + struct.pack("!H", len(second)) + second)
        answers = [dns.message.from_wire(read_framed(sock)) for _ in range(2)]
        assert [str(a.question[0].name) for a in answers] == ["example.net.", "example.org."]
    with tcp_dns(lab) as sock:  # garbage inside a well-framed message: FORMERR, framing intact
        junk = b"\x55\x66" + b"\xff" * 30
        sock.sendall(struct.pack("!H", len(junk)) + junk)
        assert rcode_of(read_framed(sock)) == dns.rcode.FORMERR
    with tcp_dns(lab) as sock:  # a length of 65535, then gone
        sock.sendall(b"\xff\xff" + b"x" * 100)
    dns_still_answers(lab)


def test_dns_tcp_client_that_sends_nothing(lab: smtplab.Lab) -> None:
    server = lab._network.dns_server
    assert server is not None
    saved, server.tcp_timeout = server.tcp_timeout, 0.5
    try:
        with tcp_dns(lab) as idle:
            dns_still_answers(lab)  # served while the idle client holds its connection
            idle.settimeout(5)
            began = time.monotonic()
            assert idle.recv(1) == b"", "the server closes a connection that stays silent"
            assert time.monotonic() - began < 4
    finally:
        server.tcp_timeout = saved
    dns_still_answers(lab)


def test_dns_query_with_a_truncated_question(lab: smtplab.Lab) -> None:
    query = dns.message.make_query("example.net", "MX").to_wire()
    assert rcode_of(udp(lab, query[:-3])) == dns.rcode.FORMERR
    dns_still_answers(lab)



# --- a failure at the end of DATA ends the transaction (RFC 5321 §4.1.1.4) ----------------------------
# Whatever the reply to the final dot, the envelope is gone: the same connection's next MAIL is a new
# transaction (before the fix it got "503 nested MAIL", which a relay reusing the connection read as a
# permanent failure of mail that was fine). Each cause is the real thing, not a stand-in.


def carol_writes(subject: str, body: str = "hello\r\n", extra_headers: str = "") -> str:
    return (f"From: Carol <carol@example.org>\r\nTo: bob@example.net\r\nSubject: {subject}\r\n"
            f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@corpus.test>\r\n"
            f"{extra_headers}\r\n{body}")


def one_transaction(client: smtplib.SMTP, message_text: str) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA without smtplib's RSET after a refusal (a relay reusing its connection sends none)."""
    code, text = client.mail("carol@example.org")
    assert code == 250, f"MAIL got {code} {text!r}: the previous transaction was left open"
    assert client.rcpt("bob@example.net")[0] == 250
    return client.data(message_text.encode())


def nested_multipart(depth: int) -> tuple[str, str]:
    """Headers and body of a message whose MIME parts nest `depth` levels deep."""
    headers = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n"
    body = "".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n" for i in range(depth))
    return headers, body + "the innermost part\r\n"


def errors_traced(lab: smtplab.Lab) -> list[str]:
    return [e.text for e in lab.trace.events() if e.protocol == "smtp" and e.kind in ("error", "state")]


def test_a_message_nested_2000_mime_levels_deep_is_refused_for_good_and_the_session_goes_on() -> None:
    headers, body = nested_multipart(2000)
    with smtplab.start() as running:
        mx = running.host(HOSTS[MX])
        with smtplib.SMTP(mx.address, mx.ports[MX], local_hostname="client.test", timeout=30) as client:
            client.ehlo()
            code, text = one_transaction(client, carol_writes("nested", body, headers))
            # RFC 3463 X.6.0: the content cannot be processed; the same bytes would fail again, so not a 4xx.
            assert (code, text.decode()) == (554, replies.UNPARSABLE[4:])
            code, _ = one_transaction(client, carol_writes("plain after nested"))
            assert code == 250
        assert [m["Subject"] for m in running.messages("bob@example.net")] == ["plain after nested"]
        assert any("could not be parsed (RecursionError" in text for text in errors_traced(running))


def test_a_dns_failure_during_the_checks_is_a_451_4_4_3_and_the_session_goes_on() -> None:
    with smtplab.start() as running:
        dns_server = running._network.dns_server
        assert dns_server is not None
        port = dns_server.port
        mx = running.host(HOSTS[MX])
        with smtplib.SMTP(mx.address, mx.ports[MX], local_hostname="client.test", timeout=60) as client:
            client.ehlo()
            running._call(dns_server.stop())  # the lab DNS is down: SPF, DKIM and DMARC get no answer
            try:
                code, text = one_transaction(client, carol_writes("while the DNS is down"))
            finally:
                running._call(dns_server.start(port))
            assert code == 451 and text.startswith(b"4.4.3 "), (code, text)
            assert b"Error" not in text and b"timeout" not in text.lower(), "no exception text on the wire"
            code, _ = one_transaction(client, carol_writes("once the DNS is back"))
            assert code == 250
        assert [m["Subject"] for m in running.messages("bob@example.net")] == ["once the DNS is back"]
        assert any("the lab DNS did not answer (TempError" in text for text in errors_traced(running))


# A lab on a 3 MB file system of its own (a tmpfs mounted in a private mount namespace): a 4 MB message
# fills it for real (ENOSPC from the kernel), then a small one fits, on the same connection.
FULL_DISK = r"""
import json, smtplib, sys
import smtplab

directory = sys.argv[1]
head = ("From: Carol <carol@example.org>\r\nTo: bob@example.net\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        "Message-ID: <{0}@corpus.test>\r\nSubject: {0}\r\n\r\n")
out = {}
with smtplab.start(directory=directory) as lab:
    mx = lab.host("mx1.example.net")
    with smtplib.SMTP(mx.address, mx.ports["smtp"], timeout=60) as client:
        client.ehlo()
        for subject, lines in (("too big for the disk", 52_000), ("small", 1)):
            mail = client.mail("carol@example.org")
            rcpt = client.rcpt("bob@example.net")
            data = client.data((head.format(subject) + ("x" * 78 + "\r\n") * lines).encode())
            out[subject] = [mail[0], rcpt[0], data[0], data[1].decode()]
    try:  # the submission host's queue spool is on the same small disk
        lab.send("alice@example.org", "bob@example.net", "too big to queue", "y" * 4_000_000)
    except smtplab.SendError as exc:
        out["submitted"] = str(exc)
    lab.send("alice@example.org", "bob@example.net", "small, submitted", "fits")
    out["subjects"] = [m["Subject"] for m in lab.messages("bob@example.net")]
    out["errors"] = [e.text for e in lab.trace.events() if e.kind == "error"]
print(json.dumps(out))
"""


def test_a_full_disk_at_the_end_of_data_is_a_452_and_the_next_mail_is_a_new_transaction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys

    unshare = require_tool("unshare")
    directory = tmp_path / "small-disk"
    directory.mkdir(mode=0o700)
    mount = 'mount -t tmpfs -o size=3m,mode=0700 smtplab-full "$1" && exec "$2" -c "$3" "$1"'
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        if IN_CI:
            pytest.fail(f"CI must allow mount namespaces (unshare -rm): {probe.stderr}")
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
    done = subprocess.run([unshare, "-rm", "sh", "-c", mount, "sh", str(directory), sys.executable, FULL_DISK],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["too big for the disk"] == [250, 250, 452, replies.STORAGE_FULL[4:]]
    assert out["small"][:3] == [250, 250, 250], out["small"]  # not "503 nested MAIL"
    assert "452 4.3.1" in out["submitted"]
    assert sorted(out["subjects"]) == ["small", "small, submitted"]
    assert any("No space left on device" in text for text in out["errors"]), out["errors"]
