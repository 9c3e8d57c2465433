"""Checks of notebook 07 (capstone), "Bob never got the mail": the learner's diagnosis of each message.

The lab with hidden faults comes from `mystery` (`start_mystery_lab()`, `reveal(lab)`, re-exported here
for the notebook). The learner diagnoses every message with the tools of notebooks 01-04; each check
compares the diagnosis with the evidence in the real lab (queue, DNS, replies, DSNs) and quotes that
evidence, never the diagnosis itself.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from ..errors import SmtpLabError
from ..mail.hops import received_hops
from ..mail.queue import QueueItem, RecipientStatus
from ..net.client import SendResult
from ..net.replies import explain
from ..trace.events import QueueChange
from . import Feedback, combine, failed, first_answer, passed, unanswered
from ._answers import is_blank
from .mystery import (
    ALICE,
    FULL_MAILBOX,
    MISSING_MX,
    RULED,
    SHOP_DOMAIN,
    SUBJECTS,
    morning_results,
    mystery_scenario,
    reveal,
    start_mystery_lab,
)

__all__ = ["CAUSES", "SUBJECTS", "start_mystery_lab", "mystery_scenario", "reveal", "check_ride",
           "check_payment", "check_route", "check_photos"]

# What can make a message arrive, wait or bounce. The learner picks one key per message.
CAUSES: dict[str, str] = {
    "delivered": "nothing went wrong: the message is in the recipient's mailbox",
    "backup-mx": "the preferred MX was down, a backup MX took the message: nothing lost",
    "all-mx-down": "every MX of the domain is down: the message waits in the queue",
    "mx-no-address": "the domain's MX record names a host that has no address in DNS",
    "no-such-domain": "the recipient's domain does not exist in DNS (NXDOMAIN)",
    "user-unknown": "the recipient's address does not exist at its provider (5.1.1)",
    "mailbox-full": "the recipient's mailbox is full: refused for now (4xx), retried until the queue gives up",
    "policy-rejection": "the recipient's server refuses the message by a rule: a permanent refusal (5xx, 5.7.x)",
}

RIDE = "Exercise 1 · the club ride"
PAYMENT = "Exercise 2 · the payment note"
ROUTE = "Exercise 3 · the route for the club"
PHOTOS = "Exercise 4 · the photos"


# --- shared helpers ---

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _case(lab: Any, key: str) -> tuple[SendResult, QueueItem] | str:
    """Return this morning's message `key` and its queue entry, or why they cannot be found."""
    results = morning_results(lab)
    if results is None:
        return ("this check needs the lab of this notebook: lab = nb07.start_mystery_lab() (a lab from "
                "smtplab.start() has no mystery in it).")
    result = results[key]
    try:
        return result, lab.queue_item(result.queue_id)
    except (KeyError, SmtpLabError):
        return f"the message {result.queue_id} is no longer in the queue; run the notebook again from the top."


def _status(item: QueueItem, address: str) -> RecipientStatus:
    return next(r for r in item.recipients if r.address == address)


def _relay_notes(lab: Any, queue_id: str) -> list[Any]:
    """The relay's queue changes for one message (events: `.text` to quote, `.payload` to read)."""
    return [e for e in lab.trace.for_message(queue_id) if isinstance(e.payload, QueueChange)]


def _refusal_of(notes: list[Any], host: str) -> str:
    """The relay's note of a connection to `host` that failed, to quote ('' if none)."""
    return next((n.text for n in notes if n.payload.state == "connect-failed" and n.payload.mx == host), "")


def _cause(value: Any, exercise: str, example: str) -> str | Feedback:
    """Normalise a cause answer, or return the Feedback for a blank or unknown one.

    The first well-formed cause checked for an exercise is the one judged (`first_answer`): eight causes
    tried in turn would otherwise find the diagnosis without any.
    """
    if is_blank(value):
        return unanswered(f"Choose the cause from nb07.CAUSES and write its key in {example}.", exercise)
    key = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    if key not in CAUSES:
        return failed(f"{value!r} is not one of the causes. Choose one of: {', '.join(CAUSES)}.", exercise)
    return str(first_answer(f"{exercise} (cause)", key))


