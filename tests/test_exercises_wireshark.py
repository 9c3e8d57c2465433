"""The Wireshark notebook's exercises with right, wrong, empty and trivial answers: the checks read the learner's
own capture, and their feedback to a wrong answer never gives the expected one away."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_failed,
    assert_passed,
    assert_unanswered,
    fresh_answers,
)

import smtplab
from smtplab.exercises import Feedback, forget_answers, wireshark
from smtplab.i18n import use_language
from smtplab.views.pcap import Capture

ALICE = "alice@example.org"
BOB = "bob@example.net"


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[smtplab.Lab, Capture]]:
    with smtplab.start() as lab:
        sent = lab.send(ALICE, BOB, "for the exercises", "Hello\n")
        yield lab, lab.pcap(tmp_path_factory.mktemp("wireshark") / "mine.pcapng", message=sent)


def starttls_reply(capture: Capture, lab: smtplab.Lab) -> int:
    """The expected answer, found independently of the checker: the first server frame after the client's
    STARTTLS on the connection to the submission port."""
    host = lab.host("smtp.example.org")
    frames = capture.frames()
    command = next(f for f in frames if f.payload == b"STARTTLS\r\n" and f.destination == host.address
                   and f.destination_port == host.ports["submission"])
    return next(f.number for f in frames if f.number > command.number and f.payload
                and f.destination_port == command.source_port)


def never_tells(feedback: Feedback, secret: str) -> None:
    assert not re.search(rf"(?<![\w.]){re.escape(secret)}(?![\w])", feedback.message), feedback.message


def test_the_prediction(captured: tuple[smtplab.Lab, Capture]) -> None:
    lab, capture = captured
    assert_passed(wireshark.check_mail_prediction("no", capture, lab), "no frame of the capture holds")
    assert_passed(wireshark.check_mail_prediction(False, capture, lab))
    forget_answers()
    wrong = wireshark.check_mail_prediction("yes", capture, lab)
    assert_failed(wrong, "the client said STARTTLS in frame", "TLS records")
    assert "clear text" not in wrong.message.split("hold:")[1], "every frame after STARTTLS is TLS"
    assert_unanswered(wireshark.check_mail_prediction(None, capture, lab))
    assert_unanswered(wireshark.check_mail_prediction("  ", capture, lab))
    assert_failed(wireshark.check_mail_prediction("maybe", capture, lab), "neither yes nor no")


def test_the_prediction_on_a_capture_with_mail_in_clear_text(tmp_path: Path) -> None:
    with smtplab.start() as lab:
        session = lab.session("mx1.example.net")
        session.ehlo("student.local")
        session.mail(ALICE)
        session.quit()
        capture = lab.pcap(tmp_path / "clear.pcapng")
        assert_passed(wireshark.check_mail_prediction("yes", capture, lab), "in clear text")
        forget_answers()
        assert_failed(wireshark.check_mail_prediction("no", capture, lab), "readable without any key")


def test_the_prediction_counts_once(captured: tuple[smtplab.Lab, Capture]) -> None:
    """A learner who reads 'wrong' and flips the answer is still judged on the first one: no brute force."""
    lab, capture = captured
    assert_failed(wireshark.check_mail_prediction("maybe", capture, lab), "neither yes nor no")  # a typo: no try used
    assert_failed(wireshark.check_mail_prediction("yes", capture, lab), "TLS records")
    flipped = wireshark.check_mail_prediction("no", capture, lab)
    assert_failed(flipped, "You changed your answer to 'no'", "first answer checked, 'yes'")


def test_the_starttls_frame(captured: tuple[smtplab.Lab, Capture]) -> None:
    lab, capture = captured
    expected = starttls_reply(capture, lab)
    assert_passed(wireshark.check_starttls_frame(expected, capture, lab), "220 2.0.0 Ready to start TLS")
    assert_passed(wireshark.check_starttls_frame(f" {expected} ", capture, lab))
    frames = capture.frames()
    by_number = {f.number: f for f in frames}
    command = next(n for n, f in by_number.items() if f.payload == b"STARTTLS\r\n")
    greeting = next(n for n, f in by_number.items() if f.payload.startswith(b"220 smtp.example.org"))
    relay = next(n for n, f in by_number.items() if f.payload.startswith(b"220 2.0.0") and n != expected)
    first_tls = next(n for n, f in by_number.items() if f.is_tls)
    handshake = 1
    cases = {
        command: "client's command",
        greeting: "is the greeting",
        relay: "another connection",
        first_tls: "already encrypted",
        handshake: "a TCP S",
        len(frames) + 5: "is not one of them",
    }
    for number, phrase in cases.items():
        feedback = wireshark.check_starttls_frame(number, capture, lab)
        assert_failed(feedback, phrase)
        never_tells(feedback, str(expected))
    for trivial in ("twenty", "", 3.5, True, "220"):
        feedback = wireshark.check_starttls_frame(trivial, capture, lab)
        assert not feedback.ok, trivial
        never_tells(feedback, str(expected))
    assert_unanswered(wireshark.check_starttls_frame(None, capture, lab))
    assert_unanswered(wireshark.check_starttls_frame(..., capture, lab))


def test_checks_of_a_capture_without_submission(tmp_path: Path) -> None:
    with smtplab.start() as lab:
        lab.lookup_mx("example.net")
        capture = lab.pcap(tmp_path / "dns-only.pcapng")
        assert_failed(wireshark.check_starttls_frame(4, capture, lab), "holds no STARTTLS")
        assert_failed(wireshark.check_auth_password("x", capture, lab), "no AUTH PLAIN line")
        for check in (wireshark.check_starttls_frame, wireshark.check_auth_password,
                      wireshark.check_mail_prediction):
            assert_failed(check("1", "capture.pcapng", lab), "pass the object lab.pcap(...) returned")


def test_the_password(captured: tuple[smtplab.Lab, Capture]) -> None:
    lab, capture = captured
    password = lab.users[ALICE].password
    token = base64.b64encode(f"\0{ALICE}\0{password}".encode()).decode()
    assert_passed(wireshark.check_auth_password(password, capture, lab), "AUTH PLAIN is safe only inside TLS")
    assert_passed(wireshark.check_auth_password(password.encode(), capture, lab), ".decode()")
    cases = {
        token: "is base64",
        ALICE: "is the login name",
        f"\0{ALICE}\0{password}": "with more around it",
        f" {password}'": "too many around it",
        "hunter2": "is not the password",
        "PLAIN": "is not the password",
    }
    for answer, phrase in cases.items():
        feedback = wireshark.check_auth_password(answer, capture, lab)
        assert_failed(feedback, phrase)
        never_tells(feedback, password)
    assert_failed(wireshark.check_auth_password(1234, capture, lab), "as text")
    assert_unanswered(wireshark.check_auth_password("", capture, lab))
    assert_unanswered(wireshark.check_auth_password(None, capture, lab))


def test_the_feedback_speaks_spanish(captured: tuple[smtplab.Lab, Capture]) -> None:
    lab, capture = captured
    with use_language("es"):
        assert_failed(wireshark.check_starttls_frame("doce", capture, lab), "no es un número de trama")
        wrong = wireshark.check_auth_password("hunter2", capture, lab)
        assert_failed(wrong, "no es la contraseña de la línea AUTH PLAIN")
        assert wrong.exercise == "Ejercicio 3 · la contraseña dentro de TLS"
        assert_passed(wireshark.check_mail_prediction("no", capture, lab), "Correcto: ninguna trama")
