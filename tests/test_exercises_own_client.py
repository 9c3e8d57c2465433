"""The check of the lesson "write your own client": real socket clients, right and wrong, against a real lab.

Each wrong client makes one classic mistake of the socket-programming assignment; the feedback must quote
what the server saw and never hand out a working client.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from typing import Any

from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_failed,
    assert_passed,
    assert_unanswered,
    fresh_answers,
)

import smtplab
from smtplab.exercises import forget_answers, own_client
from smtplab.exercises.own_client import Server
from smtplab.i18n import use_language


def make_client(*, eol: str = "\r\n", greet: bool = True, lockstep: bool = True, dot: bool = True,
                quit: bool = True, tls: bool = False, helo: str = "EHLO") -> Any:
    def send_mail(server: Server, sender: str, recipient: str, subject: str, body: str) -> None:
        sock = socket.create_connection((server.address, server.port), timeout=3)
        files = [sock.makefile("rb")]

        def reply() -> str:
            while True:
                line = files[0].readline().decode()
                if line[3:4] != "-":
                    return line

        def send(line: str) -> str | None:
            sock.sendall((line + eol).encode())
            return reply() if lockstep else None

        if greet:
            reply()
        send(f"{helo} student.example")
        if tls:
            send("STARTTLS")
            context = ssl.create_default_context(cafile=server.cafile)
            sock = context.wrap_socket(sock, server_hostname=server.name)
            files[0] = sock.makefile("rb")
            send(f"{helo} student.example")
        send(f"MAIL FROM:<{sender}>")
        send(f"RCPT TO:<{recipient}>")
        send("DATA")
        lines = [f"Subject: {subject}", f"From: <{sender}>", f"To: <{recipient}>", "", *body.split("\n")]
        sock.sendall("".join(x + eol for x in lines).encode())
        if dot:
            send(".")
        if quit:
            send("QUIT")
        if not lockstep:
            for _ in range(6):
                reply()
        sock.close()
    return send_mail


def test_a_correct_client_passes(lab: smtplab.Lab) -> None:
    assert_passed(own_client.check_client(make_client(), lab), "Bob has your message", "in clear text")


def test_a_correct_tls_client_passes_both_checks(lab: smtplab.Lab) -> None:
    client = make_client(tls=True)
    assert_passed(own_client.check_client(client, lab, tls=True), "over TLS")
    assert_passed(own_client.check_client(client, lab))


def test_the_plain_client_fails_the_tls_check(lab: smtplab.Lab) -> None:
    assert_failed(own_client.check_client(make_client(), lab, tls=True), "no TLS handshake")


def test_bare_lf_is_quoted(lab: smtplab.Lab) -> None:
    feedback = own_client.check_client(make_client(eol="\n"), lab, wait=5)
    assert_failed(feedback, "b'EHLO student.example\\n'", "bare LF", "RFC 5321 §2.3.8")


def test_talking_before_the_greeting(lab: smtplab.Lab) -> None:
    feedback = own_client.check_client(make_client(greet=False, lockstep=False), lab, wait=5)
    assert_failed(feedback, "spoke first", "b'EHLO student.example\\r\\n'", "220")


def test_pipelining_with_helo_and_sending_before_354(lab: smtplab.Lab) -> None:
    def late(server: Server, *args: str) -> None:
        sock = socket.create_connection((server.address, server.port), timeout=3)
        sock.recv(1000)
        sock.sendall(b"HELO student.example\r\nMAIL FROM:<alice@example.org>\r\n")
        sock.close()
    assert_failed(own_client.check_client(late, lab), "b'MAIL FROM:<alice@example.org>\\r\\n'",
                  "had not offered PIPELINING")

    def rushed(server: Server, sender: str, recipient: str, subject: str, body: str) -> None:
        sock = socket.create_connection((server.address, server.port), timeout=3)
        file = sock.makefile("rb")
        file.readline()
        sock.sendall(b"EHLO student.example\r\n")
        while file.readline()[3:4] == b"-":
            pass
        sock.sendall(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\nSubject: {subject}\r\n\r\n.\r\n"
                     "QUIT\r\n".encode())
        for _ in range(5):
            file.readline()
        sock.close()
    assert_failed(own_client.check_client(rushed, lab), "b'Subject: my own client", "before the server's 354")


def test_missing_dot_and_missing_quit(lab: smtplab.Lab) -> None:
    feedback = own_client.check_client(make_client(dot=False, quit=False), lab, wait=5)
    assert_failed(feedback, "never the line holding only '.'")
    assert_failed(own_client.check_client(make_client(quit=False), lab), "never said QUIT", "221")


def test_smtplib_is_not_your_own_client(lab: smtplab.Lab) -> None:
    def with_smtplib(server: Server, sender: str, recipient: str, subject: str, body: str) -> None:
        with smtplib.SMTP(server.address, server.port) as client:
            client.sendmail(sender, [recipient], f"Subject: {subject}\r\n\r\n{body}")
    assert_failed(own_client.check_client(with_smtplib, lab), "smtplib's own spelling")


def test_wrong_empty_and_trivial_answers(lab: smtplab.Lab) -> None:
    assert_unanswered(own_client.check_client(..., lab))
    assert_unanswered(own_client.check_client(None, lab))
    assert_failed(own_client.check_client("send_mail", lab), "the function itself")
    assert_failed(own_client.check_client(lambda *args: None, lab), "no connection")

    def fixed(server: Server, *args: str) -> None:  # a hard-coded message: the check's subject is new each time
        make_client()(server, "alice@example.org", "bob@example.net", "Hello", "Hello Bob")
    assert_failed(own_client.check_client(fixed, lab), "no message with the subject the check gave you")


def test_feedback_never_contains_a_working_client(lab: smtplab.Lab) -> None:
    for client in (make_client(eol="\n"), make_client(dot=False), make_client(quit=False)):
        message = own_client.check_client(client, lab, wait=5).message
        assert "sendall(" not in message and "recv(" not in message or "socket.sendall" in message
        assert "def send_mail" not in message


def test_bare_lf_prediction_right_wrong_empty(lab: smtplab.Lab) -> None:
    assert_passed(own_client.check_bare_lf_prediction("answer", lab), "'EHLO student.example<LF>'", "'250-")
    for wrong in ("error", "wait", " WAIT "):
        forget_answers()
        feedback = own_client.check_bare_lf_prediction(wrong, lab)
        assert_failed(feedback, "'EHLO student.example<LF>'", "first digit")
        assert "'answer'" not in feedback.message
    assert_failed(own_client.check_bare_lf_prediction("yes", lab), "not one of")
    assert_unanswered(own_client.check_bare_lf_prediction(..., lab))
    assert_unanswered(own_client.check_bare_lf_prediction(None, lab))


def test_bare_lf_prediction_counts_once(lab: smtplab.Lab) -> None:
    """The second answer does not get a fresh verdict: the first well-formed prediction is the one judged."""
    assert_failed(own_client.check_bare_lf_prediction("maybe", lab), "not one of")  # malformed: no try used
    assert_failed(own_client.check_bare_lf_prediction("wait", lab), "first digit")
    flipped = own_client.check_bare_lf_prediction("answer", lab)
    assert_failed(flipped, "You changed your answer to 'answer'", "first answer checked, 'wait'")


def test_the_feedback_speaks_spanish_and_the_wire_does_not(lab: smtplab.Lab) -> None:
    """The explanation is Spanish; the line the server read and its reply are quoted exactly as they crossed."""
    with use_language("es"):
        assert_failed(own_client.check_bare_lf_prediction("quizás", lab), "no es ninguna de")
        feedback = own_client.check_bare_lf_prediction("error", lab)
        assert_failed(feedback, "El servidor leyó la línea como 'EHLO student.example<LF>'", "'250-", "primera cifra")
        assert feedback.exercise == "Predicción · un LF suelto después de EHLO"
        assert_passed(own_client.check_client(make_client(), lab), "Bob tiene tu mensaje (Subject: mi propio cliente",
                      "enviado en claro")
