"""The two "has the learner answered?" tests every exercise check shares."""

from __future__ import annotations

import pytest

from smtplab.exercises._answers import is_blank, is_placeholder


@pytest.mark.parametrize("value", [None, ...])
def test_the_placeholder_left_in_place_is_no_answer(value: object) -> None:
    assert is_placeholder(value)
    assert is_blank(value)


@pytest.mark.parametrize("value", ["", "  \n", b"", b" \r\n"])
def test_empty_text_is_an_answer_to_judge_but_blank(value: object) -> None:
    # An empty line is a real (if wrong) answer where the lesson is about lines on the wire.
    assert not is_placeholder(value)
    assert is_blank(value)


@pytest.mark.parametrize("value", ["EHLO", b"x", 0, [], False])
def test_anything_else_is_an_answer(value: object) -> None:
    assert not is_placeholder(value)
    assert not is_blank(value)
