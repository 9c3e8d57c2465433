"""Exercise checks of notebooks 00 (welcome) and 07 (capstone), driven by real labs.

Every check passes on the solution's answers, fails with feedback that names the evidence on typical
wrong answers, and says "not answered yet" (without raising) on the notebook's placeholders.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from feedback_checks import (  # noqa: F401 (fresh_answers is an autouse fixture)
    assert_not_told,
    fresh_answers,
)

import smtplab
from smtplab.exercises import Feedback, forget_answers, journey, nb07


@pytest.fixture
def mystery() -> Iterator[smtplab.Lab]:
    """The capstone lab: broken quietly, this morning's messages sent, clock at 09:30."""
    lab = nb07.start_mystery_lab()
    try:
        yield lab
    finally:
        lab.stop()


def _ok(feedback: Feedback) -> None:
    assert feedback.ok and feedback.answered, str(feedback)


def _wrong(feedback: Feedback, *needles: str) -> None:
    assert not feedback.ok and feedback.answered, str(feedback)
    for needle in needles:
        assert needle in feedback.message, f"{needle!r} not in: {feedback}"


def _placeholder(feedback: Feedback) -> None:
    assert not feedback.ok and not feedback.answered, str(feedback)
    assert "not answered yet" in feedback.message


# --- notebook 00 ---

def _hello(lab: smtplab.Lab) -> smtplab.SendResult:
    return lab.send("alice@example.org", "bob@example.net", "Hello Bob", "Hi Bob!\n")


def test_nb00_delivering_host(lab: smtplab.Lab) -> None:
    result = _hello(lab)
    good = journey.check_delivering_host(lab, result, "mx1.example.net")
    _ok(good)
    assert "by mx1.example.net" in good.message  # the Received header is quoted as evidence
    forget_answers()
    _ok(journey.check_delivering_host(lab, result, " MX1.example.net. "))
    for wrong, phrase in [("smtp.example.org", "Alice's provider"), ("smtp.example.net", "*sends*"),
                          ("imap.example.net", "SMTP, not IMAP"), ("mx2.example.net", "did not write")]:
        forget_answers()
        feedback = journey.check_delivering_host(lab, result, wrong)
        _wrong(feedback, phrase, "topmost Received header")
        assert_not_told(feedback, "mx1")
    _wrong(journey.check_delivering_host(lab, result, "mx1.example.net"), "first answer checked, 'mx2.example.net'")
    _wrong(journey.check_delivering_host(lab, result, "gmail.com"), "not a host of this lab")
    _wrong(journey.check_delivering_host(lab, result, 42), "as a string")
    _placeholder(journey.check_delivering_host(lab, result, None))
    _placeholder(journey.check_delivering_host(lab, result, ...))


def test_nb00_delivering_host_follows_the_real_route(lab: smtplab.Lab) -> None:
    lab.host("mx1").down()
    result = _hello(lab)
    _ok(journey.check_delivering_host(lab, result, "mx2.example.net"))
    forget_answers()
    assert_not_told(journey.check_delivering_host(lab, result, "mx1.example.net"), "mx2")


def test_nb00_reply(lab: smtplab.Lab) -> None:
    reply = lab.send("bob@example.net", "alice@example.org", "Re: Hello Bob", "Thanks!\n")
    good = journey.check_reply(lab, reply)
    _ok(good)
    assert "smtp.example.net" in good.message and "smtp.example.org" in good.message
    _placeholder(journey.check_reply(lab, None))
    assert_not_told(journey.check_reply(lab, None), "bob@example.net", '"alice@example.org"')
    _wrong(journey.check_reply(lab, _hello(lab)), "sent by alice@example.org", "Bob must be the sender")
    to_self = lab.send("bob@example.net", "bob@example.net", "note to self", "x\n")
    _wrong(journey.check_reply(lab, to_self), "not to alice@example.org")
    _wrong(journey.check_reply(lab, "250 OK"), "SendResult")


def test_nb00_reply_not_delivered(lab: smtplab.Lab) -> None:
    lab.host("smtp.example.org").down()  # example.org's only MX: Bob's reply must wait
    reply = lab.send("bob@example.net", "alice@example.org", "Re: Hello Bob", "Thanks!\n")
    _wrong(journey.check_reply(lab, reply), "has not reached Alice yet", "deferred")


# --- notebook 07 ---

