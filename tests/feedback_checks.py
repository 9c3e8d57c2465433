"""How the exercise tests judge a checker's Feedback: one definition for every notebook's tests."""

from __future__ import annotations

from smtplab.exercises import Feedback


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
