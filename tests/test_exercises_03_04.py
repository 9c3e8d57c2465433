"""The exercise checks of notebooks 03 (relay and delivery) and 04 (IMAP), against a real lab.

Every check passes on the solution, fails with the right explanation on typical wrong answers,
and says "not answered yet" (without raising) on the notebook's placeholder.
"""

from __future__ import annotations

import imaplib
from email.message import Message
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
from smtplab.exercises import forget_answers, nb03, nb04

BOB = "bob@example.net"
ALICE = "alice@example.org"
SUBJECTS = ("Lunch on Friday?", "Project report", "Photos from the trip")


# --- notebook 03, exercise 1: which host delivers with mx1 down ---

@pytest.fixture
def fallback(lab: smtplab.Lab) -> smtplab.SendResult:
    lab.host("mx1").down()
    return lab.send(ALICE, BOB, "Plan B", "mx1 is down\n")


def test_fallback_solution_passes_and_quotes_the_received_header(lab: smtplab.Lab, fallback: Any) -> None:
    for answer in ("mx2.example.net", "MX2.example.net.", "mx2"):
        forget_answers()
        assert_passed(nb03.check_fallback_prediction(lab, answer, fallback), "by mx2.example.net",
                      "The header: from smtp.example.org")


@pytest.mark.parametrize(("answer", "phrases"), [
    ("mx1.example.net", ["lowest preference", "connection is refused", "topmost Received header"]),
    ("smtp.example.org", ["Alice's provider", "topmost Received header"]),
    ("smtp.example.net", ["Bob submits his own mail", "MX records"]),
    ("imap.example.net", ["IMAP", "topmost Received header"]),
    ("dns.lab", ["not a host of this lab"]),
    ("mail.example.com", ["not a host of this lab", "lab.hosts"]),
    (42, ["give a host name as a string"]),
])
def test_fallback_wrong_predictions_are_explained(lab: smtplab.Lab, fallback: Any, answer: Any,
                                                  phrases: list[str]) -> None:
    feedback = nb03.check_fallback_prediction(lab, answer, fallback)
    assert_failed(feedback, *phrases)
    assert_not_told(feedback, "mx2")


def test_fallback_prediction_counts_once(lab: smtplab.Lab, fallback: Any) -> None:
    assert_failed(nb03.check_fallback_prediction(lab, "mx1.example.net", fallback))
    feedback = nb03.check_fallback_prediction(lab, "mx2.example.net", fallback)
    assert_failed(feedback, "first answer checked, 'mx1.example.net'")
    assert_not_told(feedback, "by mx2")


def test_fallback_placeholder_and_missing_result(lab: smtplab.Lab, fallback: Any) -> None:
    assert_unanswered(nb03.check_fallback_prediction(lab, None, fallback))
    assert_unanswered(nb03.check_fallback_prediction(lab, ..., fallback))
    assert_unanswered(nb03.check_fallback_prediction(lab, "  ", fallback))
    assert_failed(nb03.check_fallback_prediction(lab, "mx2.example.net", None), "run the cell that sends")


def test_fallback_when_nothing_was_delivered_says_what_the_queue_says(lab: smtplab.Lab) -> None:
    lab.host("mx1").down()
    lab.host("mx2").down()
    stuck = lab.send(ALICE, BOB, "Stuck", "both down\n")
    assert_failed(nb03.check_fallback_prediction(lab, "mx2.example.net", stuck),
                  "not in any recipient's mailbox", "deferred", "up()")


def test_fallback_with_mx1_up_compares_with_the_truth(lab: smtplab.Lab) -> None:
    normal = lab.send(ALICE, BOB, "Normal", "all up\n")
    assert_passed(nb03.check_fallback_prediction(lab, "mx1.example.net", normal), "by mx1.example.net")
    forget_answers()
    assert_not_told(nb03.check_fallback_prediction(lab, "mx2.example.net", normal), "mx1")


# --- notebook 03, exercise 2: deferred, then delivered ---