def _host(lab: Any, value: Any, exercise: str, example: str) -> str | Feedback:
    if is_blank(value):
        return unanswered(f"Write a host name, e.g. {example} = \"smtp.example.org\".", exercise)
    if not isinstance(value, str):
        return failed(f"Give a host name as a string, like \"smtp.example.org\" (you gave {value!r}).", exercise)
    name = value.strip().lower().rstrip(".")
    try:
        return str(lab.host(name).name)
    except KeyError:
        return name  # not a lab host: maybe a name that exists only in DNS


def _codes(text: str) -> tuple[str, str]:
    """Return the reply code and the enhanced status code found in `text` ('' when absent)."""
    basic = re.search(r"(?<![\d.])([2-5]\d\d)(?![\d.])", text)
    enhanced = re.search(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])", text)
    return (basic.group(1) if basic else "", enhanced.group(1) if enhanced else "")


def _first_refusal(notes: list[Any], address: str, fallback: str) -> str:
    """The reply that first deferred `address`, from the relay's notes (it may be delivered by now)."""
    for note in notes:
        if note.payload.state == "deferred" and address in note.payload.recipients:
            return str(note.payload.reply)
    return fallback


def _server_reply(last_reply: str) -> str:
    """The reply as the server gave it, without the relay's '(gave up after ...)' note."""
    return last_reply.split(" (gave up after", 1)[0]


def _check_reply(value: Any, truth: str, where: str, exercise: str, example: str) -> Feedback:
    """Compare a reply code answer ('452', '452 4.2.2', '4.2.2') with the real reply `truth`.

    A wrong code is told where the reply is written down (`where`), never the reply itself.
    """
    if is_blank(value):
        return unanswered(f"Write the reply code the server gave in {example}.", exercise)
    given_basic, given_enhanced = _codes(str(value))
    basic, enhanced = _codes(truth)
    if not given_basic and not given_enhanced:
        return failed(f"Give a reply code, like \"550\" or \"550 5.7.1\" (you gave {value!r}).", exercise)
    if (given_basic in ("", basic)) and (given_enhanced in ("", enhanced)):
        return passed(f"And {basic} {enhanced} is the reply: {explain(int(basic), enhanced)}.", exercise)
    if given_basic == basic:
        return failed(f"The three-digit code is right, but not the enhanced status code {given_enhanced}. Read the "
                      f"whole reply in {where}.", exercise)
    return failed(f"{value} is not what this recipient's server answered. Read its reply in {where}, and take "
                  "the line that answers this recipient's RCPT TO, not another one's.", exercise)


def _copy_in(lab: Any, address: str, message_id: str) -> Message | None:
    try:
        mailbox = lab.messages(address)
    except Exception:  # a stopped lab has no mailboxes any more
        return None
    return next((m for m in mailbox if str(m.get("Message-ID", "")).strip() == message_id.strip()), None)


def _dsn_diagnostic(lab: Any, message_id: str, recipient: str) -> str:
    """Return the Diagnostic-Code of the failed DSN about `recipient` in Alice's INBOX, or ''."""
    try:
        inbox = lab.messages(ALICE)
    except Exception:  # a stopped lab has no mailboxes any more
        return ""
    for message in inbox:
        if message.get_content_type() != "multipart/report" or message_id not in message.as_string():
            continue
        for part in message.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in part.get_payload():
                if recipient in str(block.get("Final-Recipient", "")) and block.get("Action") == "failed":
                    return _one_line(str(block.get("Diagnostic-Code", "")))
    return ""


# --- exercise 1: the club ride (delivered through the backup MX) ---

def check_ride(lab: Any, cause: Any, delivered_by: Any) -> Feedback:
    """The ride message reached Bob through mx2 while mx1 was down: a red herring."""
    if is_blank(cause) and is_blank(delivered_by):
        return unanswered("Set ride_cause to a key of nb07.CAUSES and ride_delivered_by to the host that put "
                          "the message into Bob's mailbox.", RIDE)
    case = _case(lab, "ride")
    if isinstance(case, str):
        return failed(case, RIDE)
    result, item = case
    status = _status(item, "bob@example.net")
    notes = _relay_notes(lab, item.queue_id)
    refused = _refusal_of(notes, "mx1.example.net") or "mx1.example.net was not tried"
    copy = _copy_in(lab, status.address, result.message_id)
    top = _one_line((copy.get_all("Received") or [""])[0]) if copy is not None and copy.get_all("Received") else ""
    by = received_hops(copy)[-1].by if copy is not None and top else status.via
    where = f"the topmost Received header of Bob's copy: '{top}'" if top else f"the queue: delivered by {status.via}"
    return combine([_ride_cause(cause, status, refused), _ride_host(lab, delivered_by, by, refused, where)], RIDE)


