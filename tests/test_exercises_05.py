"""The exercise checks of notebook 05 (authentication and TLS), against real labs.

Every check passes on the solution, fails with the right explanation on typical wrong answers, and says
"not answered yet" (without raising) on the notebook's placeholder.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
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
from smtplab.exercises import authentication, forget_answers, tls

BOB = "bob@example.net"
ALICE = "alice@example.org"
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05-auth-tls.ipynb"


# --- exercise 1: read the password off the wire ---

@pytest.fixture
def careless_lab() -> Iterator[smtplab.Lab]:
    """The notebook's first lab: smtp.example.net takes AUTH without TLS, and Bob has just logged in there."""
    scenario = smtplab.Scenario.security(policy="none").to_dict()
    scenario["providers"][1]["hosts"]["smtp.example.net"] = {"services": ["submission"],
                                                            "options": ["plaintext_auth"]}
    with smtplab.start(scenario=scenario) as lab:
        bob = lab.users[BOB]
        session = lab.session("smtp.example.net")
        session.ehlo()
        assert session.auth_plain(bob.address, bob.password).code == 235
        session.quit()
        yield lab


def _token(lab: smtplab.Lab) -> str:
    """The AUTH PLAIN token as the eavesdropper's view of Bob's login shows it."""
    wires = "\n".join(lab.wire(conn).render() for conn in lab.trace.connections("smtp"))
    match = re.search(r"^C: AUTH PLAIN (\S+)$", wires, re.M)
    assert match, wires
    return match.group(1)


def steal_password(wire_text: str) -> str:
    """The notebook's solution: find the AUTH PLAIN line, decode its token, take the third field."""
    token = re.search(r"^C: AUTH PLAIN (\S+)$", wire_text, re.M).group(1)  # type: ignore[union-attr]
    return base64.b64decode(token).split(b"\0")[2].decode()


def test_password_solution_passes(careless_lab: Any) -> None:
    password = careless_lab.users[BOB].password
    assert_passed(tls.check_stolen_password(careless_lab, steal_password), f"{BOB}'s password",
                  "AUTH PLAIN", "not encryption", "another lab")
    assert_passed(tls.check_stolen_password(careless_lab, lambda w: steal_password(w).encode()), "returns bytes")
    assert password not in tls.check_stolen_password(careless_lab, "x").message


def test_password_from_a_notebook_variable_fails(careless_lab: Any) -> None:
    """The gamed solutions: Bob's password pasted, or a function that returns the `bob` variable's password."""
    bob = careless_lab.users[BOB]
    assert_failed(tls.check_stolen_password(careless_lab, bob.password), "the function itself")
    assert_failed(tls.check_stolen_password(careless_lab, lambda wire_text: bob.password), "another lab's capture",
                  "whatever user logged in")


def test_password_wrong_answers_are_explained(careless_lab: Any) -> None:
    token = _token(careless_lab)
    decoded = base64.b64decode(token)
    password = careless_lab.users[BOB].password
    cases = [
        (token, ["still base64", "base64.b64decode"]),
        (f"AUTH PLAIN {token}", ["still base64"]),
        (decoded, ["NUL separators", "third field", "RFC 4616"]),
        (str(decoded), ["NUL separators"]),
        (decoded.replace(b"\0", b"").decode(), ["run together", "Split the decoded bytes"]),
        (BOB, ["is the user name", "RFC 4616"]),
        (f" {password}\n", ["extra characters around it"]),
        (f"password: {password}", ["more around it"]),
        (careless_lab.users[ALICE].password, [f"that is {ALICE}'s password", BOB]),
        ("hunter2", ["not the password that crossed the wire", token]),
        (42, ["as text"]),
    ]
    for answer, phrases in cases:
        feedback = tls.check_stolen_password(careless_lab, lambda wire_text, answer=answer: answer)
        assert_failed(feedback, *phrases)
        if password not in str(answer):
            assert_not_told(feedback, password)
    assert_failed(tls.check_stolen_password(careless_lab, lambda wire_text: 1 / 0), "ZeroDivisionError")
    assert_failed(tls.check_stolen_password(careless_lab, 42), "must be a function")


def test_password_placeholder_is_unanswered(careless_lab: Any) -> None:
    for placeholder in (None, ..., "", "   "):
        assert_unanswered(tls.check_stolen_password(careless_lab, placeholder))

    def steal_password(wire_text: str) -> None:
        ...  # the notebook's placeholder: the function exists, its body does not yet

    assert_unanswered(tls.check_stolen_password(careless_lab, steal_password))