def test_deferred_then_delivered_solution_passes(lab: smtplab.Lab) -> None:
    nb03.begin_retry_exercise(lab)
    # the solution cell of the notebook
    lab.host("mx1").inject("RCPT", "451 4.3.0 Mailbox temporarily locked, try later")
    lab.host("mx2").down()
    mine = lab.send(ALICE, BOB, "Exercise 2", "This one has to wait.\n")
    lab.host("mx1").clear_faults()
    lab.host("mx2").up()
    lab.clock.advance("1m")
    feedback = nb03.check_deferred_then_delivered(lab, mine.queue_id)
    assert_passed(feedback, "deferred, retried, and delivered", "attempt 2", "queue noted")
    assert nb03.check_deferred_then_delivered(lab, mine).ok, "a SendResult is accepted too"


def test_deferred_then_delivered_rejects_the_notebooks_own_message(lab: smtplab.Lab) -> None:
    """The gamed solution: the message the notebook itself deferred (and delivered) before the exercise."""
    lab.host("mx1").down()
    lab.host("mx2").down()
    waiting = lab.send(ALICE, BOB, "Are you there?", "the notebook's own deferred message\n")
    lab.host("mx2").up()
    lab.clock.advance("5m")
    assert lab.queue_item(waiting.queue_id).recipients[0].state == "delivered"
    assert_failed(nb03.check_deferred_then_delivered(lab, waiting.queue_id), "begin_retry_exercise")
    nb03.begin_retry_exercise(lab)
    assert_failed(nb03.check_deferred_then_delivered(lab, waiting.queue_id), "before the exercise began",
                  "notebook's own")


def test_deferred_then_delivered_explains_each_wrong_state(lab: smtplab.Lab) -> None:
    nb03.begin_retry_exercise(lab)
    assert_unanswered(nb03.check_deferred_then_delivered(lab, None))
    assert_unanswered(nb03.check_deferred_then_delivered(lab, ...))
    assert_failed(nb03.check_deferred_then_delivered(lab, "NOSUCHID"), "no message with queue id 'NOSUCHID'",
                  "queued as")

    at_once = lab.send(ALICE, BOB, "Fast", "delivered at once\n")
    assert_failed(nb03.check_deferred_then_delivered(lab, at_once.queue_id), "first attempt", "mx1.example.net",
                  "never waited")

    lab.host("mx1").down()
    lab.host("mx2").down()
    waiting = lab.send(ALICE, BOB, "Waiting", "both down\n")
    assert_failed(nb03.check_deferred_then_delivered(lab, waiting.queue_id), "still deferred", "1 attempt(s)",
                  "451 4.4.1 connection refused", "lab.clock.advance")
    lab.clock.advance("1m")
    assert_failed(nb03.check_deferred_then_delivered(lab, waiting.queue_id), "still deferred", "2 attempt(s)")
    lab.host("mx1").up()
    lab.host("mx2").up()

    lost = lab.send(ALICE, "nobody@example.net", "Lost", "no such user\n")
    assert_failed(nb03.check_deferred_then_delivered(lab, lost.queue_id), "bounced for nobody@example.net",
                  "550 5.1.1", "temporary failure")
    dsn = next(item for item in lab.queue if not item.sender)
    assert_failed(nb03.check_deferred_then_delivered(lab, dsn.queue_id), "is a bounce", "null sender <>")


# --- notebook 03, exercise 3: read a DSN ---

def _dsn_about(lab: smtplab.Lab, message_id: str) -> Message:
    return next(m for m in lab.messages(ALICE)
                if m.get_content_type() == "multipart/report" and message_id in m.as_string())


def test_send_mystery_bounces_one_recipient_and_removes_its_faults(lab: smtplab.Lab) -> None:
    kept = lab.host("mx2").inject("MAIL", "451 4.3.0 try later", probability=0.01)
    mystery = nb03.send_mystery(lab)
    item = lab.queue_item(mystery.queue_id)
    states = {r.address: r.state for r in item.recipients}
    assert states == {BOB: "bounced", ALICE: "delivered"}
    assert lab.host("mx1").faults == ()
    assert lab.host("mx2").faults == (kept,), "a fault the learner set stays"
    assert any(m["Subject"] == nb03.MYSTERY_SUBJECT for m in lab.messages(ALICE)), "the copy to Alice arrived"


