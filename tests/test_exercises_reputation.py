"""The check of notebook 11 (reputation): forward-confirmed reverse DNS by the learner, against the lab DNS."""

from __future__ import annotations

from collections.abc import Callable

from feedback_checks import assert_failed, assert_passed, assert_unanswered

import smtplab
from smtplab.exercises import reputation


def answers(lab: smtplab.Lab, rdtype: str, name: str) -> list[str]:
    return [record.split()[-1].rstrip(".") for record in lab.dig(name, rdtype).records if f" {rdtype} " in record]


def make(lab: smtplab.Lab, *, forward: bool = True) -> Callable[[str], str | None]:
    def fcrdns(address: str) -> str | None:
        for name in answers(lab, "PTR", reputation.reverse_name(address)):
            if not forward or address in answers(lab, "A", name):
                return name
        return None
    return fcrdns


def test_right_wrong_empty_and_trivial(lab: smtplab.Lab) -> None:
    assert_passed(reputation.check_fcrdns(make(lab), lab), "from the DNS", "None for 127.0.0.1")
    feedback = reputation.check_fcrdns(make(lab, forward=False), lab)
    assert_failed(feedback, "never checked the name's A record", "RFC 8601")
    table = {h.address: h.name for h in lab.hosts.values()}
    assert_failed(reputation.check_fcrdns(table.get, lab), "without asking the lab DNS")
    feedback = reputation.check_fcrdns(lambda address: None, lab)
    assert_failed(feedback, "returned None", "lab.dig(")
    assert not any(h.name in feedback.message for h in lab.hosts.values())  # never the expected name
    assert_failed(reputation.check_fcrdns(lambda address: "mail.nobody.example", lab), "does not confirm")
    assert_failed(reputation.check_fcrdns(lambda address: 1 / 0, lab), "ZeroDivisionError")
    assert_failed(reputation.check_fcrdns(lambda address: 42, lab), "returned a int")
    assert_unanswered(reputation.check_fcrdns(..., lab))
    assert_unanswered(reputation.check_fcrdns(None, lab))
    assert_failed(reputation.check_fcrdns("fcrdns", lab), "the function itself")


def test_feedback_in_spanish(lab: smtplab.Lab) -> None:
    """With lang="es" the feedback is Spanish, and it still never names the expected host."""
    from smtplab.i18n import use_language

    with use_language("es"):
        feedback = reputation.check_fcrdns(make(lab, forward=False), lab)
        assert_failed(feedback, "no comprobó el registro A del nombre", "RFC 8601")
        assert feedback.exercise == "Ejercicio 1 · DNS inverso confirmado"
        wrong = reputation.check_fcrdns(lambda address: None, lab)
        assert_failed(wrong, "ningún nombre confirmado", "Pregúntale tú al DNS")
        assert not any(h.name in wrong.message for h in lab.hosts.values())
        assert_passed(reputation.check_fcrdns(make(lab), lab), "sacadas del DNS")
