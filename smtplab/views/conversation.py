"""What a ladder diagram shows: the lifelines and the rows, condensed from trace events.

Each protocol line becomes an arrow from the side that sent it; a reply of many lines (an EHLO
answer, an IMAP SELECT) becomes one arrow whose label keeps what matters (extensions announced,
EXISTS, FETCH, the tagged result). A DATA body collapses to its size. The relay's "connecting to ..."
becomes the connection that follows, or a failed attempt; other queue changes, injected faults and
lab changes become notes; the lab clock moving is a break across the whole diagram. Every decision
here reads the events' typed payloads (smtplab.trace.events), never their prose.

Compact (the notebooks' default) folds what is rarely the lesson: a STARTTLS exchange and its handshake
become one row ("STARTTLS → 220 → TLSv1.3 handshake"), an EHLO answer one line ("250-smtp.example.org",
"… 8 extensions"); the full ladder keeps every line.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..i18n import _, ngettext
from ..scenario import WELL_KNOWN_PORTS
from ..trace.events import (
    DnsAnswer,
    DnsQuery,
    ImapCommand,
    ImapResponse,
    LabChange,
    Note,
    PolicyVerdict,
    Pop3Command,
    Pop3Response,
    QueueChange,
    SmtpCommand,
    SmtpDataEnd,
    SmtpReply,
    TlsStarted,
)
from ..trace.ring import TraceEvent
from .journey import blocklist_query, client_key, host_labels, participant_labels

__all__ = ["Participant", "Step", "steps"]

_CAPABILITIES = re.compile(r"(\[?)CAPABILITY ((?:[^ \]]+ ?)+)")  # RFC 9051 §7.2.2, also as a response code
MAX_LINE = 56  # characters of one arrow label line
NOTE_WIDTH = 34


@dataclass(frozen=True)
class Participant:
    """A lifeline: a lab host, the lab DNS, or a mail client."""

    key: str
    name: str
    detail: str = ""
    role: str = "server"  # "client", "server" or "dns"


@dataclass(frozen=True)
class Step:
    """One row of the ladder."""

    kind: str  # "arrow", "failed", "closed", "tls", "note" or "break"
    source: str  # participant key: the arrow's sender, or the note's lifeline
    target: str = ""  # the arrow's receiver
    lines: tuple[str, ...] = ()
    tone: str = "command"
    encrypted: bool = False
    seq: int = 0
    folded: int = 0  # trace lines this row stands for beyond one (compact mode)


def _short(text: str, width: int = MAX_LINE) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _pack(items: list[str], width: int) -> list[str]:
    """Join items with ' · ' into lines of at most `width` characters."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= width:
            lines[-1] += " · " + item
        else:
            lines.append(_short(item, width))
    return lines


