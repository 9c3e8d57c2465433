"""Exercises of notebook 03 (relay and delivery): fallback MX, retries, reading a DSN.

Each check reads what really happened in the lab (the Received headers of the delivered copy, the
relay queue, the DSN in the sender's mailbox) and compares it with the learner's answer.
"""

from __future__ import annotations

import weakref
from email.message import Message
from typing import Any

from ..i18n import N_, _
from ..mail.hops import received_hops
from ..net.replies import explain
from ..trace.events import QueueChange
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["check_fallback_prediction", "begin_retry_exercise", "check_deferred_then_delivered", "send_mystery",
           "check_dsn",
           "MYSTERY_SUBJECT"]

FALLBACK = N_("Exercise 1 · which host delivers?")
RETRY = N_("Exercise 2 · deferred, then delivered")
DSN = N_("Exercise 3 · read a bounce")

MYSTERY_SUBJECT = "Minutes of Monday's meeting"
_MYSTERY_FAULT = "550 5.2.1 <{rcpt}>: Mailbox disabled, not accepting messages"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _find_delivered(lab: Any, message_id: str, recipients: tuple[str, ...]) -> Message | None:
    for rcpt in recipients:
        try:
            mailbox = lab.messages(rcpt)
        except KeyError:
            continue
        for message in mailbox:
            if str(message.get("Message-ID", "")).strip() == message_id.strip():
                return message
    return None


# --- exercise 1: predict the host that delivers when mx1 is down ---

_FIND_OUT = N_("Find out: the topmost Received header of Bob's copy was written by the host that stored it (the "
                "word after 'by'); the ladder diagram below shows every attempt.")


def check_fallback_prediction(lab: Any, prediction: Any, result: Any) -> Feedback:
    """Compare the predicted delivering host with the `by` of the topmost Received header.

    The first well-formed prediction counts; a wrong one hears why that host cannot be it and where the
    evidence is, never the host that delivered.
    """
    if is_blank(prediction):
        return unanswered(_("Write the name of the host you expect to put the message into Bob's mailbox."),
                          _(FALLBACK))
    if not isinstance(prediction, str):
        return failed(_("give a host name as a string, like \"smtp.example.org\" (you gave {answer!r}).").format(
            answer=prediction), _(FALLBACK))
    if result is None or not hasattr(result, "message_id"):
        return failed(_("run the cell that sends the message first: the check needs its SendResult."), _(FALLBACK))
    try:
        given = lab.host(prediction.strip().lower().rstrip(".")).name
    except KeyError:
        return failed(_("{answer!r} is not a host of this lab: lab.hosts lists them.").format(answer=prediction),
                      _(FALLBACK))
    host = first_answer(FALLBACK, given)
    note = changed_answer_note(host, given)
    message = _find_delivered(lab, result.message_id, tuple(result.recipients))
    if message is None:
        item = lab.queue_item(result.queue_id)
        states = "; ".join(_("{address} is {state}").format(address=r.address, state=r.state)
                           for r in item.recipients)
        return failed(_("the message is not in any recipient's mailbox, so nobody delivered it yet: {states}. "
                        "Did you switch off mx2 as well? Bring it back with lab.host(\"mx2\").up(), "
                        "send again and compare.").format(states=states), _(FALLBACK))
    hops = received_hops(message)
    top = _one_line((message.get_all("Received") or [""])[0])
    truth = hops[-1].by
    mx1_down = not lab.host("mx1").is_up if "mx1.example.net" in lab.hosts else False
    if host == truth:
        why = (" " + _("mx1 refused the connection, so the relay tried the next MX by preference.")
               if truth != "mx1.example.net" else "")
        return passed(note + _("Right: the topmost Received header says 'by {host}'.").format(host=truth) + why + " "
                      + _("The header: {header}").format(header=top), _(FALLBACK))
    if host == "mx1.example.net":
        why = (_("mx1.example.net has the lowest preference, but it is down (it still is): what does a relay do "
                 "when the connection is refused (RFC 5321 section 5.1)?") if mx1_down else
               _("mx1.example.net has the lowest preference, but it is down: what does a relay do when the "
                 "connection is refused (RFC 5321 section 5.1)?"))
    elif host == "smtp.example.org":
        why = _("smtp.example.org is Alice's provider: it accepted her message and relayed it, but it has no "
                "mailbox for bob@example.net.")
    elif host == "smtp.example.net":
        why = _("smtp.example.net is where Bob submits his own mail (port 587, with a password); it is not in "
                "example.net's MX records, so no relay delivers to it.")
    elif host.startswith("imap."):
        why = _("{host} only lets Bob read his mailbox over IMAP; mail arrives over SMTP.").format(host=host)
    else:
        why = _("{host} did not write a Received header into Bob's copy.").format(host=host)
    return failed(note + _("Not this one.") + " " + why + " " + _(_FIND_OUT), _(FALLBACK))


# --- exercise 2: make a message wait in the queue, then get it delivered ---

def _queue_id(answer: Any) -> str:
    if hasattr(answer, "queue_id"):
        return str(answer.queue_id)
    return str(answer).strip()


