"""The checks of notebook 13 (retrieval: POP3 beside IMAP), against a real lab: poplib and imaplib sessions.

Right, wrong, empty and trivial answers; the feedback never contains the expected answer.
"""

from __future__ import annotations

import poplib
import ssl
import threading

from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_failed,
    assert_not_told,
    assert_passed,
    assert_unanswered,
    fresh_answers,
)

import smtplab
from smtplab.exercises import retrieval

SUBJECTS = ("Lunch on Friday?", retrieval.UIDL_SUBJECT, "Photos from the trip")


def send_three(lab: smtplab.Lab) -> None:
    for subject in SUBJECTS:
        lab.send("alice@example.org", retrieval.BOB, subject, f"{subject}\n")
    lab.wait_for_delivery()


def uidls(lab: smtplab.Lab) -> list[str]:
    client = lab.pop3(retrieval.BOB)
    try:
        return [line.decode().split(" ", 1)[1] for line in client.uidl()[1]]
    finally:
        client.quit()


def read_each(lab: smtplab.Lab) -> None:
    """The learner's own session: UIDL, then each message's header (TOP n 0), as the exercise asks."""
    client = lab.pop3(retrieval.BOB)
    try:
        client.uidl()
        for number in range(1, client.stat()[0] + 1):
            client.top(number, 0)
    finally:
        client.quit()


def test_uidl_right_wrong_empty(lab: smtplab.Lab) -> None:
    send_three(lab)
    first, wanted, third = uidls(lab)
    read_each(lab)
    assert_passed(retrieval.check_uidl(wanted, lab), "RFC 1939 §7")
    assert_passed(retrieval.check_uidl(f"  {wanted}\n", lab))
    assert_passed(retrieval.check_uidl(wanted.encode(), lab))
    wrong = {
        third: "'Photos from the trip'",
        "2": "a message number",
        2: "a message number",
        f"2 {wanted}": "a whole line of the UIDL listing",
        "<20261130.1@example.org>": "Message-ID",
        "no-such-id": "no message in Bob's maildrop",
    }
    for answer, phrase in wrong.items():
        feedback = retrieval.check_uidl(answer, lab)
        assert_failed(feedback, phrase)
        assert_not_told(feedback, wanted)
    assert_unanswered(retrieval.check_uidl(..., lab))
    assert_unanswered(retrieval.check_uidl("", lab))
    assert_failed(retrieval.check_uidl(["x"], lab), "not a list")
    # the checks left the maildrop as it was: their own sessions deleted nothing
    assert uidls(lab) == [first, wanted, third]


def test_uidl_while_the_learner_holds_the_lock(lab: smtplab.Lab) -> None:
    send_three(lab)
    wanted = uidls(lab)[1]
    read_each(lab)
    mine = lab.pop3(retrieval.BOB)
    try:
        feedback = retrieval.check_uidl(wanted, lab)
        assert_failed(feedback, "[IN-USE]", ".quit()")
        assert_not_told(feedback, wanted)
    finally:
        mine.quit()
    assert_passed(retrieval.check_uidl(wanted, lab))


def test_uidl_needs_the_learners_own_session(lab: smtplab.Lab) -> None:
    """The right unique-id copied from elsewhere does not pass: a session of the learner's must have found it."""
    send_three(lab)
    wanted = uidls(lab)[1]  # UIDL alone: no message read
    feedback = retrieval.check_uidl(wanted, lab)
    assert_failed(feedback, "no POP3 session of yours")
    assert_not_told(feedback, wanted)
    client = lab.pop3(retrieval.BOB)  # the lesson's demonstration: UIDL 1 and TOP 1 0, another message
    client.uidl(1)
    client.top(1, 0)
    client.quit()
    assert_failed(retrieval.check_uidl(wanted, lab), "no POP3 session of yours")
    # the check's own sessions (UIDL and TOP of every message) never count as the learner's
    assert_failed(retrieval.check_uidl(wanted, lab), "no POP3 session of yours")
    client = lab.pop3(retrieval.BOB)
    client.uidl()
    client.retr(2)
    client.quit()
    assert_passed(retrieval.check_uidl(wanted, lab))


def test_uidl_when_the_message_is_gone(lab: smtplab.Lab) -> None:
    send_three(lab)
    client = lab.pop3(retrieval.BOB)
    client.dele(2)
    client.quit()
    assert_failed(retrieval.check_uidl("anything", lab), "no message with the subject", "DELE")


def delete_all(lab: smtplab.Lab) -> None:
    client = lab.pop3(retrieval.BOB)
    count = client.stat()[0]
    for number in range(1, count + 1):
        client.retr(number)
        client.dele(number)
    client.quit()


def test_prediction_right(lab: smtplab.Lab) -> None:
    send_three(lab)
    delete_all(lab)
    assert_passed(retrieval.check_select_prediction(0, lab), "0 EXISTS", "RFC 1939 §6")
    # the first prediction counts: changing it afterwards is noted, not judged afresh
    feedback = retrieval.check_select_prediction(3, lab)
    assert_passed(feedback, "You changed your answer to 3")


