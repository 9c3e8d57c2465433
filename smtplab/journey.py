"""Who talked to whom: the participants of trace events, and one message's journey through the lab.

A message leaves a trail in several places: its submission and relay transactions are linked to it by
the SMTP servers, the relay's DNS lookups and queue changes carry its ids, an IMAP FETCH that returned
its headers carries its Message-ID, and a relay attempt that never got an answer is only a queue event.
`message_events` gathers all of that; `legs` condenses it to one line per connection, for the topology.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .trace import Trace, TraceEvent

__all__ = ["Leg", "message_events", "legs", "client_key", "participant_labels", "message_key"]

# What the relay writes in its queue events (relay.py); a change there only loses the extra detail.
CONNECTING = re.compile(r"^connecting to (?P<host>\S+) \[(?P<address>[^\]]*)\]:(?P<port>\d+) from (?P<source>\S+)")
CONNECT_FAILED = re.compile(r"^(?P<host>\S+) \[(?P<address>[^\]]*)\]:(?P<port>\d+): (?P<error>.+)$")
CANNOT_CONNECT = re.compile(r"^cannot connect to (?P<host>\S+): (?P<error>.+)$")
# IMAP commands that act on particular messages: kept in a message's view only when about that message.
_PER_MESSAGE = {"FETCH", "STORE", "COPY", "MOVE"}
_MAIL_FROM = re.compile(r"^mail from:", re.IGNORECASE)


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
    words = event.text.split()
    upper = [w.upper() for w in words]
    if event.protocol == "imap" and len(words) >= 3 and upper[1] == "LOGIN":
        return words[2].strip('"')
    if event.protocol == "smtp" and _MAIL_FROM.match(event.text):
        return event.text.split(":", 1)[1].strip().strip("<>").split(">")[0]
    encoded = ""
    if len(upper) >= 3 and upper[:2] == ["AUTH", "PLAIN"]:
        encoded = words[2]
    elif len(upper) >= 4 and upper[1:3] == ["AUTHENTICATE", "PLAIN"]:
        encoded = words[3]
    elif previous is not None and previous.direction == "C" and len(words) == 1 and \
            previous.text.upper().split()[-2:] in (["AUTH", "PLAIN"], ["AUTHENTICATE", "PLAIN"]):
        encoded = words[0]
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
            labels[key] = f"{next(iter(names))}'s client"
        else:
            labels[key] = f"mail client ({', '.join(names)})"
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

    `message` is a queue id, a Message-ID or a SendResult. Lab events (a host going down, the clock
    moving) that happened meanwhile are included too; `extra` events are added as given.
    """
    ids = _related_ids(trace, message_key(message))
    all_events = trace.events()
    chosen: dict[int, TraceEvent] = {}
    for key in ids:
        for event in trace.for_message(key):
            chosen[event.seq] = event
    by_conn: dict[str, list[TraceEvent]] = {}
    for event in all_events:
        if event.conn:
            by_conn.setdefault(event.conn, []).append(event)

    # A linked SMTP transaction ends at its reply to DATA; the rest of its connection (QUIT, close)
    # belongs to it too, unless another transaction follows.
    for conn in {e.conn for e in chosen.values() if e.protocol == "smtp" and e.conn}:
        last = max(e.seq for e in chosen.values() if e.conn == conn)
        for event in by_conn.get(conn, ()):
            if event.seq <= last:
                continue
            if event.direction == "C" and _MAIL_FROM.match(event.text):
                break
            chosen[event.seq] = event

    # Relay attempts that got no 250 are not linked by the MX: find them from the queue's "connecting to".
    claimed: set[str] = set()
    for event in sorted(chosen.values(), key=lambda e: e.seq):
        match = CONNECTING.match(event.text) if event.protocol == "queue" else None
        if not match:
            continue
        server = f"{match['address']}:{match['port']}"
        for candidate in all_events:
            if (candidate.seq > event.seq and candidate.kind == "connect" and candidate.protocol == "smtp"
                    and candidate.host == match["host"] and candidate.server == server
                    and candidate.client.startswith(match["source"] + ":") and candidate.conn not in claimed):
                claimed.add(candidate.conn)
                for attempt in by_conn[candidate.conn]:
                    chosen[attempt.seq] = attempt
                break

    # IMAP sessions that read it: the session around the exchanges about this message.
    bare = {i.strip("<>") for i in ids}
    readers = {e.conn for e in all_events if e.protocol == "imap" and _mentions(e, bare)}
    for conn in readers:
        for event in _session_about(by_conn[conn], bare):
            chosen[event.seq] = event

    if chosen:
        first, last = min(chosen), max(chosen)
        for event in all_events:
            if event.protocol == "lab" and first <= event.seq <= last:
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
        if event.direction == "C" and event.kind == "line" and not event.text.startswith("<literal"):
            close_exchange()
            words = event.text.split()
            tag = words[0] if words else ""
            upper = [w.upper() for w in words[1:3]]
            command = upper[1] if upper[:1] == ["UID"] and len(upper) > 1 else (upper[0] if upper else "")
            exchange.append(event)
        elif exchange:
            exchange.append(event)
            if event.direction == "S" and tag and event.text.startswith(tag + " "):
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
        elif event.protocol == "queue" and (CONNECT_FAILED.match(event.text) or CANNOT_CONNECT.match(event.text)):
            order.append((event.seq, event))
    for seq, item in sorted(order, key=lambda pair: pair[0]):
        if isinstance(item, TraceEvent):
            match = CONNECT_FAILED.match(item.text) or CANNOT_CONNECT.match(item.text)
            assert match is not None
            result.append(Leg(item.host, match["host"], "smtp", False, match["error"], seq))
            continue
        conn_events = conns[item]
        first = conn_events[0]
        source = client_key(first, lab)
        if first.protocol == "dns":
            answers = [e.text for e in conn_events if e.kind == "answer"]
            detail = answers[-1] if answers else "no answer"
            ok = detail.startswith("NOERROR")
            if blocklist_query(first.text, lab) and detail.startswith("NXDOMAIN"):
                ok, detail = True, "NXDOMAIN: not on the blocklist"  # RFC 5782: no record means not listed
            result.append(Leg(source, first.host, "dns", ok, detail, seq))
        elif first.protocol == "imap":
            fetched = [e.text for e in conn_events if e.direction == "S" and e.message_ids]
            replies = [e.text for e in conn_events if e.direction == "S"]
            detail = fetched[0] if fetched else replies[-1] if replies else "no reply"
            result.append(Leg(first.host, source, "imap", True, detail, seq))
        else:
            ok, detail = _smtp_outcome(conn_events)
            result.append(Leg(source, first.host, "smtp", ok, detail, seq))
    return result


def blocklist_query(query: str, lab: Any) -> bool:
    """Is this DNS question ("d.c.b.a.bl.lab. A? over udp") one to a blocklist the lab's providers use?"""
    scenario = getattr(lab, "scenario", None)
    name = query.split(" ", 1)[0].rstrip(".").lower()
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
        if event.direction == "C" and event.text == ".":
            after_dot = True
        elif event.direction == "S" and event.text[:3].isdigit():
            if after_dot:
                return event.text.startswith("2"), event.text
            if event.text[0] in "45":
                refusal = event.text
    faults = [e.text for e in events if e.kind in ("fault", "error")]
    return False, refusal or (faults[-1] if faults else "the connection ended before the message was sent")


def host_labels(lab: Any) -> Mapping[str, str]:
    """Return each lab host's address, for participant headers."""
    if lab is None:
        return {}
    labels = {name: host.address for name, host in lab.hosts.items()}
    dns = getattr(lab, "dns", None)
    if dns is not None:
        labels[dns.name] = dns.address
    return labels
