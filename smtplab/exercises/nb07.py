"""Checks of notebook 07 (capstone), "Bob never got the mail": the learner's diagnosis of each message.

The lab with hidden faults comes from `mystery` (`start_mystery_lab()`, `reveal(lab)`, re-exported here
for the notebook). The learner diagnoses every message with the tools of notebooks 01-04; each check
compares the diagnosis with the evidence in the real lab (queue, DNS, replies, DSNs) and quotes that
evidence, never the diagnosis itself.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import SmtpLabError
from ..i18n import N_, _
from ..mail.hops import received_hops
from ..mail.queue import QueueItem, RecipientStatus
from ..net.client import SendResult
from ..net.replies import explain
from . import Feedback, combine, failed, first_answer, passed, unanswered
from ._answers import is_blank
from .mystery import (
    CAUSES,
    FULL_MAILBOX,
    MISSING_MX,
    RULED,
    SHOP_DOMAIN,
    SUBJECTS,
    copy_in,
    dsn_diagnostic,
    first_refusal,
    morning_results,
    mystery_scenario,
    refusal_of,
    relay_notes,
    reveal,
    server_reply,
    start_mystery_lab,
    status_of,
)

__all__ = ["CAUSES", "SUBJECTS", "start_mystery_lab", "mystery_scenario", "reveal", "check_ride",
           "check_payment", "check_route", "check_photos"]

# Exercise titles: the key under which an answer is committed, shown translated.
RIDE = N_("Exercise 1 · the club ride")
PAYMENT = N_("Exercise 2 · the payment note")
ROUTE = N_("Exercise 3 · the route for the club")
PHOTOS = N_("Exercise 4 · the photos")


# --- shared helpers ---

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _case(lab: Any, key: str) -> tuple[SendResult, QueueItem] | str:
    """Return this morning's message `key` and its queue entry, or why they cannot be found."""
    results = morning_results(lab)
    if results is None:
        return _("this check needs the lab of this notebook: lab = nb07.start_mystery_lab() (a lab from "
                 "smtplab.start() has no mystery in it).")
    result = results[key]
    try:
        return result, lab.queue_item(result.queue_id)
    except (KeyError, SmtpLabError):
        return _("the message {queue_id} is no longer in the queue; run the notebook again from the top.").format(
            queue_id=result.queue_id)








def _cause(value: Any, exercise: str, example: str) -> str | Feedback:
    """Normalise a cause answer, or return the Feedback for a blank or unknown one.

    The first well-formed cause checked for an exercise is the one judged (`first_answer`): eight causes
    tried in turn would otherwise find the diagnosis without any.
    """
    if is_blank(value):
        return unanswered(_("Choose the cause from nb07.CAUSES and write its key in {variable}.").format(
            variable=example), _(exercise))
    key = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    if key not in CAUSES:
        return failed(_("{answer!r} is not one of the causes. Choose one of: {keys}.").format(
            answer=value, keys=", ".join(CAUSES)), _(exercise))
    return str(first_answer(f"{exercise} (cause)", key))


def _host(lab: Any, value: Any, exercise: str, example: str) -> str | Feedback:
    if is_blank(value):
        return unanswered(_("Write a host name, e.g. {variable} = \"smtp.example.org\".").format(variable=example),
                          _(exercise))
    if not isinstance(value, str):
        return failed(_("Give a host name as a string, like \"smtp.example.org\" (you gave {answer!r}).").format(
            answer=value), _(exercise))
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