# Where the trace stood when each lab's exercise 2 began: only messages sent after it are the learner's.
_RETRY_START: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def begin_retry_exercise(lab: Any) -> None:
    """Mark the start of exercise 2: the messages the notebook deferred before it are not the learner's."""
    _RETRY_START[lab] = lab.mark()


def _sent_before(lab: Any, queue_id: str, start: int) -> bool:
    """Whether the queue took this message in before `start` (a trace mark): its first event is older."""
    events = lab.trace.for_message(queue_id)
    return bool(events) and min(e.seq for e in events) <= start


def check_deferred_then_delivered(lab: Any, answer: Any) -> Feedback:
    """Pass when the learner's own message `answer` (queue id or SendResult), sent after the exercise began,
    needed 2+ attempts and was delivered."""
    if is_blank(answer):
        return unanswered(_("Send a message that cannot be delivered at once, get it delivered later, and put its "
                            "queue id in my_queue_id."), _(RETRY))
    queue_id = _queue_id(answer)
    start = _RETRY_START.get(lab)
    if start is None:
        return failed(_("run the exercise's first cell (it calls nb03.begin_retry_exercise(lab)) before you send: "
                        "the check counts only messages sent after it."), _(RETRY))
    try:
        item = lab.queue_item(queue_id)
    except KeyError:
        ids = ", ".join(i.queue_id for i in lab.queue if i.sender) or _("none yet")
        return failed(_("there is no message with queue id {queue_id!r} in lab.queue (your messages: {ids}). "
                        "The queue id is the last word of the reply '250 2.0.0 OK: queued as ...', "
                        "also in result.queue_id.").format(queue_id=queue_id, ids=ids), _(RETRY))
    if _sent_before(lab, queue_id, start):
        return failed(_("{queue_id} was sent before the exercise began: it is one of the notebook's own messages. "
                        "Send one yourself, in the exercise cell, make it wait, and get it delivered.").format(
            queue_id=queue_id), _(RETRY))
    if not item.sender:
        return failed(_("{queue_id} is a bounce (a DSN sent from the null sender <> to {address}), not a message "
                        "you sent. Use the queue id of your own message.").format(
            queue_id=queue_id, address=item.recipients[0].address), _(RETRY))
    bounced = [r for r in item.recipients if r.state == "bounced"]
    if bounced:
        r = bounced[0]
        return failed(_("{queue_id} bounced for {address}: {reply}. A 5xx reply (or a non-existent address) is "
                        "final; to see a retry you need a temporary failure: a host down, or a 4xx reply such as "
                        "451.").format(queue_id=queue_id, address=r.address, reply=r.last_reply), _(RETRY))
    waiting = [r for r in item.recipients if r.state != "delivered"]
    if waiting:
        r = waiting[0]
        minutes = max(0, (item.next_attempt - lab.clock.now()) / 60)
        return failed(_("{queue_id} is still {state} for {address} after {attempts} attempt(s); the last reply "
                        "was: {reply}. The next attempt is due in {minutes:.0f} min of lab time. Make a receiving "
                        "host work again (lab.host(\"mx1\").up(), or .clear_faults()), then move the clock past "
                        "that attempt, e.g. lab.clock.advance(\"5m\").").format(
            queue_id=queue_id, state=r.state, address=r.address, attempts=r.attempts, reply=r.last_reply,
            minutes=minutes), _(RETRY))
    attempts = max(r.attempts for r in item.recipients)
    r = item.recipients[0]
    if attempts < 2:
        return failed(_("{queue_id} was delivered at the first attempt by {host} ({reply}): it never waited in "
                        "the queue. Before you send, make every MX of example.net unreachable (down() both, or "
                        "inject a 451 at RCPT on both); then repair one and advance the clock.").format(
            queue_id=queue_id, host=r.via, reply=r.last_reply), _(RETRY))
    events = [e for e in lab.trace.for_message(queue_id) if isinstance(e.payload, QueueChange)]
    deferrals = [e.shown for e in events if e.payload.state == "deferred"]
    delivered_at = next((e.time for e in events if e.payload.state == "delivered"), None)
    first = (" " + _("After attempt 1 the queue noted: \"{note}\".").format(note=deferrals[0])
             if deferrals else "")
    waited = (" " + _("It spent {minutes:.0f} min of lab time in the queue.").format(
        minutes=(delivered_at - item.created) / 60) if delivered_at is not None else "")
    return passed(_("{queue_id} was deferred, retried, and delivered by {host} at attempt {attempts}: "
                    "{reply}.").format(queue_id=queue_id, host=r.via, attempts=attempts, reply=r.last_reply)
                  + first + waited, _(RETRY))


# --- exercise 3: read a DSN ---

