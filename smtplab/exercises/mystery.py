"""The capstone's mystery lab (notebook 07, "Bob never got the mail"): its scenario, its quiet faults, its morning.

`start_mystery_lab()` starts a lab, breaks it in a few independent ways without saying how, and sends
this morning's messages from alice@example.org (a copy of each is in her Sent folder). `reveal(lab)`
says how the lab was broken (the solution notebook shows it). The checks of the diagnoses are in `nb07`.
"""

from __future__ import annotations

import imaplib
import weakref
from collections.abc import Iterator, Mapping
from datetime import timedelta
from email import policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from typing import Any

from ..i18n import N_, _
from ..lab import Lab, start
from ..mail.queue import QueueItem, RecipientStatus
from ..net.client import SendResult
from ..scenario import Scenario
from ..trace.events import QueueChange

__all__ = ["CAUSES", "start_mystery_lab", "mystery_scenario", "reveal", "morning_results", "SUBJECTS", "ALICE",
           "SHOP_DOMAIN", "MISSING_MX", "SHOP_MX", "FULL_MAILBOX", "RULED", "FULL_REPLY", "RULE_REPLY"]

ALICE = "alice@example.org"
SHOP_DOMAIN = "bobsbikes.example"
MISSING_MX = f"mail.{SHOP_DOMAIN}"  # named by the MX record, but has no address
SHOP_MX = f"mx.{SHOP_DOMAIN}"  # the host that really runs SMTP for the shop
FULL_MAILBOX = "carol@example.net"
RULED = "riders@example.net"
FULL_REPLY = "452 4.2.2 Mailbox full"
RULE_REPLY = f"550 5.7.1 <{RULED}>: Recipient address rejected: only club members may post to this address"

# This morning's messages: key, minutes after 08:00 (lab time), recipients, subject, body. Alice writes in
# the learner's language (the subjects stay ASCII: the notebook reads them with the compat32 email parser).
_MORNING = (
    ("ride", 2, ("bob@example.net",), N_("Club ride: meeting point"),
     N_("Hi Bob,\n\nfor the club ride we meet at 9:00 at the fountain. Bring a spare tube!\n\nAlice\n")),
    ("payment", 17, (f"bob@{SHOP_DOMAIN}",), N_("Paid: invoice 2041 (new wheels)"),
     N_("Hello Bob's Bikes,\n\nI paid invoice 2041 by bank transfer this morning.\n"
        "Can I pick up the wheels on Friday?\n\nAlice\n")),
    ("photos", 41, ("bob@example.net", FULL_MAILBOX), N_("Photos from our last ride"),
     N_("Hi Bob, hi Carol,\n\nhere are the photos from our last ride (imagine them attached).\n\nAlice\n")),
    ("route", 65, (RULED,), N_("Route for the club ride (62 km)"),
     N_("Hello riders,\n\nthe route: river path to the old bridge, then up the hill. 62 km, 700 m climbing.\n\n"
        "Alice\n")),
)
SUBJECTS: dict[str, str] = {entry[0]: entry[3] for entry in _MORNING}
NOW_MINUTES = 90  # the story starts at 09:30 lab time

class _Causes(Mapping[str, str]):
    """The causes a learner chooses from, key -> description in the learner's language (read when shown)."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = texts

    def __getitem__(self, key: str) -> str:
        return _(self._texts[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)


# What can make a message arrive, wait or bounce. The learner picks one key per message.
CAUSES: Mapping[str, str] = _Causes({
    "delivered": N_("nothing went wrong: the message is in the recipient's mailbox"),
    "backup-mx": N_("the preferred MX was down, a backup MX took the message: nothing lost"),
    "all-mx-down": N_("every MX of the domain is down: the message waits in the queue"),
    "mx-no-address": N_("the domain's MX record names a host that has no address in DNS"),
    "no-such-domain": N_("the recipient's domain does not exist in DNS (NXDOMAIN)"),
    "user-unknown": N_("the recipient's address does not exist at its provider (5.1.1)"),
    "mailbox-full": N_("the recipient's mailbox is full: refused for now (4xx), retried until the queue gives up"),
    "policy-rejection": N_("the recipient's server refuses the message by a rule: a permanent refusal (5xx, 5.7.x)"),
})

_sent: weakref.WeakKeyDictionary[Lab, dict[str, SendResult]] = weakref.WeakKeyDictionary()


def morning_results(lab: Any) -> dict[str, SendResult] | None:
    """This morning's submissions in a lab from `start_mystery_lab()`, by key ("ride", ...); None for another lab."""
    return _sent.get(lab) if isinstance(lab, Lab) else None


# --- the scenario ---

def mystery_scenario() -> dict[str, Any]:
    """Return the lab of the capstone as plain data: the default lab plus Bob's shop and two more users.

    example.net gets carol and riders (the cycling club's address, which Bob reads); bobsbikes.example
    is Bob's shop, whose MX record names a host that does not exist.
    """
    scenario = Scenario.default().to_dict()
    scenario["description"] = "Bob never got the mail (smtplab capstone)"
    net = next(p for p in scenario["providers"] if p["domain"] == "example.net")
    net["users"] = {"bob@example.net": None, FULL_MAILBOX: None, RULED: None}
    scenario["providers"].append({
        "domain": SHOP_DOMAIN,
        "hosts": {SHOP_MX: ["smtp"], f"imap.{SHOP_DOMAIN}": ["imap"]},
        "mx": [[10, MISSING_MX]],
        "users": [f"bob@{SHOP_DOMAIN}"],
    })
    return scenario


