"""Store-and-forward under faults: fallback MX, retries on the virtual clock, bounces, nothing lost."""

from __future__ import annotations

import re
import sys

import pytest

import smtplab


def three_user_scenario() -> dict:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"][1]["users"] = {"bob@example.net": None, "carol@example.net": None}
    return scenario


@pytest.fixture
def lab3():  # type: ignore[no-untyped-def]
    with smtplab.start(scenario=three_user_scenario()) as lab:
        yield lab


def newest_hop(message) -> str:  # type: ignore[no-untyped-def]
    return re.search(r"\bby\s+(\S+)", message.get_all("Received")[0]).group(1)


def dsn_fields(message) -> dict[str, str]:  # type: ignore[no-untyped-def]
    part = next(p for p in message.walk() if p.get_content_type() == "message/delivery-status")
    text = part.as_string()
    return dict(re.findall(r"^([A-Za-z-]+): (.*)$", text, re.M))


def test_451_at_rcpt_on_mx1_falls_back_to_mx2(lab: smtplab.Lab) -> None:
    lab.host("mx1").inject("RCPT", "451 4.7.1 Greylisted, try again later")
    lab.send("alice@example.org", "bob@example.net", "grey", "listed")
    [message] = lab.messages("bob@example.net")
    assert newest_hop(message) == "mx2.example.net"
    fired = lab.trace.filter(kind="fault")
    assert fired and "451 4.7.1" in fired[0].text and fired[0].host == "mx1.example.net"


def test_451_everywhere_is_retried_until_it_clears(lab: smtplab.Lab) -> None:
    for name in ("mx1", "mx2"):
        lab.host(name).inject("RCPT", "451 4.7.1 Greylisted, try again later")
    result = lab.send("alice@example.org", "bob@example.net", "patient", "retry me")
    item = lab.queue_item(result.queue_id)
    assert item.recipients[0].state == "deferred"
    assert item.recipients[0].last_reply.startswith("451 4.7.1")
    lab.clock.advance("1m")
    assert lab.queue_item(result.queue_id).recipients[0].attempts == 2
    lab.host("mx1").clear_faults()
    lab.host("mx2").clear_faults()
    lab.clock.advance("5m")
    item = lab.queue_item(result.queue_id)
    assert item.recipients[0].state == "delivered" and item.recipients[0].attempts == 3
    assert len(lab.messages("bob@example.net")) == 1


def test_550_at_rcpt_bounces_that_recipient_only(lab3: smtplab.Lab) -> None:
    for name in ("mx1", "mx2"):
        lab3.host(name).inject("RCPT", "550 5.2.1 Mailbox disabled", recipient="carol@example.net")
    result = lab3.send("alice@example.org", ["bob@example.net", "carol@example.net"], "two", "one fails")
    states = {r.address: r.state for r in lab3.queue_item(result.queue_id).recipients}
    assert states == {"bob@example.net": "delivered", "carol@example.net": "bounced"}
    assert len(lab3.messages("bob@example.net")) == 1 and lab3.messages("carol@example.net") == []
    [dsn] = lab3.messages("alice@example.org")
    fields = dsn_fields(dsn)
    assert fields["Final-Recipient"] == "rfc822; carol@example.net"
    assert fields["Status"] == "5.2.1" and fields["Action"] == "failed"
    assert fields["Remote-MTA"] == "dns; mx1.example.net"


@pytest.mark.parametrize("stage", ["body", "end-of-data"])
def test_dropped_connection_leaves_no_partial_message_and_delivers_once(lab: smtplab.Lab, stage: str) -> None:
    for name in ("mx1", "mx2"):
        lab.host(name).inject(stage, drop=True)
    result = lab.send("alice@example.org", "bob@example.net", "dropped", "x" * 5000)
    assert lab.queue_item(result.queue_id).recipients[0].state == "deferred"
    assert "dropped" in lab.queue_item(result.queue_id).recipients[0].last_reply
    assert lab.messages("bob@example.net") == []
    for name in ("mx1", "mx2"):
        lab.host(name).clear_faults()
    lab.clock.advance("1m")
    messages = lab.messages("bob@example.net")
    assert [m["Message-ID"] for m in messages] == [result.message_id]
    assert messages[0].get_content().strip() == "x" * 5000


