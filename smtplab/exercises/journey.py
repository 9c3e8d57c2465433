"""Checks of notebook 00 (welcome): who delivered Alice's message, and Bob's reply.

The checks read what really happened in the lab (the relay queue, the Received headers of the
delivered copy) and say where the learner's answer fits in the journey when it is not the right one.
"""

from __future__ import annotations

from email.message import Message
from typing import Any

from ..errors import SmtpLabError
from ..mail.hops import received_hops
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["check_delivering_host", "check_reply"]

DELIVERER = "Exercise 1 · who put the message into Bob's mailbox?"
REPLY = "Exercise 3 · Bob answers"

ALICE = "alice@example.org"
BOB = "bob@example.net"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _delivered_copy(lab: Any, message_id: str, recipient: str) -> Message | None:
    try:
        mailbox = lab.messages(recipient)
    except Exception:  # a stopped lab has no mailboxes any more
        return None
    for message in mailbox:
        if str(message.get("Message-ID", "")).strip() == message_id.strip():
            return message
    return None


# --- exercise 1: name the host that stored the message in Bob's Maildir ---

_HOW_TO_FIND_OUT = ("Find out from the evidence: the topmost Received header of Bob's copy (printed in the "
                    "route section) was written by the server that stored the message, after the word 'by'; "
                    "the 'via' column of the relay queue names the same host.")


def check_delivering_host(lab: Any, result: Any, answer: Any) -> Feedback:
    """Compare `answer` (a host name) with the host that delivered `result` to Bob's mailbox.

    A wrong answer is told why that host cannot be it and where to look, never which host it was; the
    first well-formed answer counts (`first_answer`), so trying every host name in turn teaches nothing.
    """
    if is_blank(answer):
        return unanswered("Write a host name from lab.hosts, as a string.", DELIVERER)
    if not isinstance(answer, str):
        return failed(f"Give the host name as a string, like \"smtp.example.org\" (you gave {answer!r}).",
                      DELIVERER)
    if result is None or not hasattr(result, "queue_id"):
        return failed("Run the cell where Alice sends her message first: this check needs its result.", DELIVERER)
    try:
        item = lab.queue_item(result.queue_id)
    except (KeyError, SmtpLabError):
        return failed(f"The message {result.queue_id} is not in this lab's queue. Did you restart the lab after "
                      "sending it? Run the notebook again from the top.", DELIVERER)
    status = next((r for r in item.recipients if r.address == BOB), item.recipients[0])
    if status.state != "delivered":
        return failed(f"The message has not reached Bob's mailbox yet: the queue says {status.address} is "
                      f"{status.state}. Run the sending cell again.", DELIVERER)
    truth = status.via
    given = answer.strip().lower().rstrip(".")
    if given not in lab.hosts:
        return failed(f"{answer!r} is not a host of this lab: lab.hosts lists them.", DELIVERER)
    name = first_answer(DELIVERER, given)
    note = changed_answer_note(name, given)
    if name == truth:
        copy = _delivered_copy(lab, result.message_id, status.address)
        evidence = (f" The topmost Received header of Bob's copy: {_one_line((copy.get_all('Received') or [''])[0])}"
                    if copy is not None and copy.get_all("Received") else "")
        return passed(f"{note}Right: {truth} accepted the message for {status.address} over SMTP and stored it in "
                      f"his Maildir ('{status.last_reply}').{evidence}", DELIVERER)
    if name == "smtp.example.org":
        why = ("smtp.example.org is Alice's provider: it accepted her message (submission) and relayed it, but it "
               "has no mailbox for bob@example.net.")
    elif name == "smtp.example.net":
        why = ("smtp.example.net is where Bob *sends* his own mail (submission, with a password); mail from other "
               "providers is not handed to it.")
    elif name.startswith("imap."):
        why = f"{name} only lets its users read their mailboxes: mail arrives by SMTP, not IMAP."
    elif name.startswith("dns."):
        why = f"{name} answers questions about names; it never receives a message."
    else:
        why = f"{name} did not write a Received header into Bob's copy of this message."
    return failed(f"{note}Not this one. {why} {_HOW_TO_FIND_OUT}", DELIVERER)


# --- exercise 2: Bob answers Alice ---

def check_reply(lab: Any, reply: Any) -> Feedback:
    """Check that `reply` (the SendResult of lab.send) went from Bob to Alice and reached her mailbox."""
    if is_blank(reply):
        return unanswered("Send Bob's answer with lab.send(...), keep what it returns in reply, and run this "
                          "check again. Alice's call in 'Alice sends, Bob reads' shows the order of the "
                          "arguments.", REPLY)
    if not hasattr(reply, "queue_id") or not hasattr(reply, "sender"):
        return failed(f"Reply should be what lab.send(...) returns (a SendResult), not {type(reply).__name__} "
                      f"{reply!r}.", REPLY)
    if reply.sender.lower() != BOB:
        extra = (" That is Alice writing again; Bob must be the sender this time." if reply.sender.lower() == ALICE
                 else "")
        return failed(f"This message was sent by {reply.sender}, not by {BOB}.{extra} The first argument of "
                      "lab.send is the sender: Bob's provider checks his password and sends it from "
                      "smtp.example.net.", REPLY)
    recipients = [r.lower() for r in reply.recipients]
    if ALICE not in recipients:
        return failed(f"The message went to {', '.join(reply.recipients)}, not to {ALICE}. The second argument of "
                      "lab.send is the recipient (or a list of them).", REPLY)
    try:
        item = lab.queue_item(reply.queue_id)
    except (KeyError, SmtpLabError):
        return failed(f"The message {reply.queue_id} is not in this lab's queue. Was it sent in an earlier lab? "
                      "Send it again with the running lab.", REPLY)
    status = next(r for r in item.recipients if r.address.lower() == ALICE)
    if status.state != "delivered":
        return failed(f"Smtp.example.net accepted the message ({reply.reply.code} {reply.reply.enhanced} "
                      f"{reply.reply.text}), but it has not reached Alice yet: the queue says {status.state} "
                      f"({status.last_reply}). Did you switch a host off? lab.hosts shows which are up.", REPLY)
    copy = _delivered_copy(lab, reply.message_id, ALICE)
    route = ""
    if copy is not None:
        hops = received_hops(copy)
        route = " Its Received headers, bottom-up: " + " -> ".join(
            [hops[0].from_name] + [hop.by for hop in hops]) + "."
    return passed(f"Right: Bob's client submitted to smtp.example.net ({reply.reply.code} {reply.reply.enhanced} "
                  f"{reply.reply.text}); its relay looked up the MX of example.org and handed the message to "
                  f"{status.via}, which stored it in Alice's Maildir ('{status.last_reply}'). Alice would read it "
                  f"over IMAP at imap.example.org.{route}", REPLY)
