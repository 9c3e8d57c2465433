"""Who talked to whom: the participants of trace events, and one message's journey through the lab.

A message's trail is correlated where the work was done (smtplab.trace.ring): its submission and relay
transactions, the DNS questions asked for it, the MX's side of every relay attempt and the queue's
changes all carry it; an IMAP FETCH that returned its headers carries its Message-ID. `message_events`
gathers that; `legs` condenses it to one line per connection, for the topology. Everything here reads
the events' typed payloads (smtplab.trace.events), never their prose.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..i18n import _
from ..trace.events import (
    ClientLine,
    DnsAnswer,
    DnsQuery,
    FaultFired,
    ImapCommand,
    ImapResponse,
    QueueChange,
    SmtpCommand,
    SmtpDataEnd,
    SmtpReply,
)
from ..trace.ring import Trace, TraceEvent

__all__ = ["Leg", "message_events", "legs", "client_key", "participant_labels", "message_key"]

# IMAP commands that act on particular messages: kept in a message's view only when about that message.
_PER_MESSAGE = {"FETCH", "STORE", "COPY", "MOVE", "UID FETCH", "UID STORE", "UID COPY", "UID MOVE"}


@dataclass(frozen=True)
class Leg:
    """One step of a message's path: a connection (or a failed attempt) from one participant to another."""

    source: str  # participant key (see client_key): a host name, "mua:<domain>" or "client"
    target: str
    protocol: str  # "smtp", "dns", "imap"
    ok: bool
    detail: str  # the reply that decided it, e.g. "250 2.0.0 OK: queued as 4F2A", or the error
    seq: int


def message_key(message: Any) -> str:
    """Return the id to look a message up by: a string as given, or a SendResult's/QueueItem's id."""
    if isinstance(message, str):
        return message.strip()
    for attribute in ("message_id", "queue_id"):
        value = getattr(message, attribute, "")
        if value:
            return str(value).strip()
    raise TypeError(f"expected a queue id, a Message-ID or a SendResult, got {message!r}")


def _domain_of(host: str, lab: Any = None) -> str:
    if lab is not None and host in getattr(lab, "hosts", {}):
        return str(lab.hosts[host].domain)
    return host.split(".", 1)[1] if "." in host else host


def client_key(event: TraceEvent, lab: Any = None) -> str:
    """Return the participant that is the client side of `event`'s connection.

    Lab hosts are themselves. The learner's own programs all look like "client" to the servers; a
    mail client that submits or reads mail at a provider belongs to that provider's user
    ("mua:example.net"), anything else (a raw session with an MX, a dig) is plain "client".
    """
    if event.peer and event.peer != "client":
        return event.peer
    if event.port_name in ("submission", "imap"):
        return f"mua:{_domain_of(event.host, lab)}"
    return "client"


