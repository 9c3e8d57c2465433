"""The exercise checks of notebooks 01 (SMTP handshake) and 02 (MX lookup), against real labs.

Every check passes on the solution, fails on typical wrong answers with feedback that names what the
learner did and what the server said, and says "not answered yet" (never crashes) on the placeholder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest

import smtplab
from smtplab.exercises import nb01, nb02

from feedback_checks import assert_failed, assert_passed, assert_unanswered

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


# --- notebook 01, exercise 1: the lone dot -------------------------------------------------------

def wire_lines(middle: Any, end: bool = True) -> list[Any]:
    lines = [
        "From: Alice <alice@example.org>",
        "To: Bob <bob@example.net>",
        "Subject: the lone dot",
        "",
        nb01.DOT_LINES[0],
        middle,
        nb01.DOT_LINES[2],
    ]
    return lines + ["."] if end else lines


def test_dot_stuffing_solution_arrives_intact(lab: smtplab.Lab) -> None:
    assert_passed(nb01.check_dot_stuffing(wire_lines(".."), lab), "You sent '..'", "250 2.0.0")
    body = lab.messages("bob@example.net")[-1].get_payload().replace("\r\n", "\n").split("\n")
    assert nb01.DOT_LINES[1] in body


def test_dot_stuffing_plain_dot_ends_the_message_early(lab: smtplab.Lab) -> None:
    feedback = nb01.check_dot_stuffing(wire_lines("."), lab)
    assert_failed(feedback, "ended too early", "250 2.0.0 OK: delivered as",
                  "'Everything after it is still part of the message.' as a command",
                  "500 5.5.1", "one more dot")


def test_dot_stuffing_names_what_bob_saw_instead(lab: smtplab.Lab) -> None:
    assert_failed(nb01.check_dot_stuffing(wire_lines("..."), lab), "shows '..'", "exactly one leading dot")
    assert_failed(nb01.check_dot_stuffing(wire_lines(" ."), lab), "shows ' .'")


def test_dot_stuffing_without_the_final_dot_says_the_server_waits(lab: smtplab.Lab) -> None:
    assert_failed(nb01.check_dot_stuffing(wire_lines("..", end=False), lab), "still waiting", "End wire_lines")


def test_dot_stuffing_placeholder_and_nonsense(lab: smtplab.Lab) -> None:
    assert_unanswered(nb01.check_dot_stuffing(wire_lines(...), lab))
    assert_unanswered(nb01.check_dot_stuffing(None, lab))
    assert_failed(nb01.check_dot_stuffing("..", lab), "list of strings")
    assert_failed(nb01.check_dot_stuffing(["a\nb", "."], lab), "one line per item")


# --- notebook 01, exercise 2: a whole session -------------------------------------------------------

GOOD_SESSION = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "DATA",
                "Subject: my own session", "", "Hello Bob.", ".", "QUIT"]


def session_with(lab: smtplab.Lab, lines: list[str], host: str = "mx1.example.net") -> smtplab.SmtpSession:
    session = lab.session(host)
    for line in lines:
        session.send(line)
    return session


def test_session_solution_passes(lab: smtplab.Lab) -> None:
    assert_passed(nb01.check_session(session_with(lab, GOOD_SESSION), lab),
                  "Subject: my own session", "250 2.0.0 OK: delivered as", "QUIT with 221")


def test_session_rcpt_before_mail(lab: smtplab.Lab) -> None:
    lines = ["EHLO student.local", "RCPT TO:<bob@example.net>", "MAIL FROM:<alice@example.org>", "DATA",
             "Subject: oops", "", "Hello.", "."]
    assert_failed(nb01.check_session(session_with(lab, lines), lab),
                  "your RCPT came before MAIL: the server said 503 5.5.1 Error: need MAIL command")
    assert lab.messages("bob@example.net") == []


def test_session_mail_before_ehlo(lab: smtplab.Lab) -> None:
    assert_failed(nb01.check_session(session_with(lab, ["MAIL FROM:<alice@example.org>"]), lab),
                  "your MAIL came before EHLO: the server said 503 5.5.1")


def test_session_recovered_mistakes_still_pass_and_are_mentioned(lab: smtplab.Lab) -> None:
    feedback = nb01.check_session(session_with(lab, ["MAIL FROM:<alice@example.org>", *GOOD_SESSION]), lab)
    assert_passed(feedback, "refused 1 line(s)", "your MAIL came before EHLO", "You recovered")


def test_session_without_quit_is_almost(lab: smtplab.Lab) -> None:
    assert_failed(nb01.check_session(session_with(lab, GOOD_SESSION[:-1]), lab), "almost", "QUIT", "221")


def test_session_wrong_recipients_and_syntax(lab: smtplab.Lab) -> None:
    relayed = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@gmail.com>", "DATA"]
    assert_failed(nb01.check_session(session_with(lab, relayed), lab), "550 5.7.1 Relaying denied", "open relay")
    unknown = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bobby@example.net>"]
    assert_failed(nb01.check_session(session_with(lab, unknown), lab), "550 5.1.1", "no such mailbox")
    syntax = ["EHLO student.local", "MAIL FROM alice@example.org"]
    assert_failed(nb01.check_session(session_with(lab, syntax), lab), "501 5.5.4", "angle brackets")


def test_session_message_lines_before_data(lab: smtplab.Lab) -> None:
    lines = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "Subject: hi"]
    assert_failed(nb01.check_session(session_with(lab, lines), lab),
                  "took your line 'Subject: hi' for a command", "500 5.5.1", "after DATA")


def test_session_missing_steps_are_named(lab: smtplab.Lab) -> None:
    envelope = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>"]
    assert_failed(nb01.check_session(session_with(lab, envelope), lab), "never sent DATA")
    assert_failed(nb01.check_session(session_with(lab, [*envelope, "DATA", "Subject: x"]), lab),
                  "inside DATA", "'.'")
    assert_failed(nb01.check_session(session_with(lab, ["EHLO student.local"]), lab), "no sender")


def test_session_to_the_submission_port_explains_530(lab: smtplab.Lab) -> None:
    lines = ["EHLO student.local", "MAIL FROM:<alice@example.org>"]
    assert_failed(nb01.check_session(session_with(lab, lines, "smtp.example.org"), lab),
                  "530 5.7.0", "submission server", "mx1.example.net")


def test_session_placeholder(lab: smtplab.Lab) -> None:
    assert_unanswered(nb01.check_session(lab.session("mx1.example.net"), lab))
    assert_unanswered(nb01.check_session(None, lab))
    assert_failed(nb01.check_session("EHLO student.local", lab), "lab.session")


# --- notebook 01, exercise 3: predict 530 -------------------------------------------------------------

def test_starttls_prediction(lab: smtplab.Lab) -> None:
    assert_passed(nb01.check_starttls_prediction(530, lab), "530 5.7.0 Must issue a STARTTLS command first")
    assert_passed(nb01.check_starttls_prediction("530 5.7.0", lab))
    assert_failed(nb01.check_starttls_prediction(250, lab), "250 would mean", "The server said: 530 5.7.0")
    assert_failed(nb01.check_starttls_prediction(503, lab), "more specific")
    assert_failed(nb01.check_starttls_prediction(535, lab), "not tried to log in")
    assert_failed(nb01.check_starttls_prediction(451, lab), "temporary failure")
    assert_failed(nb01.check_starttls_prediction("five hundred", lab), "three digits")
    assert_failed(nb01.check_starttls_prediction(True, lab), "three digits")
    assert_unanswered(nb01.check_starttls_prediction(None, lab))


# --- notebook 02, exercise 1: the first MX ----------------------------------------------------------

def test_first_mx(lab: smtplab.Lab) -> None:
    assert_passed(nb02.check_first_mx("mx1.example.net", lab), "preference 10", "lowest")
    assert_passed(nb02.check_first_mx(" MX1.example.net. ", lab))
    assert_passed(nb02.check_first_mx("mx1", lab))
    assert_failed(nb02.check_first_mx("mx2.example.net", lab), "preference 20", "lower number wins")
    assert_failed(nb02.check_first_mx("example.net", lab), "implicit MX")
    assert_failed(nb02.check_first_mx("smtp.example.net", lab), "submission server")
    assert_failed(nb02.check_first_mx("imap.example.net", lab), "IMAP")
    assert_failed(nb02.check_first_mx("smtp.example.org", lab), "Alice's own server")
    assert_failed(nb02.check_first_mx("gmail.com", lab), "10 mx1.example.net, 20 mx2.example.net")
    assert_failed(nb02.check_first_mx(10, lab), "host name in quotes")
    assert_unanswered(nb02.check_first_mx(None, lab))


# --- notebook 02, exercise 2: Null MX ----------------------------------------------------------------

def test_null_mx_choice() -> None:
    assert_passed(nb02.check_null_mx("d"), "5.1.10", "at once")
    assert_passed(nb02.check_null_mx(" D) "))
    assert_failed(nb02.check_null_mx("a"), "root of DNS")
    assert_failed(nb02.check_null_mx("b"), "temporary", "4xx")
    assert_failed(nb02.check_null_mx("c"), "implicit MX applies only when")
    assert_failed(nb02.check_null_mx("e"), "not one of the choices")
    assert_unanswered(nb02.check_null_mx(None))


def test_null_mx_answer_is_what_the_relay_does() -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"].append({"domain": "nomail.example", "hosts": {}, "mx": [[0, "."]]})
    with smtplab.start(scenario=scenario) as lab:
        result = lab.send("alice@example.org", "someone@nomail.example", "x", "y")
        status = lab.queue_item(result.queue_id).recipients[0]
        assert (status.state, status.final_status) == ("bounced", "5.1.10")


# --- notebook 02, exercise 3: mx2 first ----------------------------------------------------------------

@contextmanager
def lab_with_mx(mx: list[list[Any]]) -> Iterator[smtplab.Lab]:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"][1]["mx"] = mx
    with smtplab.start(scenario=scenario) as lab:
        yield lab


def test_mx2_first_solution_passes_with_a_real_delivery() -> None:
    with lab_with_mx([[20, "mx1.example.net"], [10, "mx2.example.net"]]) as lab:
        assert_passed(nb02.check_mx2_first(lab), "10 mx2.example.net, 20 mx1.example.net", "by mx2.example.net")
        hops = smtplab.received_hops(lab.messages("bob@example.net")[-1])
        assert hops[-1].by == "mx2.example.net"


@pytest.mark.parametrize("mx, fragment", [
    ([[10, "mx1.example.net"], [20, "mx2.example.net"]], "mx1 has the lower number"),
    ([[10, "mx1.example.net"], [10, "mx2.example.net"]], "half the time"),
    ([[5, "mx2.example.net"]], "Keep mx1 as the backup"),
    ([[10, "mx1.example.net"]], "no MX record for mx2"),
    ([[10, "mx1.example.net"], [20, "mx2.example.net"], [5, "smtp.example.org"]], "mx1 has the lower number"),
])
def test_mx2_first_wrong_preferences(mx: list[list[Any]], fragment: str) -> None:
    with lab_with_mx(mx) as lab:
        assert_failed(nb02.check_mx2_first(lab), fragment)


def test_mx2_first_other_mistakes() -> None:
    scenario = smtplab.Scenario.default().to_dict()
    assert_failed(nb02.check_mx2_first(scenario), "not a running lab")
    assert_unanswered(nb02.check_mx2_first(None))
    assert_failed(nb02.check_mx2_first("my_lab"), "smtplab.start")
    with lab_with_mx([[20, "mx1.example.net"], [10, "mx2.example.net"]]) as lab:
        lab.host("mx2").down()
        assert_failed(nb02.check_mx2_first(lab), "mx2.example.net is down")
    assert_failed(nb02.check_mx2_first(lab), "stopped")


# --- the notebooks and their solutions come from one source ---------------------------------------

@pytest.mark.parametrize("name", ["01-smtp-handshake", "02-mx-lookup"])
def test_solution_notebook_differs_only_in_solution_cells(name: str) -> None:
    student = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    solution = nbformat.read(NOTEBOOKS / "solutions" / f"{name}.ipynb", as_version=4)
    assert len(student.cells) == len(solution.cells)
    answers = 0
    for mine, theirs in zip(student.cells, solution.cells, strict=True):
        assert "### BEGIN SOLUTION" not in mine.source
        if "### BEGIN SOLUTION" in theirs.source:
            answers += 1
            assert "### END SOLUTION" in theirs.source
        else:
            assert mine.source == theirs.source
    assert answers == 3
