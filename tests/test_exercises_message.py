"""The checks of notebook 09 (the message itself), against a real lab: smtplib submits what EmailMessage built.

Right, wrong, empty and trivial answers; the feedback never contains the expected answer.
"""

from __future__ import annotations

import smtplib
import ssl
from email.header import Header
from email.message import EmailMessage

from feedback_checks import assert_failed, assert_passed, assert_unanswered

import smtplab
from smtplab.exercises import message
from smtplab.i18n import use_language


def submit(lab: smtplab.Lab, msg: EmailMessage) -> None:
    host = lab.host("smtp.example.org")
    alice = lab.users["alice@example.org"]
    with smtplib.SMTP(host.address, host.ports["submission"]) as client:
        client.starttls(context=ssl.create_default_context(cafile=lab.ca_file))
        client.login(alice.address, alice.password)
        client.send_message(msg)


def build(subject: str, *, nest: str = "right", cte: str = "quoted-printable", attach: bool = True) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.org>"
    msg["To"] = "Bob <bob@example.net>"
    msg["Subject"] = subject
    msg.set_content("¡Hola Bob!\nThe report is attached.\n", cte=cte)
    if nest != "no-html":
        msg.add_alternative("<p>¡Hola Bob!</p>\n", subtype="html", cte=cte)
    if attach and nest == "inside":
        msg.get_payload()[1].make_mixed()
        msg.get_payload()[1].add_attachment(b"%PDF-1.4\n", maintype="application", subtype="pdf", filename="r.pdf")
    elif attach:
        msg.add_attachment(b"%PDF-1.4\n", maintype="application", subtype="pdf", filename="report.pdf")
    return msg


def test_structure_right_wrong_empty(lab: smtplab.Lab) -> None:
    good = build("report one")
    submit(lab, good)
    feedback = message.check_structure(good, lab)
    assert_passed(feedback, "multipart/alternative", "text/plain (quoted-printable)")

    eight = build("report 8bit", cte="8bit")
    submit(lab, eight)
    assert_failed(message.check_structure(eight, lab), "Content-Transfer-Encoding: 8bit", "text/plain (8bit)")

    flat = build("report flat", attach=False)
    submit(lab, flat)
    assert_failed(message.check_structure(flat, lab), "multipart/alternative", "Bob's copy has this structure")

    plain = build("report plain", nest="no-html")
    submit(lab, plain)
    assert_failed(message.check_structure(plain, lab), "no multipart/alternative")

    assert_failed(message.check_structure(build("never sent"), lab), "no message with the subject")
    assert_unanswered(message.check_structure(..., lab))
    assert_unanswered(message.check_structure(None, lab))
    assert_failed(message.check_structure("report one", lab), "not a str")


def test_encoded_word() -> None:
    assert_passed(message.check_encoded_word("=?utf-8?q?Caf=C3=A9_f=C3=BCr_Jos=C3=A9?="), "Café für José")
    assert_passed(message.check_encoded_word(Header(message.WORD_SUBJECT, "utf-8").encode()))
    assert_passed(message.check_encoded_word("=?iso-8859-1?q?Caf=E9_f=FCr_Jos=E9?="))
    wrong = {
        "Café für José": "not ASCII",
        "Cafe fur Jose": "no encoded-word",
        "=?utf-8?q?Caf=E9_f=FCr_Jos=E9?=": "cannot decode",  # Latin-1 bytes labelled UTF-8
        "=?utf-8?q?Caf=C3=A9 f=C3=BCr Jos=C3=A9?=": "holds a space",
        "=?utf-8?q?Caf=C3=A9?=": "decodes your answer to 'Café'",
        "=?utf-8?q?" + "a" * 80 + "?=": "allows 75",
        "=?no-such-charset?q?Caf=C3=A9?=": "decode",
    }
    for answer, phrase in wrong.items():
        feedback = message.check_encoded_word(answer)
        assert_failed(feedback, phrase)
        assert "=C3=A9" not in feedback.message.replace(answer, "")  # never the encoded answer
    assert_unanswered(message.check_encoded_word(...))
    assert_unanswered(message.check_encoded_word(""))
    assert_failed(message.check_encoded_word(42), "string")


def test_what_the_msa_added(lab: smtplab.Lab) -> None:
    msg = build("report for the msa")
    submit(lab, msg)
    right = ["Received", "DKIM-Signature", "Date", "Message-ID"]
    assert_passed(message.check_msa_added(right, msg, lab), "RFC 6409")
    assert_passed(message.check_msa_added([x.lower() for x in reversed(right)], msg, lab))
    for answer, phrase in ((["Subject"], "already in the DATA"), (["Return-Path"], "a later server added it"),
                           (["Authentication-Results", "Date"], "a later server"),
                           (["Date", "Message-ID"], "you found 2 of the 4")):
        feedback = message.check_msa_added(answer, msg, lab)
        assert_failed(feedback, phrase)
        assert "DKIM-Signature" not in feedback.message and "Received" not in feedback.message
    dated = build("report with its own date")
    dated["Date"] = "Mon, 30 Nov 2026 12:00:00 +0000"
    submit(lab, dated)
    assert_failed(message.check_msa_added(right, dated, lab), "'Date' was already in the DATA")
    assert_unanswered(message.check_msa_added(..., msg, lab))
    assert_unanswered(message.check_msa_added([], msg, lab))
    assert_failed(message.check_msa_added("Date", msg, lab), "list of header field names")
    assert_failed(message.check_msa_added(["Date"], build("not sent"), lab), "no submission and relay")


def test_the_feedback_speaks_spanish_and_still_keeps_the_answer() -> None:
    """With lang="es" the verdict is Spanish, quotes what a reader would show, and gives no encoded-word away."""
    with use_language("es"):
        wrong = message.check_encoded_word("=?utf-8?q?Caf=C3=A9?=")
        assert_failed(wrong, "un lector de correo decodifica tu respuesta como 'Café'")
        assert wrong.exercise == "Ejercicio 2 · una palabra codificada, a mano"
        assert "=C3=BC" not in wrong.message and "Jos=C3=A9" not in wrong.message
        assert_passed(message.check_encoded_word("=?utf-8?b?Q2Fmw6kgZsO8ciBKb3PDqQ==?="), "un lector de correo muestra")