def _check_reply(value: Any, truth: str, where: str, exercise: str, example: str) -> Feedback:
    """Compare a reply code answer ('452', '452 4.2.2', '4.2.2') with the real reply `truth`.

    A wrong code is told where the reply is written down (`where`), never the reply itself.
    """
    title = _(exercise)
    if is_blank(value):
        return unanswered(_("Write the reply code the server gave in {variable}.").format(variable=example), title)
    given_basic, given_enhanced = _codes(str(value))
    basic, enhanced = _codes(truth)
    if not given_basic and not given_enhanced:
        return failed(_("Give a reply code, like \"550\" or \"550 5.7.1\" (you gave {answer!r}).").format(
            answer=value), title)
    if (given_basic in ("", basic)) and (given_enhanced in ("", enhanced)):
        return passed(_("And {code} {enhanced} is the reply: {meaning}.").format(
            code=basic, enhanced=enhanced, meaning=explain(int(basic), enhanced)), title)
    if given_basic == basic:
        return failed(_("The three-digit code is right, but not the enhanced status code {enhanced}. Read the "
                        "whole reply in {where}.").format(enhanced=given_enhanced, where=where), title)
    return failed(_("{answer} is not what this recipient's server answered. Read its reply in {where}, and take "
                    "the line that answers this recipient's RCPT TO, not another one's.").format(
        answer=value, where=where), title)






# --- exercise 1: the club ride (delivered through the backup MX) ---

def check_ride(lab: Any, cause: Any, delivered_by: Any) -> Feedback:
    """The ride message reached Bob through mx2 while mx1 was down: a red herring."""
    if is_blank(cause) and is_blank(delivered_by):
        return unanswered(_("Set ride_cause to a key of nb07.CAUSES and ride_delivered_by to the host that put "
                            "the message into Bob's mailbox."), _(RIDE))
    case = _case(lab, "ride")
    if isinstance(case, str):
        return failed(case, _(RIDE))
    result, item = case
    status = status_of(item, "bob@example.net")
    notes = relay_notes(lab, item.queue_id)
    refused = refusal_of(notes, "mx1.example.net") or _("mx1.example.net was not tried")
    copy = copy_in(lab, status.address, result.message_id)
    top = _one_line((copy.get_all("Received") or [""])[0]) if copy is not None and copy.get_all("Received") else ""
    by = received_hops(copy)[-1].by if copy is not None and top else status.via
    where = (_("the topmost Received header of Bob's copy: '{header}'").format(header=top) if top
             else _("the queue: delivered by {host}").format(host=status.via))
    return combine([_ride_cause(cause, status, refused), _ride_host(lab, delivered_by, by, refused, where)],
                   _(RIDE))


def _ride_cause(value: Any, status: RecipientStatus, refused: str) -> Feedback:
    cause = _cause(value, RIDE, "ride_cause")
    if isinstance(cause, Feedback):
        return cause
    done = status.state == "delivered"
    if cause == "backup-mx" and done:
        return passed(_("Right: the preferred MX was down ('{refused}'), so the relay tried the next MX by "
                        "preference, {host}, which answered '{reply}'. Nothing was lost: Bob has the message. A "
                        "host that is down only delays mail while another MX answers; it is not why the other "
                        "messages went missing.").format(refused=refused, host=status.via, reply=status.last_reply),
                      _(RIDE))
    if cause == "delivered" and done:
        return failed(_("Bob has the message, true. But was every step on the way a success? Read the relay's notes "
                        "for it, line by line."), _(RIDE))
    if cause == "all-mx-down":
        return failed(_("The queue says {address} is {state}. Could a message be {state} if every MX were "
                        "down?").format(address=status.address, state=status.state), _(RIDE))
    return failed(_("That does not fit the evidence ({cause}): the queue says {address} is {state}. Read the "
                    "relay's notes for this message: what went wrong on the way, and what happened next?").format(
        cause=CAUSES[cause], address=status.address, state=status.state), _(RIDE))


