"""How the exercise tests judge a checker's Feedback: one definition for every notebook's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtplab.exercises import Feedback, forget_answers


@pytest.fixture(autouse=True)
def fresh_answers() -> Iterator[None]:
    """Every test starts with no committed prediction (a prediction counts once per Python process)."""
    forget_answers()
    yield
    forget_answers()


def assert_passed(feedback: Feedback, *phrases: str) -> None:
    assert feedback.ok and feedback.answered, feedback
    assert str(feedback).startswith("✔"), feedback
    for phrase in phrases:
        assert phrase in feedback.message, f"{phrase!r} not in: {feedback.message}"


def assert_failed(feedback: Feedback, *phrases: str) -> None:
    assert not feedback.ok and feedback.answered, feedback
    assert str(feedback).startswith("✘"), feedback
    for phrase in phrases:
        assert phrase in feedback.message, f"{phrase!r} not in: {feedback.message}"


def assert_unanswered(feedback: Feedback) -> None:
    assert not feedback.ok and not feedback.answered, feedback
    assert str(feedback).startswith("…"), feedback
    assert "not answered yet" in feedback.message, feedback


def assert_not_told(feedback: Feedback, *answers: str) -> None:
    """A wrong, empty or trivial answer's feedback must not give the expected answer away."""
    assert not feedback.ok, feedback
    for answer in answers:
        assert answer.lower() not in feedback.message.lower(), f"{answer!r} given away in: {feedback.message}"
