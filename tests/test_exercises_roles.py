"""The roles exercise of notebook 00: MUA, MSA, MTA and MDA, checked against the trace of a real message."""

from __future__ import annotations

from collections.abc import Iterator
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
from smtplab.exercises import roles

SOLUTION = {"MUA": "notebook", "MSA": "smtp.example.org", "MTA": ["smtp.example.org", "mx1.example.net"],
            "MDA": "mx1.example.net"}


@pytest.fixture(scope="module")
def sent() -> Iterator[tuple[smtplab.Lab, Any]]:
    with smtplab.start() as lab:
        yield lab, lab.send("alice@example.org", "bob@example.net", "Hello Bob", "Hi Bob\n")


def test_the_solution_passes(sent: tuple[smtplab.Lab, Any]) -> None:
    lab, result = sent
    assert_passed(roles.check_roles(lab, result, SOLUTION), "smtp.example.org was the MSA", "MDA")
    assert_passed(roles.check_roles(lab, result, {**SOLUTION, "MTA": ("mx1", "SMTP.example.org."),
                                                  "mua": "Alice's client"}))


def test_the_truth_comes_from_the_trace_not_a_list() -> None:
    """With mx1 down, mx2 delivers: the same answer is now wrong for MTA and MDA."""
    with smtplab.start() as lab:
        lab.host("mx1").down()
        result = lab.send("alice@example.org", "bob@example.net", "Hello Bob", "Hi Bob\n")
        feedback = roles.check_roles(lab, result, SOLUTION)
        assert_failed(feedback, "MTA: mx1.example.net does not appear in the trace of this message")
        assert_passed(roles.check_roles(lab, result, {**SOLUTION, "MTA": ["smtp.example.org", "mx2.example.net"],
                                                      "MDA": "mx2.example.net"}))


@pytest.mark.parametrize(("answer", "phrases"), [
    ({**SOLUTION, "MDA": "imap.example.net"}, ["MDA: imap.example.net does not appear", "Maildir"]),
    ({**SOLUTION, "MTA": "mx1.example.net"}, ["MTA: 1 more part of the lab played this role"]),
    ({**SOLUTION, "MSA": "mx1.example.net"}, ["MSA: for this message, mx1.example.net was MTA, MDA"]),
    ({**SOLUTION, "MUA": "smtp.example.org"}, ["MUA: for this message, smtp.example.org was MSA, MTA"]),
    ({**SOLUTION, "MSA": "dns.lab"}, ["'dns.lab' is neither the notebook nor a host"]),
    ({**SOLUTION, "MDA": 3}, ["give a host name as text"]),
])
def test_wrong_answers_get_evidence_not_the_answer(sent: tuple[smtplab.Lab, Any], answer: dict[str, Any],
                                                   phrases: list[str]) -> None:
    lab, result = sent
    feedback = roles.check_roles(lab, result, answer)
    assert_failed(feedback, *phrases)
    wrong_role = next(role for role in SOLUTION if answer.get(role) != SOLUTION[role])
    right = SOLUTION[wrong_role]
    for name in [right] if isinstance(right, str) else right:
        assert f"{wrong_role}: {name}" not in feedback.message


def test_trivial_answers(sent: tuple[smtplab.Lab, Any]) -> None:
    lab, result = sent
    assert_unanswered(roles.check_roles(lab, result, None))
    assert_unanswered(roles.check_roles(lab, result, {"MUA": None, "MSA": None, "MTA": None, "MDA": None}))
    assert_unanswered(roles.check_roles(lab, result, {"MUA": "notebook"}))
    assert_failed(roles.check_roles(lab, result, "smtp.example.org"), "must be a dict")
    everything = {role: list(lab.hosts) + ["notebook"] for role in roles.ROLES}
    assert_not_told(roles.check_roles(lab, result, everything), "smtp.example.org was the MSA")
    assert_failed(roles.check_roles(lab, None, SOLUTION), "Alice sends her message first")