def start_mystery_lab(lang: str | None = None) -> Lab:
    """Start the capstone lab: break it quietly, send this morning's messages, stop the clock at 09:30.

    Nothing is printed: finding out what is wrong is the exercise. `reveal(lab)` tells. `lang` is
    `smtplab.start`'s: the language of the explanations, and of Alice's messages.
    """
    lab = start(scenario=mystery_scenario(), lang=lang)
    now = lab.clock.datetime()
    morning = now.replace(hour=8, minute=0, second=0, microsecond=0)
    if morning < now:
        morning += timedelta(days=1)
    lab.clock.advance(morning - now)
    _break(lab)
    results: dict[str, SendResult] = {}
    imap = lab.imap(ALICE)
    try:
        imap.create("Sent")
        for key, minute, recipients, english_subject, english_body in _MORNING:
            subject, body = _(english_subject), _(english_body)
            target = morning + timedelta(minutes=minute)
            if target > lab.clock.datetime():
                lab.clock.advance(target - lab.clock.datetime())
            headers = {"Date": format_datetime(lab.clock.datetime()), "Message-ID": make_msgid(domain="example.org")}
            results[key] = lab.send(ALICE, list(recipients), subject, body, headers=headers)
            copy = _sent_copy(recipients, subject, body, headers)
            imap.append("Sent", r"(\Seen)", imaplib.Time2Internaldate(lab.clock.now()), copy)
    finally:
        imap.logout()
    lab.clock.advance(morning + timedelta(minutes=NOW_MINUTES) - lab.clock.datetime())
    _sent[lab] = results
    return lab


def _break(lab: Lab) -> None:
    lab.host("mx1").down()
    for name in ("mx1", "mx2"):  # the same policy on both MX hosts, as a provider would have
        lab.host(name).inject("RCPT", FULL_REPLY, recipient=FULL_MAILBOX)
        lab.host(name).inject("RCPT", RULE_REPLY, recipient=RULED)


def _sent_copy(recipients: tuple[str, ...], subject: str, body: str, headers: Mapping[str, str]) -> bytes:
    """The copy a mail client keeps in Sent (IMAP APPEND): the same headers and body it submitted."""
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    for name, value in headers.items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes(policy=policy.SMTP)


def reveal(lab: Lab) -> str:
    """Return how the lab was broken, from its live state: DNS records, hosts down, injected faults."""
    lines = [_("How this lab was broken before the story began:"), ""]
    n = 1
    for provider in lab.scenario.providers:
        for pref, exchange in provider.mx:
            if exchange != "." and exchange not in lab.hosts:
                smtp_hosts = [h.name for h in lab.hosts.values() if h.domain == provider.domain and "smtp" in h.ports]
                lines.append(_("{n}. DNS: {domain} publishes 'MX {preference} {exchange}', a name with no address. "
                               "Its mail server is {hosts}: the record should name it.").format(
                    n=n, domain=provider.domain, preference=pref, exchange=exchange, hosts=", ".join(smtp_hosts)))
                lines.append(f"   (scenario: \"mx\": [[{pref}, \"{exchange}\"]] for {provider.domain})")
                n += 1
    for host in lab.hosts.values():
        if not host.is_up:
            lines.append(f"{n}. lab.host(\"{host.name}\").down()   # " + _("harmless while another MX answers"))
            n += 1
    for host in lab.hosts.values():
        for fault in host.faults:
            lines.append(f"{n}. lab.host(\"{host.name}\").inject(\"{fault.stage}\", \"{fault.reply}\", "
                         f"recipient=\"{fault.recipient}\")")
            n += 1
    if n == 1:
        lines.append(_("nothing is broken any more (hosts up, no faults)."))
    lines += ["", _("A recipient fault answers whoever the sender is; a real list server would check the sender "
                    "against its members before refusing.")]
    return "\n".join(lines)


# --- the evidence the checks of nb07 read from this lab ---

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def status_of(item: QueueItem, address: str) -> RecipientStatus:
    return next(r for r in item.recipients if r.address == address)


def relay_notes(lab: Any, queue_id: str) -> list[Any]:
    """The relay's queue changes for one message (events: `.text` to quote, `.payload` to read)."""
    return [e for e in lab.trace.for_message(queue_id) if isinstance(e.payload, QueueChange)]


def refusal_of(notes: list[Any], host: str) -> str:
    """The relay's note of a connection to `host` that failed, to quote ('' if none)."""
    return next((n.text for n in notes if n.payload.state == "connect-failed" and n.payload.mx == host), "")


def first_refusal(notes: list[Any], address: str, fallback: str) -> str:
    """The reply that first deferred `address`, from the relay's notes (it may be delivered by now)."""
    for note in notes:
        if note.payload.state == "deferred" and address in note.payload.recipients:
            return str(note.payload.reply)
    return fallback


def server_reply(last_reply: str) -> str:
    """The reply as the server gave it, without the relay's '(gave up after ...)' note."""
    return last_reply.split(" (gave up after", 1)[0]


def copy_in(lab: Any, address: str, message_id: str) -> Message | None:
    try:
        mailbox = lab.messages(address)
    except Exception:  # a stopped lab has no mailboxes any more
        return None
    return next((m for m in mailbox if str(m.get("Message-ID", "")).strip() == message_id.strip()), None)


def dsn_diagnostic(lab: Any, message_id: str, recipient: str) -> str:
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