def test_password_check_finds_nothing_when_every_login_used_tls(lab: smtplab.Lab) -> None:
    alice = lab.users[ALICE]
    lab.send(ALICE, BOB, "over TLS", "hello\n")
    session = lab.session("smtp.example.org")
    session.ehlo()
    session.starttls()
    session.ehlo()
    session.auth_plain(alice.address, alice.password)
    session.quit()
    assert_failed(tls.check_stolen_password(lab, steal_password), "no password crossed", "in clear text")


# --- exercise 2: an SPF record for example.com ---

def carol_lab(records: Any) -> dict[str, Any]:
    """The notebook's scenario for exercise 2, with `records` as the learner's answer."""
    scenario = smtplab.Scenario.security().to_dict()
    scenario["providers"].append({
        "domain": "example.com",
        "hosts": {"mail.example.com": ["submission", "smtp", "imap"]},
        "mx": {"mail.example.com": 10},
        "users": ["carol"],
        "security": {"spf": None, "dmarc": None},
    })
    scenario["providers"][-1]["records"] = records
    return scenario


@pytest.mark.parametrize("record", ['"v=spf1 a:mail.example.com -all"', '"v=spf1 mx -all"'])
def test_spf_solutions_pass(record: str) -> None:
    assert_passed(authentication.check_spf_record(carol_lab([["@", "TXT", record]])), "Carol's real mail got spf=pass",
                  "forgery spf=fail", record)


@pytest.mark.parametrize(("records", "phrases"), [
    ([["@", "TXT", "v=spf1 a:mail.example.com -all"]], ["no double quotes", '"v=spf1" "a:mail.example.com"']),
    ([["@", "TXT", '"v=spf1 a:mail.example.com ~all"']], ["spf=softfail", "End the record with -all"]),
    ([["@", "TXT", '"v=spf1 a:mail.example.com ?all"']], ["spf=neutral", "-all"]),
    ([["@", "TXT", '"v=spf1 ip4:127.0.1.10 -all"']], ["Carol's real mail got spf=fail", "Alice's server",
                                                       "names a host"]),
    ([["@", "TXT", '"v=spf1 +all"']], ["so does mallory's forgery", "'+all' would allow anyone"]),
    ([["mail", "TXT", '"v=spf1 a -all"']], ["no TXT record at example.com", "the name '@'", "'mail'"]),
    ([["@", "TXT", '"spf1 a:mail.example.com -all"']], ["none starts with 'v=spf1 '"]),
    ([["@", "TXT", '"v=spf1 include:nowhere.example -all"']], ["spf=permerror", "nowhere.example"]),
    ([["@", "TXT", '"v=spf1 a:mail.example.com -all']], ["could not start", "double quotes"]),
    ([["@", "TXT"]], ["[name, type, data]"]),
])
def test_spf_wrong_records_are_explained(records: Any, phrases: list[str]) -> None:
    """(And a record that leaves Carol's host out is not told the mechanisms that would list it.)"""
    feedback = authentication.check_spf_record(carol_lab(records))
    assert_failed(feedback, *phrases)
    if "ip4:127.0.1.10" in str(records):
        assert_not_told(feedback, "a:mail.example.com", " mx,")


def test_spf_placeholder_and_broken_scenarios() -> None:
    for placeholder in (..., None, [], [...]):
        assert_unanswered(authentication.check_spf_record(carol_lab(placeholder)))
    assert_unanswered(authentication.check_spf_record(None))
    assert_failed(authentication.check_spf_record({"no": "providers"}), "the scenario dict the cell builds")
    assert_failed(authentication.check_spf_record(smtplab.Scenario.security().to_dict()), "no provider example.com")


# --- exercise 3: why did DMARC pass although DKIM failed? ---

@pytest.fixture(scope="module")
def copies() -> dict[str, Any]:
    """Bob's copy of a message whose footer broke DKIM, and of a genuine one (from two labs, as in the notebook)."""
    found = {}
    scenario = smtplab.Scenario.security(policy="none").to_dict()
    with smtplab.Lab(scenario).start() as lab:
        lab.send(ALICE, BOB, "Genuine", "Every word counts.\n")
        found["genuine"] = lab.messages(BOB)[0]
    scenario["providers"][0]["hosts"]["smtp.example.org"] = {"services": ["submission", "smtp"],
                                                            "options": ["append_footer"]}
    with smtplab.Lab(scenario).start() as lab:
        lab.send(ALICE, BOB, "Signed", "Every word counts.\n")
        found["footer"] = lab.messages(BOB)[0]
    assert "dkim=fail" in found["footer"]["Authentication-Results"]
    return found