def test_dsn_solution_passes(lab: smtplab.Lab) -> None:
    mystery = nb03.send_mystery(lab)
    # the solution cell of the notebook
    per_message, *per_recipient = list(_dsn_about(lab, mystery.message_id).iter_parts())[1].get_payload()
    status = per_recipient[0]["Status"]
    recipient = per_recipient[0]["Final-Recipient"].split(";")[1].strip()
    assert_passed(nb03.check_dsn(lab, mystery, status, recipient), "Status 5.2.1 for bob@example.net",
                  "Mailbox disabled", "permanent")
    assert nb03.check_dsn(lab, mystery, " 5.2.1 ", "rfc822; <Bob@Example.net>").ok, "copied field values work"


def test_dsn_wrong_answers_are_explained(lab: smtplab.Lab) -> None:
    lab.send(ALICE, "nobody@example.net", "Hello?", "the earlier bounce of the notebook\n")
    mystery = nb03.send_mystery(lab)
    assert_unanswered(nb03.check_dsn(lab, mystery, None, None))
    assert_failed(nb03.check_dsn(lab, mystery, "550", BOB), "three-digit SMTP reply code", "Diagnostic-Code")
    assert_failed(nb03.check_dsn(lab, mystery, "5.1.1", "nobody@example.net"), "earlier bounce",
                  "nobody@example.net failed in the earlier bounce")
    assert_failed(nb03.check_dsn(lab, mystery, "5.2.1", ALICE), "is the sender", "Final-Recipient")
    assert_failed(nb03.check_dsn(lab, mystery, "5.2.1", None), "dsn_recipient is still empty")
    assert_failed(nb03.check_dsn(lab, mystery, "4.2.1", BOB), "does not say '4.2.1'")
    assert_failed(nb03.check_dsn(lab, None, "5.2.1", BOB), "nb03.send_mystery(lab)")


def test_dsn_check_when_the_mystery_is_still_queued(lab: smtplab.Lab) -> None:
    lab.host("mx1").down()
    lab.host("mx2").down()
    mystery = nb03.send_mystery(lab)
    assert_failed(nb03.check_dsn(lab, mystery, "5.2.1", BOB), "no DSN about the mystery message",
                  "bob@example.net: deferred")


# --- notebook 04 ---

@pytest.fixture
def mailbox(lab: smtplab.Lab) -> smtplab.Lab:
    for subject in SUBJECTS:
        lab.send(ALICE, BOB, subject, f"About: {subject}\n")
    return lab


@pytest.fixture
def expunged(mailbox: smtplab.Lab) -> smtplab.Lab:
    """The notebook's mailbox: a newsletter arrived first and was deleted, so every UID is one more than the
    message's sequence number."""
    mailbox.send(ALICE, BOB, "Weekly newsletter", "old news\n")
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    imap.logout()
    return mailbox


def _uid_of(imap: imaplib.IMAP4, subject: str) -> bytes:
    status, data = imap.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
    return data[0].split()[-1]


def test_uid_solution_passes(mailbox: smtplab.Lab) -> None:
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    # the solution cell of the notebook
    status, data = imap.uid("SEARCH", None, "SUBJECT", '"Project report"')
    my_uid = int(data[0])
    assert_passed(nb04.check_uid(mailbox, my_uid, "Project report"), f"UID {my_uid} is 'Project report'")
    for form in (str(my_uid), data[0], data):  # what imaplib hands back works as well
        assert nb04.check_uid(mailbox, form, "Project report").ok, form
    imap.logout()