def _ride_cause(value: Any, status: RecipientStatus, refused: str) -> Feedback:
    cause = _cause(value, RIDE, "ride_cause")
    if isinstance(cause, Feedback):
        return cause
    done = status.state == "delivered"
    if cause == "backup-mx" and done:
        return passed(f"Right: the preferred MX was down ('{refused}'), so the relay tried the next MX by "
                      f"preference, {status.via}, which answered '{status.last_reply}'. Nothing was lost: Bob has "
                      "the message. A host that is down only delays mail while another MX answers; it is not "
                      "why the other messages went missing.", RIDE)
    if cause == "delivered" and done:
        return failed("Bob has the message, true. But was every step on the way a success? Read the relay's notes "
                      "for it, line by line.", RIDE)
    if cause == "all-mx-down":
        return failed(f"The queue says {status.address} is {status.state}. Could a message be {status.state} if "
                      "every MX were down?", RIDE)
    return failed(f"That does not fit the evidence ({CAUSES[cause]}): the queue says {status.address} is "
                  f"{status.state}. Read the relay's notes for this message: what went wrong on the way, and "
                  "what happened next?", RIDE)


def _ride_host(lab: Any, value: Any, truth: str, refused: str, where: str) -> Feedback:
    name = _host(lab, value, RIDE, "ride_delivered_by")
    if isinstance(name, Feedback):
        return name
    if name == truth:
        return passed(f"And {truth} stored it in Bob's Maildir: {where}.", RIDE)
    if name == "mx1.example.net":
        why = "mx1.example.net is the preferred MX (lowest preference); what did the relay note when it tried it?"
    elif name == "smtp.example.org":
        why = "smtp.example.org is Alice's outgoing server: it relayed the message but has no mailbox for Bob."
    elif name.startswith("imap."):
        why = f"{name} lets Bob read his mailbox over IMAP; mail arrives over SMTP at an MX of example.net."
    elif name not in lab.hosts:
        why = f"{value!r} is not a host of this lab (lab.hosts lists them)."
    else:
        why = f"{name} did not write a Received header into Bob's copy."
    return failed(f"{why} The topmost Received header of Bob's copy names the host that stored it.", RIDE)


# --- exercise 2: the payment note (the MX names a host without an address) ---

def check_payment(lab: Any, cause: Any, mx_name: Any) -> Feedback:
    """The payment note waits in the queue: bobsbikes.example's MX names a host that has no address."""
    if is_blank(cause) and is_blank(mx_name):
        return unanswered("Set payment_cause to a key of nb07.CAUSES and payment_mx to the host name the MX "
                          f"record of {SHOP_DOMAIN} gives.", PAYMENT)
    case = _case(lab, "payment")
    if isinstance(case, str):
        return failed(case, PAYMENT)
    _, item = case
    status = item.recipients[0]
    exchange, pref, addresses, rcode = MISSING_MX, 10, (), "NXDOMAIN"
    try:
        records = lab.lookup_mx(SHOP_DOMAIN)
        if records:
            exchange, pref, addresses = records[0].exchange, records[0].preference, records[0].addresses
        rcode = lab.dig(exchange, "A").rcode
    except SmtpLabError:
        pass  # the lab is stopped: the queue alone still tells the story
    real = [h.name for h in lab.hosts.values() if h.domain == SHOP_DOMAIN and "smtp" in h.ports]
    dns = (f"lab.lookup_mx('{SHOP_DOMAIN}') gives MX {pref} {exchange} with "
           f"{'addresses ' + ', '.join(addresses) if addresses else 'no address'}, and dig {exchange} A answers "
           f"{rcode}")
    queue = f"the queue says {status.address} is {status.state} after {status.attempts} attempts: '{status.last_reply}'"
    return combine([_payment_cause(cause, status, exchange, pref, rcode, real, dns, queue),
                    _payment_mx(lab, mx_name, exchange, rcode, real)], PAYMENT)