def test_alignment_solution_passes(copies: dict[str, Any]) -> None:
    footer = copies["footer"]
    assert_passed(authentication.check_alignment(footer, "spf", "example.org"), "spf=pass",
                  "smtp.mailfrom=alice@example.org", "header.from=example.org", "although dkim=fail")
    assert_passed(authentication.check_alignment(footer, " SPF ", "example.org."))
    assert_passed(authentication.check_alignment(footer, "spf", "alice@example.org"))
    assert_passed(authentication.check_alignment(str(footer["Authentication-Results"]), "spf", "example.org"))
    # With a genuine message both checks pass aligned, so both answers are right.
    assert_passed(authentication.check_alignment(copies["genuine"], "dkim", "example.org"))


@pytest.mark.parametrize(("carried_by", "domain", "phrases"), [
    ("dkim", "example.org", ["DKIM did not pass here (dkim=fail)", "bh= hash"]),
    ("spf", "smtp.example.org", ["is a host name", "smtp.mailfrom (example.org)"]),
    ("spf", "mx1.example.net", ["the server that wrote the header"]),
    ("spf", "example.net", ["Bob's side"]),
    ("spf", "evil.example", ["neither in smtp.mailfrom nor in header.from"]),
    ("both", "example.org", ['answer "spf" or "dkim"']),
    ("spf", None, ["aligned_domain is still empty"]),
    ("spf", 42, ["must be a domain name as text"]),
    (None, "example.org", ["carried_by is still empty"]),
])
def test_alignment_wrong_answers_are_explained(copies: dict[str, Any], carried_by: Any, domain: Any,
                                               phrases: list[str]) -> None:
    assert_failed(authentication.check_alignment(copies["footer"], carried_by, domain), *phrases, "The header:")


def test_alignment_placeholder_and_missing_message(copies: dict[str, Any]) -> None:
    assert_unanswered(authentication.check_alignment(copies["footer"], None, None))
    assert_unanswered(authentication.check_alignment(copies["footer"], "", "  "))
    assert_failed(authentication.check_alignment(None, "spf", "example.org"), "run the cells of the footer lab")


# --- exercise 4: predict what p=quarantine does ---

def test_quarantine_solution_passes_with_what_really_happened() -> None:
    for answer in ("B", "b", "B)", "(b)"):
        forget_answers()
        assert_passed(authentication.check_quarantine_prediction(answer), "Right (B", "250 2.0.0", "filed it in Bob's Junk",
                      "dmarc=fail (p=quarantine)")


@pytest.mark.parametrize(("letter", "phrases"), [
    ("A", ["p=none"]),
    ("C", ["refusal"]),
    ("D", ["at RCPT TO"]),
    ("E", ["bounce"]),
    ("Z", ["not one of the choices"]),
    (3, ["not one of the choices"]),
])
def test_quarantine_wrong_predictions_are_explained(letter: Any, phrases: list[str]) -> None:
    feedback = authentication.check_quarantine_prediction(letter)
    assert_failed(feedback, *phrases)
    if letter in ("A", "C", "D", "E"):
        assert_not_told(feedback, "Junk", "250", "B:", "(B", "suspicious mail goes")


def test_quarantine_prediction_counts_once() -> None:
    assert_failed(authentication.check_quarantine_prediction("A"))
    for letter in "BCDE":
        feedback = authentication.check_quarantine_prediction(letter)
        assert_failed(feedback, "first answer checked, 'A'")
        assert_not_told(feedback, "Junk")


def test_quarantine_placeholder_is_unanswered() -> None:
    for placeholder in (None, ..., ""):
        assert_unanswered(authentication.check_quarantine_prediction(placeholder))


def test_the_notebook_lists_the_choices_the_check_explains() -> None:
    text = "\n".join("".join(cell["source"]) for cell in json.loads(NOTEBOOK.read_text())["cells"])
    for letter, choice in authentication.QUARANTINE_CHOICES.items():
        assert f"**{letter}.** {choice}" in text, f"choice {letter} differs between notebook and the checks"