def send_mystery(lab: Any, sender: str = "alice@example.org", recipient: str = "bob@example.net") -> Any:
    """Send a message from `sender` to `recipient` (Cc the sender) that bounces for `recipient`.

    The receiving MX hosts answer RCPT for `recipient` with a permanent error this one time; what it
    is, the learner finds out from the DSN. Faults set here are removed again before returning.
    """
    domain = recipient.rpartition("@")[2]
    hosts = [lab.host(r.exchange) for r in lab.lookup_mx(domain) if r.exchange in lab.hosts]
    added = []
    for host in hosts:
        had_faults = bool(host.faults)
        added.append((host, had_faults, host.inject("RCPT", _MYSTERY_FAULT.format(rcpt=recipient),
                                                    recipient=recipient)))
    try:
        result = lab.send(sender, [recipient, sender], MYSTERY_SUBJECT,
                          "Hi Bob,\n\nhere are the minutes of Monday's meeting.\n\nAlice\n")
    finally:
        for host, had_faults, fault in added:
            if had_faults:
                lab.faults.remove(fault)
            else:
                host.clear_faults()
    return result


def _dsn_fields(message: Message) -> tuple[str, list[dict[str, str]]]:
    """Return (Message-ID of the returned original, [per-recipient fields]) of a DSN."""
    original = ""
    blocks: list[dict[str, str]] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                blocks = [{k: _one_line(v) for k, v in block.items()} for block in payload[1:]
                          if not isinstance(block, str)]
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            text = part.get_payload(decode=True)
            raw = text if isinstance(text, bytes) else b""
            for line in raw.decode("utf-8", "replace").splitlines():
                if line.lower().startswith("message-id:"):
                    original = line.split(":", 1)[1].strip()
    return original, blocks


def _address(value: str) -> str:
    text = value.strip()
    if ";" in text:
        text = text.split(";", 1)[1]
    return text.strip().strip("<>").strip().lower()


def check_dsn(lab: Any, mystery: Any, status: Any, recipient: Any, sender: str = "alice@example.org") -> Feedback:
    """Compare the learner's Status code and failing recipient with the DSN about `mystery`."""
    if is_blank(status) and is_blank(recipient):
        return unanswered(_("Find the DSN about the mystery message in Alice's mailbox and fill in dsn_status "
                            "and dsn_recipient."), _(DSN))
    if mystery is None or not hasattr(mystery, "message_id"):
        return failed(_("run the cell with nb03.send_mystery(lab) first: the check needs its result."), _(DSN))
    lab.wait_for_delivery()
    reports = [m for m in lab.messages(sender) if m.get_content_type() == "multipart/report"]
    blocks: list[dict[str, str]] = []
    for report in reports:
        original, fields = _dsn_fields(report)
        if original == mystery.message_id.strip():
            blocks = fields
    if not blocks:
        item = lab.queue_item(mystery.queue_id)
        states = "; ".join(f"{r.address}: {r.state}" for r in item.recipients)
        return failed(_("there is no DSN about the mystery message in {sender}'s mailbox yet ({states}). "
                        "Are the MX hosts of example.net up? Run the nb03.send_mystery(lab) cell again.").format(
            sender=sender, states=states), _(DSN))
    block = blocks[0]
    true_status = block.get("Status", "")
    true_rcpt = _address(block.get("Final-Recipient", ""))
    diagnostic = block.get("Diagnostic-Code", "")
    problems = []
    if is_blank(status):
        problems.append(_("dsn_status is still empty: copy the value of the Status field"))
    else:
        given = str(status).strip()
        if given != true_status:
            if given.isdigit() and len(given) == 3:
                problems.append(_("{given} is a three-digit SMTP reply code (you find those in Diagnostic-Code); "
                                  "the Status field holds the enhanced status code, three numbers with dots "
                                  "(class.subject.detail)").format(given=given))
            elif given == "5.1.1":
                problems.append(_("5.1.1 (user unknown) was the Status of the earlier bounce to "
                                  "nobody@example.net; this DSN is about another message and another reason"))
            else:
                problems.append(_("the Status field of this DSN does not say {given!r}").format(given=given))
    if is_blank(recipient):
        problems.append(_("dsn_recipient is still empty: copy the address from Final-Recipient"))
    else:
        given_rcpt = _address(str(recipient))
        if given_rcpt != true_rcpt:
            if given_rcpt == sender.lower():
                problems.append(_("{address} is the sender: the DSN is addressed To her. The recipient that "
                                  "failed is in the Final-Recipient field").format(address=given_rcpt))
            elif given_rcpt == "nobody@example.net":
                problems.append(_("nobody@example.net failed in the earlier bounce; the mystery message went to "
                                  "other recipients"))
            else:
                problems.append(_("{address} is not the Final-Recipient of this DSN").format(address=given_rcpt))
    if problems:
        return failed(_("Not yet: {problems}. Look for the part with Content-Type message/delivery-status in the "
                        "newest DSN (Subject: Undelivered Mail Returned to Sender).").format(
            problems="; ".join(problems)), _(DSN))
    said = diagnostic.removeprefix("smtp; ")
    code = said[:3]
    meaning = f" ({explain(int(code), true_status)})" if code.isdigit() else ""
    return passed(_("Right: Status {status} for {address}{meaning}. The MX said: {reply}. A 5 in front means "
                    "permanent: the relay bounced at once, without retrying. The other recipient is not in the DSN: "
                    "it was delivered.").format(status=true_status, address=true_rcpt, meaning=meaning, reply=said),
                  _(DSN))