def test_refusal_at_connect_and_ehlo_moves_to_the_next_mx(lab: smtplab.Lab) -> None:
    lab.host("mx1").inject("connect", "421 4.3.2 Service shutting down")
    lab.send("alice@example.org", "bob@example.net", "one", "1")
    lab.host("mx1").clear_faults()
    lab.host("mx1").inject("EHLO", "421 4.7.0 Too busy")
    lab.send("alice@example.org", "bob@example.net", "two", "2")
    assert [newest_hop(m) for m in lab.messages("bob@example.net")] == ["mx2.example.net"] * 2
    greeting = [e for e in lab.trace.filter(host="mx1.example.net") if e.direction == "S"][0]
    assert greeting.text.startswith("421 4.3.2")


def test_a_slow_server_is_waited_for(lab: smtplab.Lab) -> None:
    lab.host("mx1").inject("MAIL", delay=0.3)
    lab.send("alice@example.org", "bob@example.net", "slow", "but fine")
    assert newest_hop(lab.messages("bob@example.net")[0]) == "mx1.example.net"
    assert any("stall 0.3 s" in e.text for e in lab.trace.filter(kind="fault"))


def test_probability_is_repeatable_with_a_seed(lab: smtplab.Lab) -> None:
    def pattern() -> list[bool]:
        lab.faults.seed(7)
        fault = lab.host("mx1").inject("RCPT", "451 4.3.0 flaky", probability=0.5)
        fired = [lab.faults.pick("mx1.example.net", "RCPT") is not None for _ in range(40)]
        lab.faults.remove(fault)
        return fired

    first, second = pattern(), pattern()
    assert first == second and 5 < sum(first) < 35


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stage": "HELLO", "reply": "451 4.3.0 x"}, "unknown stage"),
        ({"stage": "RCPT"}, "needs a reply"),
        ({"stage": "RCPT", "reply": "250 2.0.0 fine"}, "4xx or 5xx"),
        ({"stage": "body", "reply": "451 4.3.0 x"}, "cannot reply"),
        ({"stage": "connect", "reply": "451 4.3.0 x"}, "421"),
        ({"stage": "MAIL", "reply": "451 4.3.0 x", "recipient": "bob@example.net"}, "RCPT stage"),
    ],
)
def test_bad_faults_explain_themselves(lab: smtplab.Lab, kwargs: dict, message: str) -> None:
    with pytest.raises(smtplab.SmtpLabError, match=message):
        lab.host("mx1").inject(**kwargs)


def test_faults_are_visible_and_undoable(lab: smtplab.Lab) -> None:
    fault = lab.host("mx2").inject("DATA", "452 4.3.1 Insufficient system storage")
    assert lab.host("mx2").faults == (fault,)
    assert "mx2.example.net at DATA" in fault.describe()
    lab.host("mx2").clear_faults()
    assert lab.host("mx2").faults == ()
    notes = [e.text for e in lab.trace.filter(protocol="lab")]
    assert any(n.startswith("fault set: mx2.example.net at DATA") for n in notes)
    assert any("faults of mx2.example.net removed" in n for n in notes)


def test_452_at_data_command_is_temporary(lab: smtplab.Lab) -> None:
    for name in ("mx1", "mx2"):
        lab.host(name).inject("DATA", "452 4.3.1 Insufficient system storage")
    result = lab.send("alice@example.org", "bob@example.net", "full", "disk")
    assert lab.queue_item(result.queue_id).recipients[0].state == "deferred"


def test_gives_up_after_the_queue_lifetime_with_a_4xx_dsn(lab: smtplab.Lab) -> None:
    lab.host("mx1").down()
    lab.host("mx2").down()
    result = lab.send("alice@example.org", "bob@example.net", "doomed", "never arrives")
    for step in ["1m", "5m", "15m", "1h", "3h"]:
        lab.clock.advance(step)
    # After 4 hours the sender gets a warning that the mail is late, once.
    warnings = lab.messages("alice@example.org")
    assert len(warnings) == 1 and dsn_fields(warnings[0])["Action"] == "delayed"
    for _ in range(25):
        lab.clock.advance("6h")
    item = lab.queue_item(result.queue_id)
    assert item.recipients[0].state == "bounced"
    [_, final] = lab.messages("alice@example.org")
    fields = dsn_fields(final)
    assert fields["Action"] == "failed" and fields["Status"].startswith("4.")
    assert fields["Final-Recipient"] == "rfc822; bob@example.net"
    assert "gave up" in fields["Diagnostic-Code"]


