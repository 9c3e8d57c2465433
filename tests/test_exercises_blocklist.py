"""The blocklist exercise of notebook 06: the learner's own DNSBL lookup, run on a lab the learner has not seen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from feedback_checks import assert_failed, assert_not_told, assert_passed, assert_unanswered

import smtplab
from smtplab.exercises import blocklist

REASON = "sends forged invoices (reported by bob@example.net)"


@pytest.fixture(scope="module")
def lab() -> Iterator[smtplab.Lab]:
    scenario = smtplab.Scenario.security(policy="reject").to_dict()
    scenario["blocklist"] = {"mail.evil.example": REASON}
    with smtplab.start(scenario=scenario) as lab:
        yield lab


def listing_reason(lab: Any, address: str) -> str | None:
    """The notebook's solution."""
    name = ".".join(reversed(address.split("."))) + ".bl.lab"
    answer = lab.dig(name, "TXT")
    if answer.rcode != "NOERROR" or not answer.records:
        return None
    return answer.records[0].split(" IN TXT ", 1)[1].strip('"')


def test_the_solution_passes_with_the_mx_refusal(lab: smtplab.Lab) -> None:
    assert listing_reason(lab, lab.host("mail.evil.example").address) == REASON
    assert_passed(blocklist.check_listing_reason(lab, listing_reason), "554 5.7.1 Service unavailable",
                  "blocked using bl.lab", "reported for spam runs", "and None for")


def test_a_function_that_only_knows_the_notebooks_answer_fails(lab: smtplab.Lab) -> None:
    """The gamed solution: return the reason the notebook's lab shows, whatever the address."""
    feedback = blocklist.check_listing_reason(lab, lambda lab, address: REASON)
    assert_failed(feedback, "not the reason the list gives", "smtp.example.net")
    evil = lab.host("mail.evil.example").address
    only_evil = blocklist.check_listing_reason(lab, lambda lab, a: REASON if a == evil else None)
    assert_failed(only_evil, "returned None for", "octets reversed")


@pytest.mark.parametrize(("function", "phrases"), [
    (lambda lab, a: lab.dig(".".join(reversed(a.split("."))) + ".bl.lab", "A").records[0], ["Ask for the TXT"]),
    (lambda lab, a: lab.dig(".".join(reversed(a.split("."))) + ".bl.lab", "TXT").records[0], ["almost", "quotes"]),
    (lambda lab, a: lab.dig(a + ".bl.lab", "TXT").records[0], ["raised IndexError"]),
    (lambda lab, a: listing_reason(lab, a) or "clean", ["which no list names", "NXDOMAIN"]),
])
def test_wrong_functions_get_evidence(lab: smtplab.Lab, function: Any, phrases: list[str]) -> None:
    feedback = blocklist.check_listing_reason(lab, function)
    assert_failed(feedback, *phrases)


def test_placeholders(lab: smtplab.Lab) -> None:
    def stub(lab: Any, address: str) -> None:
        ...

    assert_unanswered(blocklist.check_listing_reason(lab, None))
    assert_unanswered(blocklist.check_listing_reason(lab, stub))
    assert_not_told(blocklist.check_listing_reason(lab, stub), "sends forged", "10.3.0.127")
    assert_failed(blocklist.check_listing_reason(lab, REASON), "must be a function")