def test_prediction_wrong_and_malformed(lab: smtplab.Lab) -> None:
    send_three(lab)
    delete_all(lab)
    assert_unanswered(retrieval.check_select_prediction(..., lab))
    assert_unanswered(retrieval.check_select_prediction(" ", lab))
    assert_failed(retrieval.check_select_prediction("three", lab), "not a number")  # not committed
    assert_failed(retrieval.check_select_prediction(True, lab), "not a number")
    feedback = retrieval.check_select_prediction("3", lab)
    assert_failed(feedback, "prediction of 3", "DELE", "QUIT")
    assert "0 EXISTS" not in feedback.message and "0 message" not in feedback.message
    # a later right answer does not turn the committed wrong one into a pass
    assert_failed(retrieval.check_select_prediction(0, lab), "You changed your answer to 0")


def test_prediction_without_quit_keeps_the_messages(lab: smtplab.Lab) -> None:
    """DELE without QUIT removes nothing (RFC 1939 §6): the check sees the learner's open session and says so."""
    send_three(lab)
    client = lab.pop3(retrieval.BOB)
    client.dele(1)
    try:
        assert_failed(retrieval.check_select_prediction(0, lab), "[IN-USE]", ".quit()")
    finally:
        conn = lab.trace.connections("pop3")[-2]  # the learner's: the check's refused one came after it
        closed = threading.Event()
        lab.trace.subscribe(lambda e: closed.set() if e.conn == conn and e.kind == "close" else None)
        client.close()  # no QUIT: no UPDATE, the mark is forgotten
    assert closed.wait(10), "the server saw the learner's connection close"  # and unlocked in the same step
    assert_failed(retrieval.check_select_prediction(0, lab), "prediction of 0")


def test_pop3s_port(lab: smtplab.Lab) -> None:
    ports = lab.host(retrieval.MAILBOX_HOST).ports
    # the right number alone is not enough: the exercise asks to try it with POP3_SSL
    untried = retrieval.check_pop3s_port(ports["pop3s"], lab)
    assert_failed(untried, "no POP3 connection that began with TLS", "POP3_SSL")
    assert_not_told(untried, str(ports["pop3s"]))
    plain = poplib.POP3(lab.host(retrieval.MAILBOX_HOST).address, ports["pop3"])  # STLS is not implicit TLS
    plain.stls(smtplab_context(lab))
    plain.quit()
    assert_failed(retrieval.check_pop3s_port(ports["pop3s"], lab), "no POP3 connection that began with TLS")
    tried = poplib.POP3_SSL(lab.host(retrieval.MAILBOX_HOST).address, ports["pop3s"], context=smtplab_context(lab))
    tried.quit()
    assert_passed(retrieval.check_pop3s_port(ports["pop3s"], lab), "RFC 8314 §3.1")
    assert_passed(retrieval.check_pop3s_port(str(ports["pop3s"]), lab))
    wrong = {ports["pop3"]: "STLS", ports["imaps"]: "IMAP, not POP3", ports["imap"]: "STARTTLS",
             995: "on the Internet", 110: "on the Internet", 1: "nothing of imap.example.net listens"}
    for answer, phrase in wrong.items():
        feedback = retrieval.check_pop3s_port(answer, lab)
        assert_failed(feedback, phrase)
        assert_not_told(feedback, str(ports["pop3s"]))
    assert_unanswered(retrieval.check_pop3s_port(..., lab))
    assert_unanswered(retrieval.check_pop3s_port("", lab))
    assert_failed(retrieval.check_pop3s_port("pop3s", lab), "not a port number")
    # and the answer really is POP3 with TLS from the first byte
    host = lab.host(retrieval.MAILBOX_HOST)
    client = poplib.POP3_SSL(host.address, ports["pop3s"], context=smtplab_context(lab))
    assert client.getwelcome().startswith(b"+OK")
    client.quit()


def smtplab_context(lab: smtplab.Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=lab.ca_file)


def test_spanish_lesson_subject_and_feedback(lab: smtplab.Lab) -> None:
    """The Spanish notebook sends 'Acta del martes': the check finds it, and its feedback is Spanish."""
    from smtplab.i18n import use_language

    for subject in ("Comida del viernes", "Acta del martes", "Fotos del viaje"):
        lab.send("alice@example.org", retrieval.BOB, subject, f"{subject}\n")
    lab.wait_for_delivery()
    wanted = uidls(lab)[1]
    read_each(lab)
    with use_language("es"):
        feedback = retrieval.check_uidl("2", lab)
        assert_failed(feedback, "es un número de mensaje", "RFC 1939 §4")
        assert_not_told(feedback, wanted)
        assert feedback.exercise == "Ejercicio 1 · un UIDL con tu propia sesión POP3"
        assert_passed(retrieval.check_uidl(wanted, lab), "'Acta del martes'")
        assert_failed(retrieval.check_pop3s_port(lab.host("imap.example.net").ports["imap"], lab),
                      "el puerto de IMAP con STARTTLS")