def _ride_host(lab: Any, value: Any, truth: str, refused: str, where: str) -> Feedback:
    name = _host(lab, value, RIDE, "ride_delivered_by")
    if isinstance(name, Feedback):
        return name
    if name == truth:
        return passed(_("And {host} stored it in Bob's Maildir: {where}.").format(host=truth, where=where), _(RIDE))
    if name == "mx1.example.net":
        why = _("mx1.example.net is the preferred MX (lowest preference); what did the relay note when it tried it?")
    elif name == "smtp.example.org":
        why = _("smtp.example.org is Alice's outgoing server: it relayed the message but has no mailbox for Bob.")
    elif name.startswith("imap."):
        why = _("{host} lets Bob read his mailbox over IMAP; mail arrives over SMTP at an MX of example.net.").format(
            host=name)
    elif name not in lab.hosts:
        why = _("{answer!r} is not a host of this lab (lab.hosts lists them).").format(answer=value)
    else:
        why = _("{host} did not write a Received header into Bob's copy.").format(host=name)
    return failed(why + " " + _("The topmost Received header of Bob's copy names the host that stored it."), _(RIDE))


# --- exercise 2: the payment note (the MX names a host without an address) ---

def check_payment(lab: Any, cause: Any, mx_name: Any) -> Feedback:
    """The payment note waits in the queue: bobsbikes.example's MX names a host that has no address."""
    if is_blank(cause) and is_blank(mx_name):
        return unanswered(_("Set payment_cause to a key of nb07.CAUSES and payment_mx to the host name the MX "
                            "record of {domain} gives.").format(domain=SHOP_DOMAIN), _(PAYMENT))
    case = _case(lab, "payment")
    if isinstance(case, str):
        return failed(case, _(PAYMENT))
    _result, item = case
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
    if addresses:
        dns = _("lab.lookup_mx('{domain}') gives MX {preference} {exchange} with addresses {addresses}, and dig "
                "{exchange} A answers {rcode}")
    else:
        dns = _("lab.lookup_mx('{domain}') gives MX {preference} {exchange} with no address, and dig {exchange} A "
                "answers {rcode}")
    dns = dns.format(domain=SHOP_DOMAIN, preference=pref, exchange=exchange, addresses=", ".join(addresses),
                     rcode=rcode)
    queue = _("the queue says {address} is {state} after {attempts} attempts: '{reply}'").format(
        address=status.address, state=status.state, attempts=status.attempts, reply=status.last_reply)
    return combine([_payment_cause(cause, status, real, dns, queue),
                    _payment_mx(lab, mx_name, exchange, real)], _(PAYMENT))


def _payment_cause(value: Any, status: RecipientStatus, real: list[str], dns: str, queue: str) -> Feedback:
    cause = _cause(value, PAYMENT, "payment_cause")
    if isinstance(cause, Feedback):
        return cause
    if cause == "mx-no-address":
        later = (_("It keeps the message and retries.") if status.state == "deferred"
                 else _("It retried for 5 days, then gave up and sent Alice a DSN."))
        return passed(_("Right: {dns}. The relay can only connect to an address, not to a name, so it never "
                        "reached any server: {queue}.").format(dns=dns, queue=queue) + " " + later + " "
                      + _("The host that really receives mail for {domain} is {hosts}: the MX record should name "
                          "it.").format(domain=SHOP_DOMAIN, hosts=", ".join(real)), _(PAYMENT))
    if cause == "no-such-domain":
        return failed(_("Does {domain} exist? Ask the lab DNS for its MX records, then follow the answer one "
                        "step further: the relay needs an address to connect to.").format(domain=SHOP_DOMAIN),
                      _(PAYMENT))
    if cause == "all-mx-down":
        return failed(_("Was any {domain} server asked at all? Look for an SMTP connection to one in this "
                        "message's trace, and read the relay's last note: who wrote it, and about what?").format(
            domain=SHOP_DOMAIN), _(PAYMENT))
    if cause in ("user-unknown", "mailbox-full", "policy-rejection"):
        return failed(_("That would be an answer from {domain}'s mail server. Did the relay ever reach one? "
                        "Look for an SMTP connection to a host of that domain in this message's trace.").format(
            domain=SHOP_DOMAIN), _(PAYMENT))
    return failed(_("The message was not delivered: the queue says {address} is {state}. What is the relay "
                    "waiting for? Its notes and the DNS questions it asks tell.").format(
        address=status.address, state=status.state), _(PAYMENT))


