"""The delivery guarantee as a property: whatever the faults and the clock do, every accepted
message ends in exactly one place per recipient - the recipient's mailbox, the queue, or a bounce
to the sender - and never in two."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smtplab

RECIPIENTS = ["bob@example.net", "carol@example.net", "nobody@example.net"]
MX_HOSTS = ["mx1.example.net", "mx2.example.net"]
STAGES = ["connect", "EHLO", "MAIL", "RCPT", "DATA", "body", "end-of-data"]

send = st.tuples(st.just("send"), st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True))
fault = st.tuples(st.just("fault"), st.sampled_from(MX_HOSTS), st.sampled_from(STAGES),
                  st.sampled_from(["temporary", "permanent", "drop"]))
clear = st.tuples(st.just("clear"), st.sampled_from(MX_HOSTS))
down = st.tuples(st.just("down"), st.sampled_from(MX_HOSTS))
up = st.tuples(st.just("up"), st.sampled_from(MX_HOSTS))
advance = st.tuples(st.just("advance"), st.sampled_from([30, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400]))
steps = st.lists(st.one_of(send, send, fault, clear, down, up, advance), min_size=1, max_size=14)


def inject(lab: smtplab.Lab, host: str, stage: str, kind: str) -> None:
    if kind == "drop" or stage == "body":
        lab.host(host).inject(stage, drop=True)
    elif kind == "temporary":
        lab.host(host).inject(stage, "421 4.3.2 Busy" if stage == "connect" else "451 4.3.0 Try later")
    else:
        lab.host(host).inject(stage, "554 5.3.2 No service" if stage == "connect" else "550 5.7.1 Refused")


def failed_dsns(lab: smtplab.Lab) -> list[tuple[str, str]]:
    """(original Message-ID, final recipient) of every 'failed' DSN alice received."""
    out = []
    for dsn in lab.messages("alice@example.org"):
        parts = {p.get_content_type(): p for p in dsn.walk()}
        status = parts["message/delivery-status"].as_string()
        headers = parts["text/rfc822-headers"].get_payload()
        message_id = re.search(r"^Message-ID:\s*(\S+)", headers, re.M | re.I).group(1)
        blocks = status.split("\n\n")
        for block in blocks:
            recipient = re.search(r"^Final-Recipient: rfc822; (\S+)", block, re.M)
            action = re.search(r"^Action: (\S+)", block, re.M)
            if recipient and action and action.group(1) == "failed":
                out.append((message_id, recipient.group(1)))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_every_accepted_message_ends_in_exactly_one_place(plan: list[tuple]) -> None:
    scenario = smtplab.Scenario.default().to_dict()
    scenario["providers"][1]["users"] = ["bob", "carol"]
    with smtplab.start(scenario=scenario) as lab:
        sent: list[smtplab.SendResult] = []
        for step in plan:
            if step[0] == "send":
                sent.append(lab.send("alice@example.org", step[1], f"m{len(sent)}", "body\n" * 20))
            elif step[0] == "fault":
                inject(lab, *step[1:])
            elif step[0] == "clear":
                lab.host(step[1]).clear_faults()
            elif step[0] == "down":
                lab.host(step[1]).down()
            elif step[0] == "up":
                lab.host(step[1]).up()
            else:
                lab.clock.advance(step[1])
        assert lab.wait_for_delivery(timeout=60)
        bounces = failed_dsns(lab)
        for result in sent:
            item = lab.queue_item(result.queue_id)
            states = {r.address: r.state for r in item.recipients}
            for rcpt in result.recipients:
                in_mailbox = 0
                if rcpt != "nobody@example.net":
                    in_mailbox = sum(m["Message-ID"] == result.message_id for m in lab.messages(rcpt))
                in_queue = int(states[rcpt] not in ("delivered", "bounced"))
                bounced = bounces.count((result.message_id, rcpt))
                assert in_mailbox + in_queue + bounced == 1, (rcpt, states[rcpt], in_mailbox, in_queue, bounced)
                assert (states[rcpt] == "delivered") == (in_mailbox == 1)
                assert (states[rcpt] == "bounced") == (bounced == 1)