def test_null_mx_bounces_at_once() -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"].append({"domain": "nomail.test", "mx": [[0, "."]]})
    with smtplab.start(scenario=scenario) as lab:
        result = lab.send("alice@example.org", "someone@nomail.test", "no", "mail")
        status = lab.queue_item(result.queue_id).recipients[0]
        assert status.state == "bounced" and status.final_status == "5.1.10"
        assert "Null MX" in status.last_reply


def test_implicit_mx_uses_the_domains_address() -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"].append({
        "domain": "tiny.test", "hosts": {"tiny.test": ["smtp", "imap"]}, "mx": [], "users": ["dan"],
    })
    with smtplab.start(scenario=scenario) as lab:
        assert lab.lookup_mx("tiny.test") == []
        lab.send("alice@example.org", "dan@tiny.test", "implicit", "MX")
        assert len(lab.messages("dan@tiny.test")) == 1
        assert any("tiny.test (0)" in e.text for e in lab.trace.filter(protocol="queue"))


def test_equal_preferences_share_the_load() -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"][1]["mx"] = [[10, "mx1.example.net"], [10, "mx2.example.net"]]
    with smtplab.start(scenario=scenario) as lab:
        for i in range(16):
            lab.send("alice@example.org", "bob@example.net", f"m{i}", "x")
        hops = {newest_hop(m) for m in lab.messages("bob@example.net")}
        assert hops == {"mx1.example.net", "mx2.example.net"}


def test_a_bounce_is_never_bounced(lab: smtplab.Lab) -> None:
    lab.host("smtp.example.org").inject("RCPT", "550 5.1.1 No such user", recipient="alice@example.org")
    lab.send("alice@example.org", "nobody@example.net", "lost", "and its bounce too")
    bounces = [i for i in lab.queue if i.sender == ""]
    assert len(bounces) == 1 and bounces[0].recipients[0].state == "bounced"
    assert len(lab.queue) == 2, "no bounce of the bounce"
    assert any("bounce of a bounce" in e.text for e in lab.trace.filter(protocol="queue"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs one loopback address per host (Linux)")
def test_implicit_mx_on_a_differently_named_host_still_gets_tls() -> None:
    """MTAs encrypt opportunistically (RFC 7435): the MX's certificate names mail.tiny.test, the relay
    connected to 'tiny.test' (implicit MX, RFC 5321 5.1); the mail goes through, over TLS."""
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"].append({
        "domain": "tiny.test", "hosts": {"mail.tiny.test": ["smtp", "imap"]}, "mx": [], "users": ["dan"],
        "records": [["@", "A", "127.0.3.10"]],  # the third provider's first host (see Lab addresses)
    })
    with smtplab.start(scenario=scenario) as lab:
        assert lab.host("mail.tiny.test").address == "127.0.3.10"
        mark = lab.mark()
        lab.send("alice@example.org", "dan@tiny.test", "implicit", "MX on another name")
        assert len(lab.messages("dan@tiny.test")) == 1
        tls = [e for e in lab.trace.since(mark) if e.kind == "tls" and e.host == "mail.tiny.test"]
        assert tls, "the relay should have used STARTTLS with the MX"


def test_a_messages_trace_shows_every_attempt_also_those_refused_before_data(lab: smtplab.Lab) -> None:
    lab.host("mx1").inject("RCPT", "451 4.7.1 Greylisted, try again later")
    result = lab.send("alice@example.org", "bob@example.net", "Greylisted", "first mx1, then mx2")
    events = lab.trace.for_message(result.message_id)
    conversations = {e.host for e in events if e.protocol == "smtp" and e.kind == "connect"}
    assert conversations == {"smtp.example.org", "mx1.example.net", "mx2.example.net"}
    mx1 = [e.text for e in events if e.host == "mx1.example.net" and e.direction == "S"]
    assert mx1[-2:] == ["451 4.7.1 Greylisted, try again later", "221 2.0.0 Bye"]
    assert any(e.host == "mx1.example.net" and e.kind == "close" for e in events)
    # The ladder of the message draws both tries.
    assert "451 4.7.1 Greylisted" in lab.ladder(result.message_id).text
