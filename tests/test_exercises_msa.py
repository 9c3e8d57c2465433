"""The MSA's sender check of notebook 01 (exercise 4): a prediction judged once against the real MSA."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_failed,
    assert_not_told,
    assert_passed,
    assert_unanswered,
    fresh_answers,
)

import smtplab
from smtplab.exercises import forget_answers, msa

SOLUTION = {"alice@example.org": "accept", "alice@EXAMPLE.ORG": "accept", "carol@example.org": "refuse",
            "bob@example.net": "refuse", "<>": "refuse"}


@pytest.fixture(scope="module")
def lab() -> Iterator[smtplab.Lab]:
    with smtplab.start() as lab:
        yield lab


def test_the_solution_passes_with_the_servers_replies(lab: smtplab.Lab) -> None:
    assert_passed(msa.check_sender_prediction(SOLUTION, lab), "553 5.7.1 Sender address rejected: not owned by user",
                  "MAIL FROM:<bob@example.net> -> 553", "RFC 6409 section 6.1")
    forget_answers()
    assert_passed(msa.check_sender_prediction({k: v.upper() if v == "accept" else "553" for k, v in
                                               SOLUTION.items()}, lab))


def test_one_wrong_prediction_is_counted_not_named(lab: smtplab.Lab) -> None:
    """Whichever prediction is wrong, the feedback is the same words: it cannot tell which one to flip."""
    messages = set()
    for flip in SOLUTION:
        forget_answers()
        answer = {**SOLUTION, flip: "refuse" if SOLUTION[flip] == "accept" else "accept"}
        feedback = msa.check_sender_prediction(answer, lab)
        assert_failed(feedback, "1 of your five predictions is not what smtp.example.org answered", "next cell")
        assert_not_told(feedback, "553", "250", "not owned")
        messages.add(feedback.message)
    assert len(messages) == 1, messages


def test_a_prediction_counts_once(lab: smtplab.Lab) -> None:
    everything_refused = dict.fromkeys(SOLUTION, "refuse")
    assert_failed(msa.check_sender_prediction(everything_refused, lab), "2 of your five predictions are not")
    feedback = msa.check_sender_prediction(SOLUTION, lab)
    assert_failed(feedback, "You changed your predictions", "2 of your five")


def test_placeholders_and_nonsense_do_not_use_up_the_try(lab: smtplab.Lab) -> None:
    assert_unanswered(msa.check_sender_prediction(None, lab))
    assert_unanswered(msa.check_sender_prediction(dict.fromkeys(SOLUTION), lab))
    assert_unanswered(msa.check_sender_prediction({"alice@example.org": "accept"}, lab))
    assert_failed(msa.check_sender_prediction({**SOLUTION, "<>": "maybe"}, lab), "write \"accept\" or \"refuse\"")
    assert_failed(msa.check_sender_prediction(["accept"] * 5, lab), "must be a dict")
    assert_passed(msa.check_sender_prediction(SOLUTION, lab))  # nothing above was committed


def test_the_feedback_speaks_spanish_and_the_wire_does_not(lab: smtplab.Lab) -> None:
    """Issue 19: with lang="es" the verdict, its title and its questions are Spanish; the replies quoted stay as sent."""
    from smtplab.i18n import use_language

    with use_language("es"):
        wrong = msa.check_sender_prediction(dict.fromkeys(SOLUTION, "refuse"), lab)
        forget_answers()
        right = msa.check_sender_prediction(SOLUTION, lab)
    assert_failed(wrong, "2 de tus cinco predicciones no son lo que respondió smtp.example.org")
    assert str(wrong).startswith("✘ Ejercicio 4 · predice la comprobación de remitente del MSA")
    assert_passed(right, "Correcto, las cinco", "553 5.7.1 Sender address rejected: not owned by user")