def _payment_cause(value: Any, status: RecipientStatus, exchange: str, pref: int, rcode: str, real: list[str],
                   dns: str, queue: str) -> Feedback:
    cause = _cause(value, PAYMENT, "payment_cause")
    if isinstance(cause, Feedback):
        return cause
    if cause == "mx-no-address":
        later = ("It keeps the message and retries" if status.state == "deferred"
                 else "It retried for 5 days, then gave up and sent Alice a DSN")
        return passed(f"Right: {dns}. The relay can only connect to an address, not to a name, so it never "
                      f"reached any server: {queue}. {later}. The host that really receives mail for "
                      f"{SHOP_DOMAIN} is {', '.join(real)}: the MX record should name it.", PAYMENT)
    if cause == "no-such-domain":
        return failed(f"Does {SHOP_DOMAIN} exist? Ask the lab DNS for its MX records, then follow the answer one "
                      "step further: the relay needs an address to connect to.", PAYMENT)
    if cause == "all-mx-down":
        return failed(f"Was any {SHOP_DOMAIN} server asked at all? Look for an SMTP connection to one in this "
                      "message's trace, and read the relay's last note: who wrote it, and about what?", PAYMENT)
    if cause in ("user-unknown", "mailbox-full", "policy-rejection"):
        return failed(f"That would be an answer from {SHOP_DOMAIN}'s mail server. Did the relay ever reach one? "
                      "Look for an SMTP connection to a host of that domain in this message's trace.", PAYMENT)
    return failed(f"The message was not delivered: the queue says {status.address} is {status.state}. What is the "
                  "relay waiting for? Its notes and the DNS questions it asks tell.", PAYMENT)


def _payment_mx(lab: Any, value: Any, exchange: str, rcode: str, real: list[str]) -> Feedback:
    name = _host(lab, value, PAYMENT, "payment_mx")
    if isinstance(name, Feedback):
        return name
    if name == exchange:
        return passed(f"And {exchange} is indeed the name the MX record gives.", PAYMENT)
    if name in real:
        return failed(f"{name} is a host that runs SMTP for {SHOP_DOMAIN} (see lab.hosts). Is it the name the MX "
                      f"record gives? Ask: lab.lookup_mx('{SHOP_DOMAIN}').", PAYMENT)
    return failed(f"{value} is not what the MX record of {SHOP_DOMAIN} says: ask lab.lookup_mx('{SHOP_DOMAIN}').",
                  PAYMENT)


# --- exercise 3: the route for the club (a rule refuses it: bounced at once) ---

def check_route(lab: Any, cause: Any, reply: Any) -> Feedback:
    """The route bounced at once: riders@example.net's server refuses it by a rule (550 5.7.1)."""
    if is_blank(cause) and is_blank(reply):
        return unanswered("Set route_cause to a key of nb07.CAUSES and route_reply to the reply code the "
                          f"server gave for {RULED}.", ROUTE)
    case = _case(lab, "route")
    if isinstance(case, str):
        return failed(case, ROUTE)
    result, item = case
    status = _status(item, RULED)
    truth = _server_reply(status.last_reply)
    diagnostic = _dsn_diagnostic(lab, result.message_id, RULED)
    dsn = " (it is in her INBOX: 'Undelivered Mail Returned to Sender')" if diagnostic else ""
    where = "the DSN in Alice's INBOX (its Diagnostic-Code) or your own session above"
    return combine([_route_cause(cause, status, truth, dsn),
                    _check_reply(reply, truth, where, ROUTE, "route_reply")], ROUTE)


def _route_cause(value: Any, status: RecipientStatus, truth: str, dsn: str) -> Feedback:
    cause = _cause(value, ROUTE, "route_cause")
    if isinstance(cause, Feedback):
        return cause
    if cause == "policy-rejection":
        return passed(f"Right: {status.via} refused the recipient with '{truth}'. 5 = permanent, x.7.1 = delivery "
                      "not authorized (RFC 3463): a rule of the receiving server, not an unknown user (5.1.1) nor a "
                      f"full mailbox (4.2.2, temporary). So the relay did not retry: it bounced the message after "
                      f"{status.attempts} attempt and sent Alice a DSN{dsn}. Sending the same message again is no use: "
                      "the club must let her post, or she writes to Bob directly.", ROUTE)
    if cause == "user-unknown":
        return failed(f"Does {RULED} exist (lab.users)? And what does the enhanced code in the DSN's Diagnostic-Code "
                      "say? smtplab.explain(code, enhanced) compares it with an unknown user's 5.1.1.", ROUTE)
    if cause == "mailbox-full":
        return failed(f"A full mailbox is temporary (4xx): the relay would still be retrying. The queue says "
                      f"{status.state}; read the first digit of the reply in the DSN.", ROUTE)
    if cause in ("mx-no-address", "no-such-domain", "all-mx-down"):
        return failed(f"DNS and the servers worked: the relay found example.net's MX and talked to {status.via}. "
                      "What did that server answer to RCPT TO? Ask it yourself, as the cell above does.", ROUTE)
    if cause == "backup-mx":
        return failed(f"That mx1 is down only sent the relay to {status.via}. That server did answer: what? The DSN "
                      "and your own session above show it.", ROUTE)
    return failed(f"Nothing reached {RULED}: the queue says {status.state}, and Alice has a DSN{dsn}. Read it.",
                  ROUTE)


