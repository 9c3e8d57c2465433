"""The spam-score exercise of notebook 06 (anti-spam), against a real lab whose MX filters spam."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from feedback_checks import assert_failed, assert_not_told, assert_passed, assert_unanswered

import smtplab
from smtplab.exercises import spam_score

ALICE = "alice@example.org"
BOB = "bob@example.net"


@pytest.fixture
def spam_lab() -> Iterator[smtplab.Lab]:
    """The notebook's lab: Scenario.security() files a score of 5 in Junk and refuses 10."""
    with smtplab.start(scenario=smtplab.Scenario.security(policy="reject")) as lab:
        yield lab


def test_over_the_line_solution_passes(spam_lab: smtplab.Lab) -> None:
    spam_score.begin_junk_exercise(spam_lab)
    mine = spam_lab.send(ALICE, BOB, "URGENT: VERIFY YOUR ACCOUNT",
                         "Dear Bob, verify your account today or lose your lottery prize!!!\n")
    assert_passed(spam_score.check_over_the_line(spam_lab, mine, "BAIT_WORDS"), "filed your message in Junk",
                  "BAIT_WORDS=2.5", "Without BAIT_WORDS", "spf=pass")
    assert_passed(spam_score.check_over_the_line(spam_lab, mine, ["subject_all_caps"]))


def test_the_deciding_rules_are_judged_by_the_report(spam_lab: smtplab.Lab) -> None:
    """2.5 + 1.5 + 1 = 5: any one of the three carries this message over junk-at 5, as its own report shows."""
    spam_score.begin_junk_exercise(spam_lab)
    mine = spam_lab.send(ALICE, BOB, "URGENT: VERIFY YOUR ACCOUNT",
                         "Dear Bob, verify your account today or lose your lottery prize!!!\n")
    assert_unanswered(spam_score.check_over_the_line(spam_lab, mine))
    feedback = spam_score.check_over_the_line(spam_lab, mine, "SPF_FAIL")
    assert_failed(feedback, "SPF_FAIL did not fire", "BAIT_WORDS=2.5")
    assert_failed(spam_score.check_over_the_line(spam_lab, mine, ["BAIT_WORDS", "MANY_EXCLAMATIONS"]),
                  "stays under junk-at 5 even if", "only the rules it needs")
    assert_failed(spam_score.check_over_the_line(spam_lab, mine, 3), "rule name, or a list")
    assert_failed(spam_score.check_over_the_line(spam_lab, mine, []), "deciding_rules is empty")
    feedback = spam_score.check_over_the_line(spam_lab, mine, "SPF_FAIL")
    assert_not_told(feedback, "Without BAIT_WORDS", "Right")


def test_the_notebooks_own_example_does_not_count(spam_lab: smtplab.Lab) -> None:
    """The gamed solution: the notebook's YOU ARE A WINNER message, sent before the exercise began."""
    theirs = spam_lab.send(ALICE, BOB, spam_score.NOTEBOOK_SUBJECT, "Claim your lottery prize today!!!\n")
    assert_failed(spam_score.check_over_the_line(spam_lab, theirs), "begin_junk_exercise")
    spam_score.begin_junk_exercise(spam_lab)
    assert_failed(spam_score.check_over_the_line(spam_lab, theirs), "before the exercise began")
    again = spam_lab.send(ALICE, BOB, spam_score.NOTEBOOK_SUBJECT, "Claim your lottery prize today!!!\n")
    assert_failed(spam_score.check_over_the_line(spam_lab, again), "notebook's subject")


def test_a_harmless_message_is_told_its_score_and_how_to_try(spam_lab: smtplab.Lab) -> None:
    spam_score.begin_junk_exercise(spam_lab)
    harmless = spam_lab.send(ALICE, BOB, "Lunch?", "Friday at noon?\n")
    assert_failed(spam_score.check_over_the_line(spam_lab, harmless), "in Bob's INBOX", "X-Spam-Score 0",
                  "smtplab.spam.score")
    from_bob = spam_lab.send(BOB, ALICE, "URGENT: VERIFY YOUR ACCOUNT", "lottery prize!!!\n")
    assert_failed(spam_score.check_over_the_line(spam_lab, from_bob), "from alice@example.org")


def test_placeholder_and_nonsense(spam_lab: smtplab.Lab) -> None:
    assert_unanswered(spam_score.check_over_the_line(spam_lab, None))
    assert_failed(spam_score.check_over_the_line(spam_lab, "250 OK"), "what lab.send(...) returns")
