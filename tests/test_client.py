"""The learner's line-by-line session and the reply objects it returns."""

from __future__ import annotations

import pytest

import smtplab
from smtplab import Reply


def test_stepping_through_a_whole_submission(lab: smtplab.Lab) -> None:
    alice = lab.users["alice@example.org"]
    s = lab.session("smtp.example.org")
    assert s.greeting.code == 220 and "smtp.example.org" in s.greeting.text
    ehlo = s.ehlo()
    assert ehlo.code == 250 and "STARTTLS" in ehlo.lines
    assert s.send("STARTTLS").code == 220 and s.encrypted
    assert "AUTH LOGIN PLAIN" in s.ehlo().lines
    assert s.auth_plain(alice.address, alice.password).code == 235
    assert s.mail(alice.address).enhanced == "2.1.0"
    assert s.rcpt("bob@example.net").enhanced == "2.1.5"
    assert s.send("DATA").code == 354
    assert s.in_data
    assert s.send("Subject: by hand") is None
    assert s.send("") is None
    assert s.send("..a line that starts with a dot") is None  # dot-stuffed by the learner
    final = s.send(".")
    assert final is not None and final.code == 250 and "queued as" in final.text
    assert s.quit().code == 221 and s.closed
    lab.wait_for_delivery()
    [message] = lab.messages("bob@example.net")
    assert message["Subject"] == "by hand"
    assert ".a line that starts with a dot" in message.get_content()


def test_data_helper_dot_stuffs(lab: smtplab.Lab) -> None:
    mx = lab.session("mx1.example.net")
    mx.ehlo()
    mx.mail("carol@example.org")
    mx.rcpt("bob@example.net")
    reply = mx.data("Subject: dots\n\n.\n.hidden?\nend")
    assert reply.code == 250
    body = lab.messages("bob@example.net")[0].get_content()
    assert body.splitlines() == [".", ".hidden?", "end"]


def test_wrong_order_explains_itself(lab: smtplab.Lab) -> None:
    s = lab.session("smtp.example.org")
    reply = s.send("MAIL FROM:<alice@example.org>")
    assert reply.code == 530 and reply.enhanced == "5.7.0"
    assert "STARTTLS" in reply.text
    assert "STARTTLS" in reply.next_step
    assert reply.category.startswith("permanent failure")
    s.close()
    with pytest.raises(smtplab.SessionError, match="closed"):
        s.send("NOOP")


def test_one_line_at_a_time(lab: smtplab.Lab) -> None:
    s = lab.session("mx1")
    with pytest.raises(smtplab.SessionError, match="one line"):
        s.send("EHLO a\r\nMAIL FROM:<x@y.z>")
    s.close()


def test_session_to_a_service_the_host_lacks(lab: smtplab.Lab) -> None:
    with pytest.raises(smtplab.SessionError, match="runs no submission"):
        lab.session("mx1.example.net", "submission")


def test_silence_times_out_with_a_hint(lab: smtplab.Lab) -> None:
    s = lab.session("mx1", timeout=0.5)
    s.ehlo()
    s.mail("a@example.org")
    s.rcpt("bob@example.net")
    s.send("DATA")
    with pytest.raises(smtplab.SessionError, match="only '.'"):
        s.send_raw(b"no line end yet")
    s.close()


@pytest.mark.parametrize(
    "lines, code, enhanced, text",
    [
        (["250 2.1.0 Sender OK"], 250, "2.1.0", ("Sender OK",)),
        (["250-mx.example", "250-SIZE 100", "250 HELP"], 250, "", ("mx.example", "SIZE 100", "HELP")),
        (["550-5.7.1 Relaying denied", "550 5.7.1 go away"], 550, "5.7.1", ("Relaying denied", "go away")),
        (["354 End data with <CR><LF>.<CR><LF>"], 354, "", ("End data with <CR><LF>.<CR><LF>",)),
    ],
)
def test_reply_parsing(lines: list[str], code: int, enhanced: str, text: tuple[str, ...]) -> None:
    reply = Reply.parse(lines)
    assert (reply.code, reply.enhanced, reply.lines) == (code, enhanced, text)
    assert reply.to_wire() == lines


def test_explain_gives_class_and_detail() -> None:
    assert "relaying denied" in smtplab.explain(550, "5.7.1")
    assert "no such user" in smtplab.explain(550, "5.1.1")
    assert "retry" in Reply.parse(["451 4.3.0 try later"]).next_step