def test_mystery_lab_story(mystery: smtplab.Lab) -> None:
    assert f"{mystery.clock.datetime():%H:%M}" == "09:30"
    assert [m["Subject"] for m in mystery.messages("alice@example.org", "Sent")] == list(nb07.SUBJECTS.values())
    assert [m["Subject"] for m in mystery.messages("bob@example.net")] == [
        nb07.SUBJECTS["ride"], nb07.SUBJECTS["photos"]]
    assert mystery.messages("carol@example.net") == []
    assert mystery.messages("bob@bobsbikes.example") == []
    states = {r.address: r.state for item in mystery.queue if item.sender for r in item.recipients}
    assert states == {"bob@example.net": "delivered", "bob@bobsbikes.example": "deferred",
                      "carol@example.net": "deferred", "riders@example.net": "bounced"}
    inbox = [m["Subject"] for m in mystery.messages("alice@example.org")]
    assert inbox == ["Undelivered Mail Returned to Sender"]  # only the route bounced so far


def _each(check, mystery, cases, truths):
    """Every wrong answer is explained and gives none of `truths` away (a fresh first answer each time)."""
    for cause, answer, phrases in cases:
        forget_answers()
        feedback = check(mystery, cause, answer)
        _wrong(feedback, *phrases)
        assert_not_told(feedback, *truths)


def test_check_ride(mystery: smtplab.Lab) -> None:
    good = nb07.check_ride(mystery, "backup-mx", "mx2.example.net")
    _ok(good)
    assert "connection refused" in good.message and "by mx2.example.net" in good.message
    _ok(nb07.check_ride(mystery, "Backup MX", "mx2"))
    _each(nb07.check_ride, mystery, [
        ("delivered", "mx2.example.net", ["every step", "notes"]),
        ("all-mx-down", "mx2.example.net", ["every MX"]),
        ("mailbox-full", "mx2.example.net", ["does not fit", "delivered"]),
        ("user-unknown", "mx2.example.net", ["does not fit"]),
    ], ["backup-mx", "backup MX"])
    _each(nb07.check_ride, mystery, [
        ("backup-mx", "mx1.example.net", ["preferred MX", "what did the relay note"]),
        ("backup-mx", "smtp.example.org", ["Alice's outgoing server"]),
        ("backup-mx", "imap.example.net", ["IMAP"]),
    ], ["mx2"])
    _wrong(nb07.check_ride(mystery, "bad-luck", "mx2.example.net"), "not one of the causes", "backup-mx")
    _placeholder(nb07.check_ride(mystery, None, None))
    _placeholder(nb07.check_ride(mystery, "backup-mx", None))
    _placeholder(nb07.check_ride(mystery, None, "mx2.example.net"))


def test_causes_count_once(mystery: smtplab.Lab) -> None:
    """Brute force: after a wrong cause, trying the next ones judges the first again."""
    _wrong(nb07.check_ride(mystery, "delivered", "mx2.example.net"))
    for cause in nb07.CAUSES:
        _wrong(nb07.check_ride(mystery, cause, "mx2.example.net"), "every step")


def test_check_payment(mystery: smtplab.Lab) -> None:
    good = nb07.check_payment(mystery, "mx-no-address", "mail.bobsbikes.example")
    _ok(good)
    assert "NXDOMAIN" in good.message and "mx.bobsbikes.example" in good.message
    _each(nb07.check_payment, mystery, [
        ("all-mx-down", "mail.bobsbikes.example", ["asked at all"]),
        ("no-such-domain", "mail.bobsbikes.example", ["Does bobsbikes.example exist", "address"]),
        ("user-unknown", "mail.bobsbikes.example", ["ever reach one"]),
        ("delivered", "mail.bobsbikes.example", ["not delivered", "deferred"]),
    ], ["mx-no-address", "has no address", "no address"])
    _each(nb07.check_payment, mystery, [
        ("mx-no-address", "mx.bobsbikes.example", ["lab.lookup_mx"]),
        ("mx-no-address", "mx1.example.net", ["not what the MX record"]),
    ], ["mail.bobsbikes.example"])
    _placeholder(nb07.check_payment(mystery, None, None))


def test_check_route(mystery: smtplab.Lab) -> None:
    good = nb07.check_route(mystery, "policy-rejection", "550 5.7.1")
    _ok(good)
    assert "550 5.7.1" in good.message and "DSN" in good.message
    for reply in ("550", "5.7.1", 550, "550 5.7.1 only club members"):
        _ok(nb07.check_route(mystery, "policy-rejection", reply))
    _each(nb07.check_route, mystery, [
        ("user-unknown", "550 5.7.1", ["exist", "5.1.1"]),
        ("mailbox-full", "550 5.7.1", ["temporary", "first digit"]),
        ("mx-no-address", "550 5.7.1", ["DNS and the servers worked"]),
        ("backup-mx", "550 5.7.1", ["DSN"]),
    ], ["policy", "a rule", "5.7.1 means", "not authorized"])
    _each(nb07.check_route, mystery, [
        ("policy-rejection", "550 5.1.1", ["three-digit code is right", "Diagnostic-Code"]),
        ("policy-rejection", "452 4.2.2", ["not what this recipient's server answered"]),
        ("policy-rejection", "451", ["Diagnostic-Code"]),
    ], ["5.7.1"])
    _wrong(nb07.check_route(mystery, "policy-rejection", "refused"), "Give a reply code")
    _placeholder(nb07.check_route(mystery, ..., ...))


