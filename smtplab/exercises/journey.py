"""Checks of notebook 00 (welcome): who delivered Alice's message, and Bob's reply.

The checks read what really happened in the lab (the relay queue, the Received headers of the
delivered copy) and say where the learner's answer fits in the journey when it is not the right one.
"""

from __future__ import annotations

from email.message import Message
from typing import Any

from ..errors import SmtpLabError
from ..i18n import N_, _
from ..mail.hops import received_hops
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["check_delivering_host", "check_reply"]

DELIVERER = N_("Exercise 1 · who put the message into Bob's mailbox?")
REPLY = N_("Exercise 3 · Bob answers")

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

_HOW_TO_FIND_OUT = (N_("Find out from the evidence: the topmost Received header of Bob's copy (printed in the "
                    "route section) was written by the server that stored the message, after the word 'by'; "
                    "the 'via' column of the relay queue names the same host."))


def check_delivering_host(lab: Any, result: Any, answer: Any) -> Feedback:
    """Compare `answer` (a host name) with the host that delivered `result` to Bob's mailbox.

    A wrong answer is told why that host cannot be it and where to look, never which host it was; the
    first well-formed answer counts (`first_answer`), so trying every host name in turn teaches nothing.
    """
    if is_blank(answer):
        return unanswered(_("Write a host name from lab.hosts, as a string."), _(DELIVERER))
    if not isinstance(answer, str):
        return failed(_("Give the host name as a string, like \"smtp.example.org\" (you gave {answer!r}).").format(answer=answer),
                      _(DELIVERER))
    if result is None or not hasattr(result, "queue_id"):
        return failed(_("Run the cell where Alice sends her message first: this check needs its result."), _(DELIVERER))
    try:
        item = lab.queue_item(result.queue_id)
    except (KeyError, SmtpLabError):
        return failed(_("The message {queue_id} is not in this lab's queue. Did you restart the lab after "
                      "sending it? Run the notebook again from the top.").format(queue_id=result.queue_id), _(DELIVERER))
    status = next((r for r in item.recipients if r.address == BOB), item.recipients[0])
    if status.state != "delivered":
        return failed(_("The message has not reached Bob's mailbox yet: the queue says {address} is "
                      "{state}. Run the sending cell again.").format(address=status.address, state=status.state), _(DELIVERER))
    truth = status.via
    given = answer.strip().lower().rstrip(".")
    if given not in lab.hosts:
        return failed(_("{answer!r} is not a host of this lab: lab.hosts lists them.").format(answer=answer), _(DELIVERER))
    name = first_answer(DELIVERER, given)
    note = changed_answer_note(name, given)
    if name == truth:
        copy = _delivered_copy(lab, result.message_id, status.address)
        evidence = (_(" The topmost Received header of Bob's copy: {one_line}").format(one_line=_one_line((copy.get_all('Received') or [''])[0]))
                    if copy is not None and copy.get_all("Received") else "")
        return passed(_("{note}Right: {truth} accepted the message for {address} over SMTP and stored it in "
                      "his Maildir ('{last_reply}').{evidence}").format(note=note, truth=truth, address=status.address, last_reply=status.last_reply, evidence=evidence), _(DELIVERER))
    if name == "smtp.example.org":
        why = (_("smtp.example.org is Alice's provider: it accepted her message (submission) and relayed it, but it "
               "has no mailbox for bob@example.net."))
    elif name == "smtp.example.net":
        why = (_("smtp.example.net is where Bob *sends* his own mail (submission, with a password); mail from other "
               "providers is not handed to it."))
    elif name.startswith("imap."):
        why = _("{name} only lets its users read their mailboxes: mail arrives by SMTP, not IMAP.").format(name=name)
    elif name.startswith("dns."):
        why = _("{name} answers questions about names; it never receives a message.").format(name=name)
    else:
        why = _("{name} did not write a Received header into Bob's copy of this message.").format(name=name)
    return failed(_("{note}Not this one. {why} {HOW_TO_FIND_OUT}").format(note=note, why=why, HOW_TO_FIND_OUT=_(_HOW_TO_FIND_OUT)), _(DELIVERER))


# --- exercise 2: Bob answers Alice ---

def check_reply(lab: Any, reply: Any) -> Feedback:
    """Check that `reply` (the SendResult of lab.send) went from Bob to Alice and reached her mailbox."""
    if is_blank(reply):
        return unanswered(_("Send Bob's answer with lab.send(...), keep what it returns in reply, and run this "
                          "check again. Alice's call in 'Alice sends, Bob reads' shows the order of the "
                          "arguments."), _(REPLY))
    if not hasattr(reply, "queue_id") or not hasattr(reply, "sender"):
        return failed(_("Reply should be what lab.send(...) returns (a SendResult), not {type} "
                      "{reply!r}.").format(type=type(reply).__name__, reply=reply), _(REPLY))
    if reply.sender.lower() != BOB:
        extra = (_(" That is Alice writing again; Bob must be the sender this time.") if reply.sender.lower() == ALICE
                 else "")
        return failed(_("This message was sent by {sender}, not by {BOB}.{extra} The first argument of "
                      "lab.send is the sender: Bob's provider checks his password and sends it from "
                      "smtp.example.net.").format(sender=reply.sender, BOB=BOB, extra=extra), _(REPLY))
    recipients = [r.lower() for r in reply.recipients]
    if ALICE not in recipients:
        return failed(_("The message went to {value}, not to {ALICE}. The second argument of "
                      "lab.send is the recipient (or a list of them).").format(value=', '.join(reply.recipients), ALICE=ALICE), _(REPLY))
    try:
        item = lab.queue_item(reply.queue_id)
    except (KeyError, SmtpLabError):
        return failed(_("The message {queue_id} is not in this lab's queue. Was it sent in an earlier lab? "
                      "Send it again with the running lab.").format(queue_id=reply.queue_id), _(REPLY))
    status = next(r for r in item.recipients if r.address.lower() == ALICE)
    if status.state != "delivered":
        return failed(_("Smtp.example.net accepted the message ({code} {enhanced} "
                      "{text}), but it has not reached Alice yet: the queue says {state} "
                      "({last_reply}). Did you switch a host off? lab.hosts shows which are up.").format(code=reply.reply.code, enhanced=reply.reply.enhanced, text=reply.reply.text, state=status.state, last_reply=status.last_reply), _(REPLY))
    copy = _delivered_copy(lab, reply.message_id, ALICE)
    route = ""
    if copy is not None:
        hops = received_hops(copy)
        route = _(" Its Received headers, bottom-up: ") + " -> ".join(
            [hops[0].from_name] + [hop.by for hop in hops]) + "."
    return passed(_("Right: Bob's client submitted to smtp.example.net ({code} {enhanced} "
                  "{text}); its relay looked up the MX of example.org and handed the message to "
                  "{via}, which stored it in Alice's Maildir ('{last_reply}'). Alice would read it "
                  "over IMAP at imap.example.org.{route}").format(code=reply.reply.code, enhanced=reply.reply.enhanced, text=reply.reply.text, via=status.via, last_reply=status.last_reply, route=route), _(REPLY))
