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
from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_failed,
    assert_not_told,
    assert_passed,
    assert_unanswered,
    fresh_answers,
)

import smtplab
from smtplab.exercises import forget_answers, handshake, msa, nb02

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


# --- notebook 01, exercise 1: the lone dot -------------------------------------------------------

def wire_lines(middle: Any, end: bool = True) -> list[Any]:
    lines = [
        "From: Alice <alice@example.org>",
        "To: Bob <bob@example.net>",
        "Subject: the lone dot",
        "",
        handshake.DOT_LINES[0],
        middle,
        handshake.DOT_LINES[2],
    ]
    return lines + ["."] if end else lines


def test_dot_stuffing_solution_arrives_intact(lab: smtplab.Lab) -> None:
    assert_passed(handshake.check_dot_stuffing(wire_lines(".."), lab), "You sent '..'", "250 2.0.0")
    body = lab.messages("bob@example.net")[-1].get_payload().replace("\r\n", "\n").split("\n")
    assert handshake.DOT_LINES[1] in body


def test_dot_stuffing_plain_dot_ends_the_message_early(lab: smtplab.Lab) -> None:
    feedback = handshake.check_dot_stuffing(wire_lines("."), lab)
    assert_failed(feedback, "ended too early", "250 2.0.0 OK: delivered as",
                  "'Everything after it is still part of the message.' as a command",
                  "500 5.5.1", "RFC 5321 section 4.5.2")
    assert_not_told(feedback, "'..'", "one more dot", "extra dot")


def test_dot_stuffing_names_what_bob_saw_instead(lab: smtplab.Lab) -> None:
    assert_failed(handshake.check_dot_stuffing(wire_lines("..."), lab), "shows '..'", "what Bob's mailbox holds")
    assert_failed(handshake.check_dot_stuffing(wire_lines(" ."), lab), "shows ' .'")
    for wrong in ("...", " .", "dot"):
        assert_not_told(handshake.check_dot_stuffing(wire_lines(wrong), lab), "send '..'", "one more dot")


def test_dot_stuffing_without_the_final_dot_says_the_server_waits(lab: smtplab.Lab) -> None:
    assert_failed(handshake.check_dot_stuffing(wire_lines("..", end=False), lab), "still waiting", "End wire_lines")


def test_dot_stuffing_placeholder_and_nonsense(lab: smtplab.Lab) -> None:
    assert_unanswered(handshake.check_dot_stuffing(wire_lines(...), lab))
    assert_unanswered(handshake.check_dot_stuffing(None, lab))
    assert_failed(handshake.check_dot_stuffing("..", lab), "list of strings")
    assert_failed(handshake.check_dot_stuffing(["a\nb", "."], lab), "one line per item")


# --- notebook 01, exercise 2: a whole session -------------------------------------------------------

GOOD_SESSION = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "DATA",
                "Subject: my own session", "", "Hello Bob.", ".", "QUIT"]


def session_with(lab: smtplab.Lab, lines: list[str], host: str = "mx1.example.net") -> handshake.TypedSession:
    session = handshake.typing_session(lab, host)
    for line in lines:
        session.send(line)
    return session


def test_session_solution_passes(lab: smtplab.Lab) -> None:
    assert_passed(handshake.check_session(session_with(lab, GOOD_SESSION), lab),
                  "Subject: my own session", "250 2.0.0 OK: delivered as", "QUIT with 221")


def test_session_rcpt_before_mail(lab: smtplab.Lab) -> None:
    lines = ["EHLO student.local", "RCPT TO:<bob@example.net>", "MAIL FROM:<alice@example.org>", "DATA",
             "Subject: oops", "", "Hello.", "."]
    assert_failed(handshake.check_session(session_with(lab, lines), lab),
                  "your RCPT came before MAIL: the server said 503 5.5.1 Error: need MAIL command")
    assert lab.messages("bob@example.net") == []


def test_session_mail_before_ehlo(lab: smtplab.Lab) -> None:
    assert_failed(handshake.check_session(session_with(lab, ["MAIL FROM:<alice@example.org>"]), lab),
                  "your MAIL came before EHLO: the server said 503 5.5.1")