def _payment_mx(lab: Any, value: Any, exchange: str, real: list[str]) -> Feedback:
    name = _host(lab, value, PAYMENT, "payment_mx")
    if isinstance(name, Feedback):
        return name
    if name == exchange:
        return passed(_("And {exchange} is indeed the name the MX record gives.").format(exchange=exchange),
                      _(PAYMENT))
    if name in real:
        return failed(_("{host} is a host that runs SMTP for {domain} (see lab.hosts). Is it the name the MX "
                        "record gives? Ask: lab.lookup_mx('{domain}').").format(host=name, domain=SHOP_DOMAIN),
                      _(PAYMENT))
    return failed(_("{answer} is not what the MX record of {domain} says: ask lab.lookup_mx('{domain}').").format(
        answer=value, domain=SHOP_DOMAIN), _(PAYMENT))


# --- exercise 3: the route for the club (a rule refuses it: bounced at once) ---

def check_route(lab: Any, cause: Any, reply: Any) -> Feedback:
    """The route bounced at once: riders@example.net's server refuses it by a rule (550 5.7.1)."""
    if is_blank(cause) and is_blank(reply):
        return unanswered(_("Set route_cause to a key of nb07.CAUSES and route_reply to the reply code the "
                            "server gave for {address}.").format(address=RULED), _(ROUTE))
    case = _case(lab, "route")
    if isinstance(case, str):
        return failed(case, _(ROUTE))
    result, item = case
    status = status_of(item, RULED)
    truth = server_reply(status.last_reply)
    diagnostic = dsn_diagnostic(lab, result.message_id, RULED)
    dsn = " " + _("(it is in her INBOX: 'Undelivered Mail Returned to Sender')") if diagnostic else ""
    where = _("the DSN in Alice's INBOX (its Diagnostic-Code) or your own session above")
    return combine([_route_cause(cause, status, truth, dsn),
                    _check_reply(reply, truth, where, ROUTE, "route_reply")], _(ROUTE))


def _route_cause(value: Any, status: RecipientStatus, truth: str, dsn: str) -> Feedback:
    cause = _cause(value, ROUTE, "route_cause")
    if isinstance(cause, Feedback):
        return cause
    if cause == "policy-rejection":
        return passed(_("Right: {host} refused the recipient with '{reply}'. 5 = permanent, x.7.1 = delivery not "
                        "authorized (RFC 3463): a rule of the receiving server, not an unknown user (5.1.1) nor a "
                        "full mailbox (4.2.2, temporary). So the relay did not retry: it bounced the message after "
                        "{attempts} attempt and sent Alice a DSN{dsn}. Sending the same message again is no use: the "
                        "club must let her post, or she writes to Bob directly.").format(
            host=status.via, reply=truth, attempts=status.attempts, dsn=dsn), _(ROUTE))
    if cause == "user-unknown":
        return failed(_("Does {address} exist (lab.users)? And what does the enhanced code in the DSN's "
                        "Diagnostic-Code say? smtplab.explain(code, enhanced) compares it with an unknown user's "
                        "5.1.1.").format(address=RULED), _(ROUTE))
    if cause == "mailbox-full":
        return failed(_("A full mailbox is temporary (4xx): the relay would still be retrying. The queue says "
                        "{state}; read the first digit of the reply in the DSN.").format(state=status.state),
                      _(ROUTE))
    if cause in ("mx-no-address", "no-such-domain", "all-mx-down"):
        return failed(_("DNS and the servers worked: the relay found example.net's MX and talked to {host}. "
                        "What did that server answer to RCPT TO? Ask it yourself, as the cell above does.").format(
            host=status.via), _(ROUTE))
    if cause == "backup-mx":
        return failed(_("That mx1 is down only sent the relay to {host}. That server did answer: what? The DSN "
                        "and your own session above show it.").format(host=status.via), _(ROUTE))
    return failed(_("Nothing reached {address}: the queue says {state}, and Alice has a DSN{dsn}. Read it.").format(
        address=RULED, state=status.state, dsn=dsn), _(ROUTE))


