"""The capture exercise of notebook 05: where an AUTH line is readable, and where TLS begins on Alice's connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_failed,
    assert_not_told,
    assert_passed,
    assert_unanswered,
    fresh_answers,
)

import smtplab
from smtplab.exercises import tls

ALICE = "alice@example.org"
BOB = "bob@example.net"


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[smtplab.Lab, Any]]:
    """The notebook's first lab: Alice submits with STARTTLS, Bob logs in to smtp.example.net without it."""
    scenario = smtplab.Scenario.security(policy="none").to_dict()
    scenario["providers"][1]["hosts"]["smtp.example.net"] = {"services": ["submission"],
                                                            "options": ["plaintext_auth"]}
    with smtplab.start(scenario=scenario) as lab:
        alice, bob = lab.users[ALICE], lab.users[BOB]
        submit = lab.session("smtp.example.org")
        submit.ehlo()
        submit.starttls()
        submit.ehlo()
        submit.auth_plain(alice.address, alice.password)
        submit.quit()
        careless = lab.session("smtp.example.net")
        careless.ehlo()
        careless.auth_plain(bob.address, bob.password)
        careless.quit()
        yield lab, lab.pcap(Path(tmp_path_factory.mktemp("capture")) / "eavesdropper.pcapng")


def _solution(lab: smtplab.Lab, capture: Any) -> tuple[int, int]:
    """The notebook's solution: search the frames."""
    frames = capture.frames()
    clear = next(f.number for f in frames if f.payload.upper().startswith(b"AUTH "))
    port = lab.host("smtp.example.org").ports["submission"]
    start = next(f.number for f in frames if f.is_tls and port in (f.source_port, f.destination_port))
    return clear, start


def test_the_solution_passes(captured: tuple[smtplab.Lab, Any]) -> None:
    lab, capture = captured
    clear, start = _solution(lab, capture)
    assert_passed(tls.check_capture(capture, lab, clear, start), f"Frame {clear} carries 'AUTH PLAIN",
                  f"TLS starts in frame {start}", "(0 readable)")
    assert_passed(tls.check_capture(capture, lab, str(clear), f" {start} "))


def test_wrong_frames_are_described_not_corrected(captured: tuple[smtplab.Lab, Any]) -> None:
    lab, capture = captured
    clear, start = _solution(lab, capture)
    frames = {f.number: f for f in capture.frames()}
    starttls = next(n for n, f in frames.items() if f.payload == b"STARTTLS\r\n")
    cases = [
        ((clear, starttls), ["still clear text"]),
        ((clear, start + 1), ["an earlier frame of the same connection"]),
        ((start, start), ["it is encrypted"]),
        ((clear, clear), ["not Alice's connection"]),
        ((clear, 99999), ["is not one"]),
        (("frame", start), ["not a frame number"]),
    ]
    for (auth, tls_frame), phrases in cases:
        feedback = tls.check_capture(capture, lab, auth, tls_frame)
        assert_failed(feedback, *phrases)
        for answer in (clear, start):
            if answer not in (auth, tls_frame):
                assert_not_told(feedback, f"frame {answer} ")


def test_placeholders_and_a_capture_without_the_lesson(captured: tuple[smtplab.Lab, Any],
                                                       tmp_path: Path) -> None:
    lab, capture = captured
    assert_unanswered(tls.check_capture(capture, lab, None, None))
    assert_failed(tls.check_capture(capture, lab, None, 3), "clear_auth_frame is still empty")
    assert_failed(tls.check_capture("capture.pcapng", lab, 1, 2), "could not read")
    with smtplab.start() as other:
        other.send(ALICE, BOB, "Hi", "x\n")
        assert_failed(tls.check_capture(other.pcap(tmp_path / "tls-only.pcapng"), other, 1, 2),
                      "no frame of this capture holds an AUTH line in clear text")