def test_session_recovered_mistakes_still_pass_and_are_mentioned(lab: smtplab.Lab) -> None:
    feedback = handshake.check_session(session_with(lab, ["MAIL FROM:<alice@example.org>", *GOOD_SESSION]), lab)
    assert_passed(feedback, "refused 1 line(s)", "your MAIL came before EHLO", "You recovered")


def test_session_without_quit_is_almost(lab: smtplab.Lab) -> None:
    assert_failed(handshake.check_session(session_with(lab, GOOD_SESSION[:-1]), lab), "almost", "QUIT", "221")


def test_session_wrong_recipients_and_syntax(lab: smtplab.Lab) -> None:
    relayed = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@gmail.com>", "DATA"]
    assert_failed(handshake.check_session(session_with(lab, relayed), lab), "550 5.7.1 Relaying denied", "open relay")
    unknown = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bobby@example.net>"]
    assert_failed(handshake.check_session(session_with(lab, unknown), lab), "550 5.1.1", "no such mailbox")
    syntax = ["EHLO student.local", "MAIL FROM alice@example.org"]
    assert_failed(handshake.check_session(session_with(lab, syntax), lab), "501 5.5.4", "angle brackets")


def test_session_message_lines_before_data(lab: smtplab.Lab) -> None:
    lines = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "Subject: hi"]
    assert_failed(handshake.check_session(session_with(lab, lines), lab),
                  "took your line 'Subject: hi' for a command", "500 5.5.1", "after DATA")


def test_session_missing_steps_are_named(lab: smtplab.Lab) -> None:
    envelope = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>"]
    assert_failed(handshake.check_session(session_with(lab, envelope), lab), "never sent DATA")
    assert_failed(handshake.check_session(session_with(lab, [*envelope, "DATA", "Subject: x"]), lab),
                  "inside DATA", "'.'")
    assert_failed(handshake.check_session(session_with(lab, ["EHLO student.local"]), lab), "no sender")


def test_session_to_the_submission_port_explains_530(lab: smtplab.Lab) -> None:
    lines = ["EHLO student.local", "MAIL FROM:<alice@example.org>"]
    assert_failed(handshake.check_session(session_with(lab, lines, "smtp.example.org"), lab),
                  "530 5.7.0", "submission server", "mx1.example.net")


def test_session_placeholder(lab: smtplab.Lab) -> None:
    assert_unanswered(handshake.check_session(handshake.typing_session(lab), lab))
    assert_unanswered(handshake.check_session(None, lab))
    assert_failed(handshake.check_session("EHLO student.local", lab), "typing_session")


def test_session_with_shortcuts_fails_even_when_it_delivered(lab: smtplab.Lab) -> None:
    """The gamed solution: lab.session's ehlo()/mail()/rcpt()/data() shortcuts write the lines, not you."""
    shortcut = lab.session("mx1.example.net")
    shortcut.ehlo("student.local")
    shortcut.mail("alice@example.org")
    shortcut.rcpt("bob@example.net")
    shortcut.data("Subject: not typed\n\nHello.")
    shortcut.quit()
    assert lab.messages("bob@example.net"), "the shortcut session did deliver"
    assert_failed(handshake.check_session(shortcut, lab), "shortcuts", "typing_session")
    typed = handshake.typing_session(lab)
    with pytest.raises(AttributeError, match="type each line yourself"):
        typed.data("Subject: x\n\ny")


def test_session_null_sender_and_empty_message_fail(lab: smtplab.Lab) -> None:
    null = ["EHLO student.local", "MAIL FROM:<>", "RCPT TO:<bob@example.net>", "DATA", "Subject: x", "", "y", ".",
            "QUIT"]
    assert_failed(handshake.check_session(session_with(lab, null), lab), "null sender")
    empty = ["EHLO student.local", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "DATA", ".", "QUIT"]
    assert_failed(handshake.check_session(session_with(lab, empty), lab), "no Subject: header")
    no_body = [*GOOD_SESSION[:4], "Subject: only a header", "", ".", "QUIT"]
    assert_failed(handshake.check_session(session_with(lab, no_body), lab), "no body")
    no_blank = [*GOOD_SESSION[:4], "Subject: no blank line", ".", "QUIT"]
    assert_failed(handshake.check_session(session_with(lab, no_blank), lab), "no body", "empty line")