def test_uid_wrong_answers_are_explained(mailbox: smtplab.Lab) -> None:
    entries = {e.subject: e for e in nb04.mailbox_listing(mailbox)}
    other = entries["Lunch on Friday?"]
    assert_unanswered(nb04.check_uid(mailbox, None, "Project report"))
    assert_unanswered(nb04.check_uid(mailbox, ..., "Project report"))
    assert_failed(nb04.check_uid(mailbox, other.uid, "Project report"), f"UID {other.uid} is the message "
                  "'Lunch on Friday?' from alice@example.org", "SEARCH")
    assert_failed(nb04.check_uid(mailbox, 99, "Project report"), "no message", "has UID 99")
    target = entries["Project report"]
    for wrong in (other.uid, 99, 0):
        assert_not_told(nb04.check_uid(mailbox, wrong, "Project report"), f"UID {target.uid} ", f"UID {target.uid}.")
    assert_failed(nb04.check_uid(mailbox, "1 2", "Project report"), "holds 2 numbers", "several messages")
    assert_failed(nb04.check_uid(mailbox, [b"1", b"2"], "Project report"), "not a list of 2 items")
    assert_failed(nb04.check_uid(mailbox, "Project report", "Project report"), "whole number")
    assert_failed(nb04.check_uid(mailbox, 1, "No such subject"), "no message with the subject")


def test_uid_in_the_notebooks_mailbox_differs_from_the_sequence_number(expunged: smtplab.Lab) -> None:
    """The notebook deletes a message before exercise 1, so the sequence number is a wrong answer there."""
    target = next(e for e in nb04.mailbox_listing(expunged) if e.subject == "Project report")
    assert target.seq != target.uid
    feedback = nb04.check_uid(expunged, target.seq, "Project report")
    assert_failed(feedback, "sequence number")
    assert_not_told(feedback, f"UID {target.uid}")
    assert_passed(nb04.check_uid(expunged, target.uid, "Project report"), f"its sequence number is {target.seq}")


def test_uid_check_tells_a_sequence_number_from_a_uid(mailbox: smtplab.Lab) -> None:
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")  # after EXPUNGE every later message moves up by one
    imap.expunge()
    imap.logout()
    entries = nb04.mailbox_listing(mailbox)
    target = next(e for e in entries if e.seq != e.uid)
    assert_failed(nb04.check_uid(mailbox, target.seq, target.subject), "sequence number", "imap.uid")
    assert_passed(nb04.check_uid(mailbox, target.uid, target.subject), f"its sequence number is {target.seq}")


def test_peek_prediction(mailbox: smtplab.Lab) -> None:
    assert_unanswered(nb04.check_peek_prediction(mailbox, None))
    assert_failed(nb04.check_peek_prediction(mailbox, "maybe"), "True or False")
    right = nb04.check_peek_prediction(mailbox, False)
    assert_passed(right, "still not \\Seen", "FETCH 1 (BODY.PEEK[])", "OK FETCH completed")
    assert "LOGOUT" not in right.message and "SEARCH" not in right.message, "only the experiment is shown"
    forget_answers()
    wrong = nb04.check_peek_prediction(mailbox, True)
    assert_failed(wrong, "Not what the server did", "compare the two FLAGS")
    assert_not_told(wrong, "not \\Seen", "still", "without marking", "side effects")
    forget_answers()
    assert nb04.check_peek_prediction(mailbox, "no").ok
    forget_answers()
    assert_failed(nb04.check_peek_prediction(mailbox, True))
    assert_failed(nb04.check_peek_prediction(mailbox, False), "first answer checked, True")
    unseen = [e for e in nb04.mailbox_listing(mailbox) if "\\Seen" not in e.flags]
    assert len(unseen) == len(SUBJECTS), "the check marked nothing as read"


def test_peek_prediction_when_everything_was_read(mailbox: smtplab.Lab) -> None:
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    imap.store("1:*", "+FLAGS", "(\\Seen)")
    imap.logout()
    assert_passed(nb04.check_peek_prediction(mailbox, False), "still not \\Seen")
    assert all("\\Seen" in e.flags for e in nb04.mailbox_listing(mailbox)), "\\Seen is put back"


