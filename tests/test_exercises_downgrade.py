"""The exercise checks of notebook 12 (TLS downgrade), against a real lab: right, wrong and empty answers."""

from __future__ import annotations

import hashlib
import re

import pytest
from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_failed,
    assert_passed,
    assert_unanswered,
    fresh_answers,
)

import smtplab
from smtplab.exercises import downgrade, forget_answers


def _send(lab: smtplab.Lab, word: str) -> str:
    result = lab.send("alice@example.org", "bob@example.net", "the plan", f"code word: {word}\n")
    return result.queue_id


def test_code_word_read_off_the_stripped_wire(lab: smtplab.Lab) -> None:
    word = downgrade.new_code_word()
    assert re.fullmatch(r"[a-z]+-\d{4}", word)
    with lab.mitm("example.net"):
        queue_id = _send(lab, word)
    assert_unanswered(downgrade.check_code_word(lab, queue_id, ...))
    assert_unanswered(downgrade.check_code_word(lab, queue_id, "  "))
    assert_passed(downgrade.check_code_word(lab, queue_id, word), "clear text")
    wrong = downgrade.check_code_word(lab, queue_id, "amber-0000")
    assert_failed(wrong, "lab.wire")
    trivial = downgrade.check_code_word(lab, queue_id, "the plan")  # it crossed the wire, but it is not the word
    assert_failed(trivial, "not the code word")
    for feedback in (wrong, trivial):
        assert word not in feedback.message


def test_code_word_without_attacker_cannot_be_read(lab: smtplab.Lab) -> None:
    word = downgrade.new_code_word()
    queue_id = _send(lab, word)  # over TLS: nothing in clear text after STARTTLS
    feedback = downgrade.check_code_word(lab, queue_id, word)
    assert_failed(feedback, "did not cross in clear text")
    assert word not in feedback.message


def test_enforce_prediction() -> None:
    assert_unanswered(downgrade.check_enforce_prediction(...))
    assert_unanswered(downgrade.check_enforce_prediction(""))
    assert_failed(downgrade.check_enforce_prediction("z"), "not one of the choices")  # a typo commits nothing
    assert_failed(downgrade.check_enforce_prediction("bz"), "not one of the choices")
    assert_passed(downgrade.check_enforce_prediction(" B "), "RFC 8461")
    for wrong in ("a", "c", "d"):
        forget_answers()
        feedback = downgrade.check_enforce_prediction(wrong)
        assert_failed(feedback)
        assert downgrade.ENFORCE_CHOICES["b"] not in feedback.message and "try again" not in feedback.message


def test_enforce_prediction_counts_once() -> None:
    """Trying each letter in turn does not pass: the first well-formed prediction is the one judged."""
    assert_failed(downgrade.check_enforce_prediction("a"))
    for later in ("b", "c", "d"):
        feedback = downgrade.check_enforce_prediction(later)
        assert_failed(feedback, "first answer checked, 'a'")


def test_tlsa_record(lab: smtplab.Lab) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    der = downgrade.mx_certificate(lab)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(Encoding.DER,
                                                                          PublicFormat.SubjectPublicKeyInfo)
    right = f"3 1 1 {hashlib.sha256(spki).hexdigest()}"
    assert_passed(downgrade.check_tlsa_record(lab, right))
    assert_passed(downgrade.check_tlsa_record(lab, right.upper()))
    # The record the lab itself publishes is the same one.
    assert any(r.endswith(right) for r in lab.dane("example.net") if "mx1" in r)
    assert_unanswered(downgrade.check_tlsa_record(lab, ...))
    for wrong, phrase in ((f"3 0 1 {hashlib.sha256(spki).hexdigest()}", "four fields"),
                          (f"3 1 1 {hashlib.sha256(der).hexdigest()}", "whole certificate"),
                          ("3 1 1 abc", "64 hex digits"),
                          (f"3 1 1 {'0' * 64}", "matches nothing"),
                          ("3 1 1", "four fields")):
        feedback = downgrade.check_tlsa_record(lab, wrong)
        assert_failed(feedback, phrase)
        assert hashlib.sha256(spki).hexdigest() not in feedback.message


@pytest.mark.parametrize("choice", sorted(downgrade.ENFORCE_CHOICES))
def test_every_choice_gets_feedback(choice: str) -> None:
    assert downgrade.check_enforce_prediction(choice).message


def test_spanish_notebook_code_word_and_feedback(lab: smtplab.Lab) -> None:
    """The Spanish notebook labels the body line 'palabra clave:'; the check reads it, and answers in Spanish."""
    from smtplab.i18n import use_language

    word = downgrade.new_code_word()
    with lab.mitm("example.net"):
        sent = lab.send("alice@example.org", "bob@example.net", "el plan", f"Nos vemos.\npalabra clave: {word}\n")
    with use_language("es"):
        assert_passed(downgrade.check_code_word(lab, sent.queue_id, word), "leída en el cable")
        wrong = downgrade.check_code_word(lab, sent.queue_id, "el plan")
        assert_failed(wrong, "no es la palabra clave", "'palabra clave: ...'")
        assert word not in wrong.message
        assert downgrade.ENFORCE_CHOICES["b"] == "el relay deja el mensaje en su cola y vuelve a intentarlo más tarde"
        feedback = downgrade.check_enforce_prediction("c")
        assert_failed(feedback, "¿4xx o 5xx?")
        assert feedback.exercise.startswith("Ejercicio 2")
    assert downgrade.ENFORCE_CHOICES["b"] == "the relay keeps the message in its queue and tries again later"