# --- notebook 01, exercise 3: predict 530 -------------------------------------------------------------

def test_starttls_prediction(lab: smtplab.Lab) -> None:
    assert_passed(msa.check_starttls_prediction(530, lab), "530 5.7.0 Must issue a STARTTLS command first")
    forget_answers()
    assert_passed(msa.check_starttls_prediction("530 5.7.0", lab))
    for wrong, phrase in [(250, "250 would mean"), (503, "permanent refusal"), (535, "not tried to log in"),
                          (451, "temporary failure"), (220, "greeting"), (550, "permanent refusal")]:
        forget_answers()
        feedback = msa.check_starttls_prediction(wrong, lab)
        assert_failed(feedback, phrase, "lab.session")
        assert_not_told(feedback, "530", "5.7.0", "STARTTLS command first")
    assert_failed(msa.check_starttls_prediction("five hundred", lab), "three digits")
    assert_failed(msa.check_starttls_prediction(True, lab), "three digits")
    assert_unanswered(msa.check_starttls_prediction(None, lab))


def test_starttls_prediction_counts_once(lab: smtplab.Lab) -> None:
    """Brute force: after a wrong prediction, the right code is judged as the first answer, not afresh."""
    assert_failed(msa.check_starttls_prediction(250, lab))
    feedback = msa.check_starttls_prediction(530, lab)
    assert_failed(feedback, "first answer checked, 250, is the one that counts")
    assert_not_told(feedback, "5.7.0")


# --- notebook 02, exercise 1: the first MX ----------------------------------------------------------

def test_first_mx(lab: smtplab.Lab) -> None:
    assert_passed(nb02.check_first_mx("mx1.example.net", lab), "preference 10", "lowest")
    forget_answers()
    assert_passed(nb02.check_first_mx(" MX1.example.net. ", lab))
    forget_answers()
    assert_passed(nb02.check_first_mx("mx1", lab))
    for wrong, phrase in [("mx2.example.net", "preference 20"), ("example.net", "implicit MX"),
                          ("smtp.example.net", "submission server"), ("imap.example.net", "IMAP"),
                          ("smtp.example.org", "Alice's own server"), ("gmail.com", "not one of"),
                          ("dns.lab", "DNS server")]:
        forget_answers()
        feedback = nb02.check_first_mx(wrong, lab)
        assert_failed(feedback, phrase, "RFC 5321 section 5.1")
        assert_not_told(feedback, "mx1")
    assert_failed(nb02.check_first_mx("mx1", lab), "first answer checked")
    assert_failed(nb02.check_first_mx(10, lab), "host name in quotes")
    assert_unanswered(nb02.check_first_mx(None, lab))


# --- notebook 02, exercise 2: Null MX ----------------------------------------------------------------

def test_null_mx_choice() -> None:
    assert_passed(nb02.check_null_mx("d"), "5.1.10", "at once")
    forget_answers()
    assert_passed(nb02.check_null_mx(" D) "))
    for wrong, phrase in [("a", "RFC 7505"), ("b", "temporary"), ("c", "implicit MX")]:
        forget_answers()
        feedback = nb02.check_null_mx(wrong)
        assert_failed(feedback, phrase, "cell after this check")
        assert_not_told(feedback, "5.1.10", "at once", "bounce")
    assert_failed(nb02.check_null_mx("e"), "not one of the choices")


def test_null_mx_cannot_be_brute_forced() -> None:
    assert_failed(nb02.check_null_mx("a"))
    for letter in "bcd":
        feedback = nb02.check_null_mx(letter)
        assert_failed(feedback, "first answer checked, 'a'")
        assert_not_told(feedback, "5.1.10")
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

@pytest.mark.parametrize(("name", "exercises"), [("01-smtp-handshake", 4), ("02-mx-lookup", 3)])
def test_solution_notebook_differs_only_in_solution_cells(name: str, exercises: int) -> None:
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
    assert answers == exercises