def test_flagged_solution_passes(mailbox: smtplab.Lab) -> None:
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    assert_unanswered(nb04.check_flagged(mailbox, "Lunch on Friday?"))
    # the solution cell of the notebook
    status, data = imap.uid("SEARCH", None, "SUBJECT", '"Lunch on Friday?"')
    lunch = data[0].split()[-1]
    imap.uid("STORE", lunch, "+FLAGS", "(\\Flagged)")
    assert_passed(nb04.check_flagged(mailbox, "Lunch on Friday?"), f"UID {int(lunch)}", "second IMAP connection")
    imap.uid("STORE", _uid_of(imap, "Project report"), "+FLAGS", "(\\Flagged)")
    assert_failed(nb04.check_flagged(mailbox, "Lunch on Friday?"), "so is 1 other message:", "-FLAGS")
    imap.logout()


def test_flagged_every_message_fails(mailbox: smtplab.Lab) -> None:
    """The gamed solution: STORE 1:* +FLAGS (\\Flagged) stars the right message among all the others."""
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    unanswered = nb04.check_flagged(mailbox, "Lunch on Friday?")
    assert_unanswered(unanswered)
    assert_not_told(unanswered, "+FLAGS", "STORE\", uid", "(\\\\Flagged)")
    imap.store("1:*", "+FLAGS", "(\\Flagged)")
    assert_failed(nb04.check_flagged(mailbox, "Lunch on Friday?"), "so are 2 other messages:")
    imap.logout()


def test_flagged_wrong_message_is_named(mailbox: smtplab.Lab) -> None:
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    report = _uid_of(imap, "Project report")
    imap.uid("STORE", report, "+FLAGS", "(\\Flagged)")
    feedback = nb04.check_flagged(mailbox, "Lunch on Friday?")
    assert_failed(feedback, f"you flagged UID {int(report)} ('Project report'", "no \\Flagged")
    assert_not_told(feedback, f"UID {int(_uid_of(imap, 'Lunch on Friday?'))} ")
    imap.logout()


def test_flagged_hints_at_sequence_numbers(mailbox: smtplab.Lab) -> None:
    imap = mailbox.imap(BOB)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")  # now sequence number n is UID n + 1
    imap.expunge()
    target = next(e for e in nb04.mailbox_listing(mailbox) if e.seq == 1)
    imap.store(str(target.uid), "+FLAGS", "(\\Flagged)")  # a UID used as a sequence number
    assert_failed(nb04.check_flagged(mailbox, target.subject), "imap.store(...) takes a sequence number")
    imap.logout()


def test_settle_leaves_no_answer_behind(mailbox: smtplab.Lab) -> None:
    imap = mailbox.imap(BOB)
    mark = mailbox.mark()
    imap.select("INBOX")
    assert nb04.settle(mailbox)
    lines = [e.text for e in mailbox.trace.filter(protocol="imap", since=mark) if e.kind == "line"]
    assert lines[-1].endswith("Selected mailbox."), lines
    imap.logout()
    assert nb04.settle(mailbox)
    assert mailbox.trace.filter(protocol="imap")[-1].kind == "close"


def test_dsn_wrong_answers_give_nothing_away(lab: smtplab.Lab) -> None:
    mystery = nb03.send_mystery(lab)
    for status, recipient in [("4.2.1", BOB), ("5.1.1", BOB), ("550", BOB), ("5.2.1", ALICE), ("x", "y"),
                              ("5.2.1", "nobody@example.net")]:
        feedback = nb03.check_dsn(lab, mystery, status, recipient)
        given = {status, recipient}
        assert_not_told(feedback, *[truth for truth in ("5.2.1", BOB) if truth not in given])


def test_the_checks_of_lessons_02_to_04_speak_spanish(lab: smtplab.Lab) -> None:
    """With lang="es" an unanswered, a wrong and a right check read in Spanish and still tell no answer."""
    from smtplab.exercises import nb02
    from smtplab.i18n import use_language

    with use_language("es"):
        feedback = nb02.check_null_mx("b")
        assert not feedback.ok and "¿Es un Null MX un estado temporal del dominio?" in feedback.message
        assert_not_told(feedback, '"d"', "5.1.10")
        assert "Asigna True o False" in nb04.check_peek_prediction(lab, None).message
        hint = nb03.check_fallback_prediction(lab, None, None)
        assert "Ejercicio 1 · ¿qué máquina entrega?" in str(hint) and "Escribe el nombre de la máquina" in hint.message