# --- exercise 4: the photos (Carol's mailbox is full: retried, then bounced after 5 days) ---

def check_photos(lab: Any, cause: Any, reply: Any) -> Feedback:
    """Bob got the photos, Carol did not: her mailbox is full (452 4.2.2), retried until the queue gives up."""
    if is_blank(cause) and is_blank(reply):
        return unanswered("Set photos_cause to a key of nb07.CAUSES (for Carol's copy) and photos_reply to the "
                          f"reply code the server gave for {FULL_MAILBOX}.", PHOTOS)
    case = _case(lab, "photos")
    if isinstance(case, str):
        return failed(case, PHOTOS)
    _, item = case
    bob, carol = _status(item, "bob@example.net"), _status(item, FULL_MAILBOX)
    truth = _first_refusal(_relay_notes(lab, item.queue_id), FULL_MAILBOX, _server_reply(carol.last_reply))
    where = f"the conversation above: the line right after RCPT TO:<{FULL_MAILBOX}>"
    return combine([_photos_cause(cause, bob, carol, truth),
                    _check_reply(reply, truth, where, PHOTOS, "photos_reply")], PHOTOS)


def _photos_cause(value: Any, bob: RecipientStatus, carol: RecipientStatus, truth: str) -> Feedback:
    cause = _cause(value, PHOTOS, "photos_cause")
    if isinstance(cause, Feedback):
        return cause
    if cause == "mailbox-full":
        if carol.state == "delivered":
            later = (f"Once Carol had made room, a retry delivered her copy too ('{carol.last_reply}'): that is "
                     "why a 4xx is retried.")
        elif carol.state == "bounced":
            later = (f"The relay retried {carol.attempts} times and gave up after 5 days in the queue: "
                     f"'{carol.last_reply}', and Alice got a DSN.")
        else:
            later = (f"The relay keeps Carol's copy and retries ({carol.state}, {carol.attempts} attempts so far): "
                     "if Carol makes room, the next retry delivers it; if not, after 5 days in the queue the relay "
                     "gives up and Alice gets a DSN. Advance the clock below and see.")
        return passed(f"Right: in the same conversation {carol.via} accepted bob@example.net (his copy: "
                      f"'{bob.last_reply}') and answered RCPT TO:<{FULL_MAILBOX}> with '{truth}'. 4 = temporary, "
                      f"x.2.2 = mailbox full. {later}", PHOTOS)
    if cause == "policy-rejection":
        return failed(f"A rule refuses for good (5xx) and the message bounces at once. Is Carol's copy bounced? The "
                      f"queue says {carol.state} after {carol.attempts} attempt(s).", PHOTOS)
    if cause == "user-unknown":
        return failed(f"Does {FULL_MAILBOX} exist (lab.users)? An unknown user is refused for good, and the message "
                      f"bounces at once; the queue says {carol.state}.", PHOTOS)
    if cause in ("backup-mx", "all-mx-down"):
        return failed(f"mx1 was down for both recipients, and Bob's copy arrived through {bob.via}. What differs "
                      f"between them? Find the reply to RCPT TO:<{FULL_MAILBOX}> in the conversation above.", PHOTOS)
    if cause == "delivered":
        return failed(f"Bob's copy was delivered; is Carol's? The queue says {FULL_MAILBOX} is {carol.state}.",
                      PHOTOS)
    return failed(f"DNS worked: the same MX lookup brought Bob's copy to {bob.via}. What did that server answer "
                  f"for {FULL_MAILBOX}? The conversation above shows it.", PHOTOS)