# --- exercise 4: the photos (Carol's mailbox is full: retried, then bounced after 5 days) ---

def check_photos(lab: Any, cause: Any, reply: Any) -> Feedback:
    """Bob got the photos, Carol did not: her mailbox is full (452 4.2.2), retried until the queue gives up."""
    if is_blank(cause) and is_blank(reply):
        return unanswered(_("Set photos_cause to a key of nb07.CAUSES (for Carol's copy) and photos_reply to the "
                            "reply code the server gave for {address}.").format(address=FULL_MAILBOX), _(PHOTOS))
    case = _case(lab, "photos")
    if isinstance(case, str):
        return failed(case, _(PHOTOS))
    _result, item = case
    bob, carol = status_of(item, "bob@example.net"), status_of(item, FULL_MAILBOX)
    truth = first_refusal(relay_notes(lab, item.queue_id), FULL_MAILBOX, server_reply(carol.last_reply))
    where = _("the conversation above: the line right after RCPT TO:<{address}>").format(address=FULL_MAILBOX)
    return combine([_photos_cause(cause, bob, carol, truth),
                    _check_reply(reply, truth, where, PHOTOS, "photos_reply")], _(PHOTOS))


def _photos_cause(value: Any, bob: RecipientStatus, carol: RecipientStatus, truth: str) -> Feedback:
    cause = _cause(value, PHOTOS, "photos_cause")
    if isinstance(cause, Feedback):
        return cause
    if cause == "mailbox-full":
        if carol.state == "delivered":
            later = _("Once Carol had made room, a retry delivered her copy too ('{reply}'): that is why a 4xx is "
                      "retried.").format(reply=carol.last_reply)
        elif carol.state == "bounced":
            later = _("The relay retried {attempts} times and gave up after 5 days in the queue: '{reply}', and "
                      "Alice got a DSN.").format(attempts=carol.attempts, reply=carol.last_reply)
        else:
            later = _("The relay keeps Carol's copy and retries ({state}, {attempts} attempts so far): if Carol makes "
                      "room, the next retry delivers it; if not, after 5 days in the queue the relay gives up and "
                      "Alice gets a DSN. Advance the clock below and see.").format(state=carol.state,
                                                                                  attempts=carol.attempts)
        return passed(_("Right: in the same conversation {host} accepted bob@example.net (his copy: '{bob_reply}') "
                        "and answered RCPT TO:<{address}> with '{reply}'. 4 = temporary, x.2.2 = mailbox "
                        "full.").format(host=carol.via, bob_reply=bob.last_reply, address=FULL_MAILBOX, reply=truth)
                      + " " + later, _(PHOTOS))
    if cause == "policy-rejection":
        return failed(_("A rule refuses for good (5xx) and the message bounces at once. Is Carol's copy bounced? The "
                        "queue says {state} after {attempts} attempt(s).").format(state=carol.state,
                                                                                  attempts=carol.attempts),
                      _(PHOTOS))
    if cause == "user-unknown":
        return failed(_("Does {address} exist (lab.users)? An unknown user is refused for good, and the message "
                        "bounces at once; the queue says {state}.").format(address=FULL_MAILBOX, state=carol.state),
                      _(PHOTOS))
    if cause in ("backup-mx", "all-mx-down"):
        return failed(_("mx1 was down for both recipients, and Bob's copy arrived through {host}. What differs "
                        "between them? Find the reply to RCPT TO:<{address}> in the conversation above.").format(
            host=bob.via, address=FULL_MAILBOX), _(PHOTOS))
    if cause == "delivered":
        return failed(_("Bob's copy was delivered; is Carol's? The queue says {address} is {state}.").format(
            address=FULL_MAILBOX, state=carol.state), _(PHOTOS))
    return failed(_("DNS worked: the same MX lookup brought Bob's copy to {host}. What did that server answer "
                    "for {address}? The conversation above shows it.").format(host=bob.via, address=FULL_MAILBOX),
                  _(PHOTOS))