def _reply_lines(protocol: str, events: list[TraceEvent], compact: bool = False) -> tuple[tuple[str, ...], str]:
    """Condense one server reply (maybe many lines) to a label, and pick its tone."""
    texts = [e.text for e in events]
    last_payload = events[-1].payload
    if protocol == "smtp":
        code = last_payload.code if isinstance(last_payload, SmtpReply) else 0
        tone = str(code // 100) if 200 <= code < 600 else "command"
        if len(texts) == 1:
            return (_short(texts[0]),), tone
        if compact:  # an EHLO answer: its greeting, and how many extensions the lines after it announce
            count = len(texts) - 1
            return (_short(texts[0]), ngettext("… {n} extension", "… {n} extensions", count).format(n=count)), tone
        # A multiline reply (EHLO): the greeting line, then the extensions it announces.
        return (_short(texts[0]), *_pack([t[4:] for t in texts[1:]], 44)), tone
    if protocol == "pop3":  # "+OK" or "-ERR" (RFC 1939 section 3), maybe lines up to a lone "."
        first = events[0].payload
        tone = ("2" if first.ok else "5") if isinstance(first, Pop3Response) else "command"
        if len(texts) <= 4:
            return tuple(_short(t) for t in texts), tone
        more = len(texts) - 3
        return (_short(texts[0]), _short(texts[1]), ngettext("… {n} more line", "… {n} more lines", more).format(n=more),
                "."), tone
    if compact:  # a capability list is rarely the lesson: how many, not which (the full ladder lists them)
        texts = [_CAPABILITIES.sub(lambda m: m[1] + _("CAPABILITY … {n} listed").format(n=len(m[2].split())), t)
                 for t in texts]
    last = texts[-1]
    if isinstance(last_payload, ImapResponse) and last_payload.tag == "+":
        tone = "3"
    else:
        status = last_payload.status if isinstance(last_payload, ImapResponse) else ""
        tone = {"OK": "2", "NO": "4", "BAD": "5", "BYE": "4", "PREAUTH": "2"}.get(status, "command")
    if len(texts) <= 3:
        return tuple(_short(t) for t in texts), tone
    keep = [t for t in texts[:-1] if any(w in t.upper() for w in (" EXISTS", " FETCH", "SEARCH", "LIST ", "BYE"))][:3]
    hidden = len(texts) - 1 - len(keep)
    lines = [_short(t) for t in keep] + ([ngettext("… {n} more line", "… {n} more lines", hidden).format(n=hidden)]
                                         if hidden else [])
    return (*lines, _short(last)), tone


def _reply_word(event: TraceEvent) -> str:
    """A reply in one word, for a folded row: its code ("220"), IMAP status ("OK") or POP3 "+OK"."""
    payload = event.payload
    if isinstance(payload, SmtpReply):
        return str(payload.code)
    if isinstance(payload, ImapResponse):
        return payload.status or "*"
    if isinstance(payload, Pop3Response):
        return "+OK" if payload.ok else "-ERR"
    return _short(event.text, 12)


def _dns_answer(answer: DnsAnswer) -> tuple[tuple[str, ...], str]:
    head, records = answer.rcode, list(answer.records)
    if not records and answer.authority_soa:
        records = [_("(no answer; SOA in authority)")]
    if answer.truncated:
        records.append(_("(truncated)"))
    tone = "dns" if head == "NOERROR" else "5" if head in ("NXDOMAIN", "REFUSED") else "4"
    return (head, *[_short(r) for r in records[:6]], *(["…"] if len(records) > 6 else [])), tone


def _note(text: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(text, NOTE_WIDTH, break_long_words=True, break_on_hyphens=False)[:6])


def _is_warning(payload: object) -> bool:
    if isinstance(payload, PolicyVerdict):
        return payload.verdict in ("refused", "deferred", "junk", "listed")
    return isinstance(payload, Note) and payload.warning


class _Builder:
    """Walk the events once, collecting lifelines (in order of first appearance) and steps."""

    def __init__(self, events: list[TraceEvent], lab: Any, compact: bool = False) -> None:
        self.events = events
        self.lab = lab
        self.compact = compact
        self.names = participant_labels(events, lab)
        self.addresses = dict(host_labels(lab))  # a copy: a server seen in the trace adds its address
        self.order: dict[str, Participant] = {}
        self.late: dict[str, Participant] = {}  # only in notes: placed after the others
        self.steps: list[Step] = []
        self.queries: dict[str, str] = {}  # DNS connection -> the name it asked about
        self.skip: set[int] = set()  # seq of events already drawn in a folded row

    def participant(self, key: str, *, late: bool = False, role: str = "server") -> str:
        if key in self.order or (late and key in self.late):
            return key
        if key.startswith("mua:") or key == "client":
            domain = key[4:] if key.startswith("mua:") else ""
            name = self.names.get(key) or (_("mail client") if domain else _("client"))
            detail = _("users of {domain}").format(domain=domain) if domain and key not in self.names else ""
            item = Participant(key, name, detail, "client")
        else:
            item = Participant(key, key, self.addresses.get(key, ""), role)
        if late:
            self.late[key] = item
        else:
            self.late.pop(key, None)
            self.order[key] = item
        return key

    def pair(self, event: TraceEvent) -> tuple[str, str]:
        client, server = client_key(event, self.lab), event.host
        if event.server and not self.addresses.get(server):
            self.addresses[server] = event.server.rsplit(":", 1)[0]
        role = "dns" if event.protocol == "dns" else "server"
        if event.protocol in ("imap", "pop3"):  # the reader sits to the right of the mailbox server
            self.participant(server)
            self.participant(client)
        else:
            self.participant(client)
            self.participant(server, role=role)
        return client, server

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def build(self) -> tuple[list[Participant], list[Step]]:
        events, i = self.events, 0
        while i < len(events):
            event = events[i]
            i += 1
            if event.seq in self.skip:
                continue
            if event.protocol in ("smtp", "imap", "pop3", "dns"):
                i = self.conversation(event, i)
            elif event.protocol == "queue":
                self.queue(event, i)
            elif event.protocol == "lab":
                change = event.payload
                if isinstance(change, LabChange) and change.what == "clock":
                    self.add(Step("break", "", "", (_short(event.shown, 70),), "note", seq=event.seq))
                else:
                    tone = "fail" if isinstance(change, LabChange) and change.what in ("down", "fault") else "note"
                    self.add(Step("note", self.participant(event.host, late=True), "", _note(event.shown), tone,
                                  seq=event.seq))
        return list(self.order.values()) + list(self.late.values()), self.steps

    def conversation(self, event: TraceEvent, i: int) -> int:
        """Add the step for `event` (and the lines it groups with); return the next index."""
        if self.compact and event.kind == "query" and isinstance(event.payload, DnsQuery) and self._lookup(event, i):
            return i
        client, server = self.pair(event)
        kind, seq, tls = event.kind, event.seq, event.tls
        if kind == "connect":
            port = event.server.rsplit(":", 1)[-1]
            usual = WELL_KNOWN_PORTS.get(event.port_name)
            if usual:
                label = _("connect to port {port} ({service}, {usual} on the internet)").format(
                    port=port, service=event.port_name, usual=usual)
            else:
                label = _("connect to port {port} ({service})").format(port=port, service=event.port_name)
            self.add(Step("arrow", client, server, (label,), "conn", seq=seq))
        elif kind == "close":
            self.add(Step("closed", client, server, (_("connection closed"),), "conn", tls, seq))
        elif kind == "tls":
            self.add(Step("tls", client, server, (_short(event.shown),), "tls", True, seq))
        elif kind in ("fault", "error"):
            self.add(Step("note", server, "", _note(event.shown), "fail", seq=seq))
        elif kind == "state":  # what the server decided: DKIM signing, the MX's policy verdict, a listing
            self.add(Step("note", server, "", _note(event.shown), "fail" if _is_warning(event.payload) else "note",
                          seq=seq))
        elif kind == "query":
            question = event.payload
            if isinstance(question, DnsQuery):
                self.queries[event.conn] = question.qname
                label = f"{question.qname} {question.qtype}? ({question.transport})"
            else:
                label = event.text
            self.add(Step("arrow", client, server, (_short(label),), "dns", seq=seq))
        elif kind == "answer" and isinstance(event.payload, DnsAnswer):
            lines, tone = self._answer(event.payload, self.queries.get(event.conn, ""))
            self.add(Step("arrow", server, client, lines, tone, seq=seq))
        elif kind == "data":
            body = [event.summary]
            following = self.events[i] if i < len(self.events) else None
            if following is not None and following.conn == event.conn and isinstance(following.payload, SmtpDataEnd):
                body.append(_(". (end of data)"))
                i += 1
            self.add(Step("arrow", client, server, tuple(body), "command", tls, seq))
        elif event.direction == "C":
            handshake = self._handshake(event, i) if self.compact else None
            if handshake is not None:
                tls_event, replies = handshake
                self.skip.update(e.seq for e in (*replies, tls_event))
                what = tls_event.payload.version if isinstance(tls_event.payload, TlsStarted) else "TLS"
                exchange = " → ".join([_short(event.text, 24), *(_reply_word(e) for e in replies)])
                label = _("{exchange} → {version} handshake").format(exchange=exchange, version=what)
                self.add(Step("tls", client, server, (label,), "tls", True, seq, folded=len(replies) + 1))
            else:
                self.add(Step("arrow", client, server, (_short(event.text),), "command", tls, seq))
        elif event.direction == "S":
            group = [event]
            while (i < len(self.events) and self.events[i].conn == event.conn and self.events[i].direction == "S"
                   and self.events[i].kind == "line" and self._continues(group[-1])):
                group.append(self.events[i])
                i += 1
            lines, tone = _reply_lines(event.protocol, group, self.compact)
            self.add(Step("arrow", server, client, lines, tone, tls, seq))
        return i

    def _answer(self, answer: DnsAnswer, qname: str) -> tuple[tuple[str, ...], str]:
        lines, tone = _dns_answer(answer)
        if blocklist_query(qname, self.lab):  # RFC 5782: a record means listed
            if answer.rcode == "NXDOMAIN":
                lines, tone = ("NXDOMAIN", _("not on the blocklist")), "dns"
            elif answer.rcode == "NOERROR" and answer.records:
                lines, tone = (*lines, _("LISTED on the blocklist")), "5"
        return lines, tone

    def _lookup(self, event: TraceEvent, i: int) -> bool:
        """Compact: a DNS question and its answer as one note on the asker's lifeline (no lab DNS lifeline).

        Returns False (draw it as arrows) when the answer is not in the events, e.g. a timeout.
        """
        question = event.payload
        assert isinstance(question, DnsQuery)
        answer = next((e for e in self.events[i:] if e.conn == event.conn and isinstance(e.payload, DnsAnswer)), None)
        if answer is None or not isinstance(answer.payload, DnsAnswer):
            return False
        self.skip.add(answer.seq)
        lines, tone = self._answer(answer.payload, question.qname)
        owner = question.qname + " "
        lines = tuple(line[len(owner):] if line.startswith(owner) else line for line in lines)  # said in the question
        asker = self.participant(client_key(event, self.lab))
        asked = _("DNS: {name} {type}?").format(name=question.qname, type=question.qtype)
        self.add(Step("note", asker, "", (asked, *lines[:4]),
                      "fail" if tone in ("4", "5") else "dns", seq=event.seq, folded=1))
        return True

    def _handshake(self, event: TraceEvent, i: int) -> tuple[TraceEvent, list[TraceEvent]] | None:
        """A command that starts TLS, answered yes and followed by the handshake: (the handshake, the replies).

        STARTTLS (RFC 3207), IMAP STARTTLS (RFC 9051 §6.2.1), POP3 STLS (RFC 2595 §4); read from the
        typed payloads. A refused STARTTLS (454) has no handshake after it and is drawn as it happened.
        """
        payload = event.payload
        verb = (payload.verb if isinstance(payload, SmtpCommand | Pop3Command)
                else payload.command if isinstance(payload, ImapCommand) else "")
        if verb.upper() not in ("STARTTLS", "STLS"):
            return None
        replies: list[TraceEvent] = []
        for later in self.events[i:]:
            if later.conn != event.conn:
                continue
            if later.kind == "tls":
                return later, replies
            if later.direction != "S":  # the client spoke again, or the connection ended: no handshake
                return None
            replies.append(later)
        return None

    @staticmethod
    def _continues(last: TraceEvent) -> bool:
        payload = last.payload
        if isinstance(payload, SmtpReply):  # "250-..." announces more lines of the same reply (RFC 5321 §4.2.1)
            return payload.more
        if isinstance(payload, ImapResponse):  # untagged data runs up to the tagged reply
            return payload.tag == "*"
        if isinstance(payload, Pop3Response):  # a multi-line response runs up to its lone "." (RFC 1939 §3)
            return last.text != "."
        return last.protocol == "imap" and last.text.startswith(" ")

    def queue(self, event: TraceEvent, i: int) -> None:
        relay = self.participant(event.host)
        change = event.payload
        state = change.state if isinstance(change, QueueChange) else ""
        if state == "connecting" and isinstance(change, QueueChange):
            # Drawn by what follows: the attempt's connection (same correlation), or the failed attempt.
            server = f"{change.address}:{change.port}"
            if any(e.protocol == "smtp" and e.kind == "connect" and e.host == change.mx and e.server == server
                   or e.corr == event.corr and isinstance(e.payload, QueueChange)
                   and e.payload.state == "connect-failed" and e.payload.mx == change.mx
                   for e in self.events[i:]):
                return
        if state == "connect-failed" and isinstance(change, QueueChange) and change.mx != relay:
            target = self.participant(change.mx)
            self.add(Step("failed", relay, target, (_("connect to {host}:").format(host=_short(change.mx, 30)),
                                                    _short(change.reply)), "fail", seq=event.seq))
            return
        tone = "fail" if state in ("bounced", "deferred") else "note"
        self.add(Step("note", relay, "", _note(event.shown), tone, seq=event.seq))


def steps(events: Iterable[TraceEvent], lab: Any = None, *, compact: bool = False) -> tuple[list[Participant], list[Step]]:
    """Return the lifelines and the rows of a ladder of `events` (in trace order); `compact` folds handshakes
    and EHLO extension lists (see the module's docstring)."""
    return _Builder(sorted(events, key=lambda e: e.seq), lab, compact).build()