def test_check_photos_before_and_after_the_queue_gives_up(mystery: smtplab.Lab) -> None:
    good = nb07.check_photos(mystery, "mailbox-full", "452 4.2.2")
    _ok(good)
    assert "retries" in good.message and "bob@example.net" in good.message
    _each(nb07.check_photos, mystery, [
        ("policy-rejection", "452 4.2.2", ["5xx", "deferred"]),
        ("user-unknown", "452 4.2.2", ["exist"]),
        ("backup-mx", "452 4.2.2", ["both recipients", "RCPT TO:<carol@example.net>"]),
        ("delivered", "452 4.2.2", ["is Carol's"]),
    ], ["mailbox-full", "mailbox full", "4.2.2"])
    _each(nb07.check_photos, mystery, [
        ("mailbox-full", "250", ["RCPT TO:<carol@example.net>"]),
        ("mailbox-full", "550 5.7.1", ["not what this recipient's server answered"]),
    ], ["452", "4.2.2"])
    _placeholder(nb07.check_photos(mystery, None, None))

    mystery.clock.advance("4h")
    assert [m["Subject"] for m in mystery.messages("alice@example.org")].count("Delayed Mail (still being retried)") == 2
    for _ in range(20):
        mystery.clock.advance("6h")
    forget_answers()
    after = nb07.check_photos(mystery, "mailbox-full", "4.2.2")
    _ok(after)
    assert "gave up after 5 days" in after.message
    _ok(nb07.check_payment(mystery, "mx-no-address", "mail.bobsbikes.example"))
    _ok(nb07.check_route(mystery, "policy-rejection", "550 5.7.1"))


def test_checks_survive_a_stopped_lab_and_a_foreign_lab(mystery: smtplab.Lab) -> None:
    mystery.stop()
    _ok(nb07.check_ride(mystery, "backup-mx", "mx2.example.net"))
    _ok(nb07.check_payment(mystery, "mx-no-address", "mail.bobsbikes.example"))
    _ok(nb07.check_route(mystery, "policy-rejection", "550 5.7.1"))
    _ok(nb07.check_photos(mystery, "mailbox-full", "452 4.2.2"))
    with smtplab.start() as plain:
        _wrong(nb07.check_ride(plain, "backup-mx", "mx2.example.net"), "start_mystery_lab")


def test_reveal_names_every_hidden_fault(mystery: smtplab.Lab) -> None:
    text = nb07.reveal(mystery)
    for needle in ("MX 10 mail.bobsbikes.example", 'lab.host("mx1.example.net").down()', "452 4.2.2 Mailbox full",
                   "550 5.7.1", 'recipient="carol@example.net"', 'recipient="riders@example.net"'):
        assert needle in text
    mystery.host("mx1").up()
    for name in ("mx1", "mx2"):
        mystery.host(name).clear_faults()
    assert "down()" not in nb07.reveal(mystery) and "inject" not in nb07.reveal(mystery)


def test_a_fixed_mailbox_gets_the_photos_on_the_next_retry(mystery: smtplab.Lab) -> None:
    """What-to-try-next of the notebook: make room before the queue gives up, and the retry delivers."""
    mystery.host("mx2").clear_faults()
    mystery.clock.advance("1h")
    assert [m["Subject"] for m in mystery.messages("carol@example.net")] == [nb07.SUBJECTS["photos"]]
    fixed = nb07.check_photos(mystery, "mailbox-full", "452")  # the diagnosis still holds, from the relay's notes
    _ok(fixed)
    assert "a retry delivered her copy" in fixed.message


def test_the_capstone_speaks_spanish_and_still_gives_nothing_away(mystery: smtplab.Lab) -> None:
    """With lang="es" the causes, a wrong diagnosis and the reveal are in Spanish; the replies quoted stay as sent."""
    from smtplab.i18n import use_language

    with use_language("es"):
        assert nb07.CAUSES["mailbox-full"].startswith("buzón del destinatario lleno")
        feedback = nb07.check_photos(mystery, "policy-rejection", "550 5.7.1")
        assert "Ejercicio 4 · las fotos" in str(feedback)
        _wrong(feedback, "Una regla rechaza de forma definitiva")
        assert_not_told(feedback, "mailbox-full", "452", "4.2.2")
        forget_answers()
        good = nb07.check_route(mystery, "policy-rejection", "550 5.7.1")
        _ok(good)
        assert "Correcto:" in good.message and "550 5.7.1 <riders@example.net>: Recipient address rejected" in good.message
        assert nb07.reveal(mystery).startswith("Cómo se averió este laboratorio")
    assert nb07.CAUSES["mailbox-full"].startswith("the recipient's mailbox is full")