def _login_of(event: TraceEvent, previous: TraceEvent | None) -> str:
    """Return the user name a client line logs in as (IMAP LOGIN, AUTH PLAIN, MAIL FROM), or ''."""
    if event.direction != "C" or event.kind != "line":
        return ""
    payload = event.payload
    encoded = ""
    if isinstance(payload, ImapCommand):
        words = payload.arguments.split()
        if payload.command == "LOGIN" and words:
            return words[0].strip('"')
        if payload.command == "AUTHENTICATE" and len(words) >= 2 and words[0].upper() == "PLAIN":
            encoded = words[1]
    elif isinstance(payload, SmtpCommand):
        if payload.verb == "MAIL" and payload.argument[:5].upper() == "FROM:":
            return payload.argument[5:].strip().strip("<>").split(">")[0]
        words = payload.argument.split()
        if payload.verb == "AUTH" and len(words) >= 2 and words[0].upper() == "PLAIN":
            encoded = words[1]
    if isinstance(payload, ClientLine) or (event.protocol == "imap" and isinstance(payload, ImapCommand)
                                           and not payload.command):
        before = previous.payload if previous is not None else None
        asked = (isinstance(before, SmtpCommand) and before.verb == "AUTH"
                 and before.argument.upper().split() == ["PLAIN"]) or \
                (isinstance(before, ImapCommand) and before.command == "AUTHENTICATE"
                 and before.arguments.upper().split() == ["PLAIN"])
        if asked:
            encoded = event.text.strip()
    if encoded:
        try:
            parts = base64.b64decode(encoded, validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            return ""
        if len(parts) == 3:
            return parts[1].decode("utf-8", "replace")
    return ""


def participant_labels(events: Iterable[TraceEvent], lab: Any = None) -> dict[str, str]:
    """Name the mail-client participants after the users they act for ("alice's client")."""
    users: dict[str, dict[str, None]] = {}
    previous: dict[str, TraceEvent] = {}
    for event in events:
        key = client_key(event, lab)
        if key.startswith("mua:"):
            login = _login_of(event, previous.get(event.conn))
            if login and "@" in login:
                users.setdefault(key, {})[login.split("@", 1)[0]] = None
            elif login:
                users.setdefault(key, {})[login] = None
        if event.conn:
            previous[event.conn] = event
    labels: dict[str, str] = {}
    for key, names in users.items():
        if len(names) == 1:
            labels[key] = _("{user}'s client").format(user=next(iter(names)))
        else:
            labels[key] = _("mail client ({users})").format(users=", ".join(names))
    return labels


def _related_ids(trace: Trace, key: str) -> set[str]:
    """The queue id and Message-ID of a message, from either one (the queue events carry both)."""
    ids = {key, key.strip("<>")}
    for event in trace.for_message(key):
        if event.protocol == "queue":
            ids.update(event.message_ids)
            ids.update(i.strip("<>") for i in event.message_ids)
    return {i for i in ids if i}


def message_events(trace: Trace, message: Any, extra: Iterable[TraceEvent] = ()) -> list[TraceEvent]:
    """Return every event of one message, end to end: submission, DNS, relay attempts, IMAP reads.

    `message` is a queue id, a Message-ID or a SendResult. The events are those done for the message
    (`Trace.for_message` of its queue ids and Message-ID), the IMAP exchanges about it, and the lab's own
    changes (a host going down, the clock moving) meanwhile; `extra` events are added as given.
    """
    ids = _related_ids(trace, message_key(message))
    chosen: dict[int, TraceEvent] = {}
    for key in ids:
        for event in trace.for_message(key):
            chosen[event.seq] = event
    all_events = trace.events()
    by_conn: dict[str, list[TraceEvent]] = {}
    for event in all_events:
        if event.protocol == "imap" and event.conn:
            by_conn.setdefault(event.conn, []).append(event)

    # IMAP sessions that read it: the session around the exchanges about this message.
    bare = {i.strip("<>") for i in ids}
    readers = {e.conn for e in all_events if e.protocol == "imap" and _mentions(e, bare)}
    for conn in readers:
        for event in _session_about(by_conn[conn], bare):
            chosen[event.seq] = event

    if chosen:
        # The lab's own changes meanwhile that concern this message's path: the clock, its hosts.
        first, last = min(chosen), max(chosen)
        hosts = {e.host for e in chosen.values()} | {"clock"}
        hosts |= {e.payload.mx for e in chosen.values() if isinstance(e.payload, QueueChange) and e.payload.mx}
        for event in all_events:
            if event.protocol == "lab" and first <= event.seq <= last and event.host in hosts:
                chosen[event.seq] = event
    for event in extra:
        chosen[event.seq] = event
    return [chosen[seq] for seq in sorted(chosen)]


def _mentions(event: TraceEvent, bare_ids: set[str]) -> bool:
    if any(i.strip("<>") in bare_ids for i in event.message_ids):
        return True
    return any(len(i) > 8 and i in event.text for i in bare_ids)


def _session_about(events: list[TraceEvent], bare_ids: set[str]) -> list[TraceEvent]:
    """Keep an IMAP session except the per-message exchanges (FETCH, STORE...) about other messages."""
    kept: list[TraceEvent] = []
    exchange: list[TraceEvent] = []
    tag = command = ""

    def close_exchange() -> None:
        if exchange and (command not in _PER_MESSAGE or any(_mentions(e, bare_ids) for e in exchange)):
            kept.extend(exchange)
        exchange.clear()

    for event in events:
        payload = event.payload
        if event.direction == "C" and event.kind == "line" and isinstance(payload, ImapCommand) \
                and not event.text.startswith("<literal"):
            close_exchange()
            tag, command = payload.tag, payload.command
            exchange.append(event)
        elif exchange:
            exchange.append(event)
            if isinstance(payload, ImapResponse) and tag and payload.tag == tag:
                close_exchange()
                tag = command = ""
        else:
            kept.append(event)
    close_exchange()
    return kept


def legs(events: Iterable[TraceEvent], lab: Any = None) -> list[Leg]:
    """Condense events to one Leg per connection or failed attempt, in the order they started."""
    result: list[Leg] = []
    conns: dict[str, list[TraceEvent]] = {}
    order: list[tuple[int, str | TraceEvent]] = []
    for event in events:
        if event.protocol in ("smtp", "imap", "dns") and event.conn:
            if event.conn not in conns:
                order.append((event.seq, event.conn))
            conns.setdefault(event.conn, []).append(event)
        elif isinstance(event.payload, QueueChange) and event.payload.state == "connect-failed":
            order.append((event.seq, event))
    for seq, item in sorted(order, key=lambda pair: pair[0]):
        if isinstance(item, TraceEvent):
            failed = item.payload
            assert isinstance(failed, QueueChange)
            result.append(Leg(item.host, failed.mx, "smtp", False, failed.reply, seq))
            continue
        conn_events = conns[item]
        first = conn_events[0]
        source = client_key(first, lab)
        if first.protocol == "dns":
            answers = [e for e in conn_events if isinstance(e.payload, DnsAnswer)]
            detail = answers[-1].shown if answers else _("no answer")
            rcode = answers[-1].payload.rcode if answers else ""  # type: ignore[attr-defined]
            ok = rcode == "NOERROR"
            question = first.payload
            if isinstance(question, DnsQuery) and blocklist_query(question.qname, lab) and rcode == "NXDOMAIN":
                ok, detail = True, _("NXDOMAIN: not on the blocklist")  # RFC 5782: no record means not listed
            result.append(Leg(source, first.host, "dns", ok, detail, seq))
        elif first.protocol == "imap":
            fetched = [e.text for e in conn_events if e.direction == "S" and e.message_ids]
            replies = [e.text for e in conn_events if e.direction == "S"]
            detail = fetched[0] if fetched else replies[-1] if replies else _("no reply")
            result.append(Leg(first.host, source, "imap", True, detail, seq))
        else:
            ok, detail = _smtp_outcome(conn_events)
            result.append(Leg(source, first.host, "smtp", ok, detail, seq))
    return result


def blocklist_query(qname: str, lab: Any) -> bool:
    """Is a DNS question about `qname` ("d.c.b.a.bl.lab.") one to a blocklist the lab's providers use?"""
    scenario = getattr(lab, "scenario", None)
    name = qname.rstrip(".").lower()
    for provider in getattr(scenario, "providers", ()):
        for zone in provider.security.get("dnsbl") or ():
            if name.endswith("." + zone.rstrip(".").lower()):
                return True
    return False


def _smtp_outcome(events: list[TraceEvent]) -> tuple[bool, str]:
    """Did this SMTP connection hand a message over? The reply to the end of DATA decides."""
    after_dot = False
    refusal = ""
    for event in events:
        payload = event.payload
        if isinstance(payload, SmtpDataEnd):
            after_dot = True
        elif event.direction == "S" and isinstance(payload, SmtpReply):
            if after_dot:
                return 200 <= payload.code < 300, event.text
            if payload.code >= 400:
                refusal = event.text
    faults = [e.shown for e in events if isinstance(e.payload, FaultFired) or e.kind == "error"]
    return False, refusal or (faults[-1] if faults else _("the connection ended before the message was sent"))


def host_labels(lab: Any) -> Mapping[str, str]:
    """Return each lab host's address, for participant headers."""
    if lab is None:
        return {}
    labels = {name: host.address for name, host in lab.hosts.items()}
    dns = getattr(lab, "dns", None)
    if dns is not None:
        labels[dns.name] = dns.address
    return labels
