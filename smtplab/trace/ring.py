"""One ordered record of everything that crossed the lab's wires, each event tied to the work it was for.

Servers record both directions of every SMTP and IMAP connection (what the client sent, as the server
read it, and what the server answered), the DNS server records every question and answer, and the relay
queue records its state changes. Each event carries typed fields (`payload`, see smtplab.trace.events) beside
the sentence a learner reads, and a correlation id (`corr`) set where its unit of work started: an SMTP
transaction, a relay attempt, an IMAP session, a DNS question asked on someone's behalf. Work started
for a message is linked to it there and then (`Trace.link`), and a lab client says which work its next
connection or DNS question is for (`announce_connection`, `announce_dns_question`) before sending it,
so the server that receives it claims that work exactly: `for_message` never guesses from addresses or
time windows. Events are immutable; the trace is a bounded ring, safe to read from any thread.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..i18n import N_, _, lazy, ngettext
from ..i18n import shown as shown_text
from .events import Dropped, SmtpData, payload_of_line
from .transcript import TRANSCRIPT_WIDTH, format_transcript

__all__ = ["TraceEvent", "Trace", "format_transcript", "correlated", "current_correlation", "announce_connection",
           "announce_dns_question", "withdraw_connection", "MAX_EVENTS"]

class TraceEvent(NamedTuple):
    """One thing that happened on the lab network (immutable: a named tuple, cheap to make on every line).

    `text` is what a learner reads; `payload` holds the same facts as typed fields (see smtplab.trace.events),
    which is what views and checkers read. `corr` is the correlation id of the work the event was done
    for (an SMTP transaction, a relay attempt, a DNS question...), set where that work started.
    """

    seq: int
    time: float  # lab clock (virtual) POSIX timestamp
    protocol: str  # "smtp", "imap", "pop3", "dns", "queue" or "lab"
    kind: str  # connect, line, data, tls, close, error, fault, query, answer, queue, state, refused, dropped
    host: str  # the lab host that recorded it (the server side, or the relaying host)
    conn: str = ""  # connection id, e.g. "smtp-12"; DNS queries get "dns-N"
    direction: str = ""  # "C" client to server, "S" server to client, "" for state changes
    client: str = ""  # client endpoint "address:port"
    server: str = ""  # server endpoint "address:port"
    peer: str = ""  # lab host name of the client side when known, else "client"
    text: str = ""  # the line without CRLF, or a description (a LazyText: English here, see `shown`)
    message_ids: tuple[str, ...] = ()  # queue ids / Message-IDs this event belongs to
    tls: bool = False  # True once the connection is encrypted (after STARTTLS)
    port_name: str = ""  # which service: "smtp", "submission", "imap", "dns"
    typed: object = None  # the payload given at record time (see `payload`)
    corr: str = ""  # correlation id (see Trace.for_message)

    @property
    def payload(self) -> object:
        """The event's typed fields (smtplab.trace.events); a protocol line's are parsed from the line itself."""
        if self.typed is not None:
            return self.typed
        if self.kind == "line":
            return payload_of_line(self.protocol, self.direction, self.text)
        return None

    @property
    def shown(self) -> str:
        """`text` as a learner reads it now: a description in the current language, a protocol line as sent."""
        return shown_text(self.text)

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.time, tz=UTC)

    def to_text(self, max_data_lines: int = 40) -> str:
        """Render as transcript lines: `C: EHLO x` / `S: 250 ...` / `*  note`; DATA bodies line by line."""
        if self.kind == "data":
            lines = self.text.split("\n")
            shown = lines[:max_data_lines]
            out = [f"C: {line}" for line in shown]
            if len(lines) > len(shown):  # the lab's words, not the client's: in the learner's language
                more = len(lines) - len(shown)
                out.append("C: " + ngettext("... ({n} more line)", "... ({n} more lines)", more).format(n=more))
            return "\n".join(out)
        if self.direction in ("C", "S"):
            return f"{self.direction}: {self.shown}"
        return f"*  {self.shown}"

    @property
    def summary(self) -> str:
        """One short line, for diagrams: DATA bodies collapse to their size."""
        if self.kind == "data":
            data = self.typed
            if isinstance(data, SmtpData):
                return _("<message: {lines} lines, {size} bytes>").format(lines=data.lines, size=data.size)
            lines = self.text.split("\n")
            return _("<message: {lines} lines, {size} bytes>").format(lines=len(lines), size=len(self.text.encode()))
        return self.shown


def _seq(event: TraceEvent) -> int:
    return event.seq


# The work being done right now (a trace and a correlation id), carried by asyncio tasks, threads started
# with a copied context, and so through resolver calls and the relay's SMTP client.
_CURRENT: ContextVar[tuple[Trace, str] | None] = ContextVar("smtplab_correlation", default=None)
# Events a trace keeps before it drops the oldest (a ring; ~27 MB at 100,000 protocol lines). Measured: the
# notebook with the most traffic (05-security) records 759 events in 6 labs, at most 190 in one lab.
MAX_EVENTS = 100_000
_MAX_ANNOUNCED = 10_000  # announcements nobody claimed (a question that never arrived) are forgotten


def current_correlation() -> str:
    """The correlation id of the work in progress in this task or thread ("" outside any)."""
    current = _CURRENT.get()
    return current[1] if current is not None else ""


@contextmanager
def correlated(trace: Trace, corr: str) -> Iterator[str]:
    """Run the block as part of `corr`: events it records, questions it asks, connections it opens."""
    token = _CURRENT.set((trace, corr))
    try:
        yield corr
    finally:
        _CURRENT.reset(token)


def enter_correlation(trace: Trace, corr: str) -> None:
    """Make `corr` the current work for the rest of this task (a task's context is its own)."""
    _CURRENT.set((trace, corr))


def announce_connection(client: str) -> None:
    """Say that the connection from `client` ("address:port") carries the current work from now on.

    Called by a lab client before it connects or starts a transaction; the server that accepts the
    connection (or reads the transaction's MAIL) claims it, so both sides share one correlation.
    """
    current = _CURRENT.get()
    if current is not None:
        current[0].announce(("conn", client), current[1])


def withdraw_connection(client: str) -> None:
    """Take back an announcement for `client` whose connection never came about (a refused connect), so
    that a later connection from the same port cannot claim it."""
    current = _CURRENT.get()
    if current is not None:
        current[0].claim(("conn", client))


def announce_dns_question(client: str, query_id: int) -> None:
    """Say that the DNS message `query_id` about to leave `client` ("address:port") is asked for the current
    work; the lab DNS claims it by the same id and endpoint when the question arrives (RFC 1035 §4.1.1)."""
    current = _CURRENT.get()
    if current is not None:
        current[0].announce(("dns", client, query_id), current[1])


class Trace:
    """Append-only (a bounded ring), thread-safe, ordered list of TraceEvents with filters.

    Correlation: every unit of work (an SMTP transaction, a relay attempt, an IMAP session, a DNS
    question asked for someone) has an id; `link(parent, child)` says a unit was done for a message
    (parent: a queue id or Message-ID) or for another unit. `for_message` follows those links only.
    """

    def __init__(self, clock: Callable[[], float], max_events: int = MAX_EVENTS) -> None:
        self._clock = clock
        self._events: list[TraceEvent] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._corr_ids = itertools.count(1)
        self._children: dict[str, set[str]] = {}
        self._announced: dict[tuple[Any, ...], str] = {}
        self._listeners: tuple[Callable[[TraceEvent], None], ...] = ()  # replaced, never changed in place
        self.max_events = max_events
        self.dropped = 0

    # --- recording (called by the lab's servers) ---
    def new_conn_id(self, protocol: str) -> str:
        return f"{protocol}-{next(self._conn_ids)}"

    def record(self, protocol: str, kind: str, host: str, text: str = "", *, payload: object = None,
               corr: str | None = None, **fields: object) -> TraceEvent:
        """Record one event. `payload` is its typed fields (a protocol line without one gets them from
        the line); `corr` defaults to the work in progress in this task or thread."""
        if corr is None:
            current = _CURRENT.get()
            corr = current[1] if current is not None and current[0] is self else ""
        with self._lock:
            event = TraceEvent(next(self._seq), self._clock(), protocol, kind, host, text=text, typed=payload,
                               corr=corr, **fields)  # type: ignore[arg-type]
            self._events.append(event)
            if len(self._events) > self.max_events:
                self._drop_oldest()
        for listener in self._listeners:
            listener(event)
        return event

    def _drop_oldest(self) -> None:
        """Drop the oldest tenth (with the lock held), leaving one marker event where they were."""
        events = self._events
        count = max(1, self.max_events // 10)
        if isinstance(events[0].typed, Dropped):
            count += 1  # the old marker goes too; the new one counts everything
        last = events[count - 1]
        self.dropped += count - (1 if isinstance(events[0].typed, Dropped) else 0)
        marker = TraceEvent(last.seq, last.time, "lab", "dropped", "trace",
                            text=lazy(N_("{count} older events were dropped here: the trace keeps its last "
                                         "{limit} (Trace.max_events)"), count=self.dropped, limit=self.max_events),
                            typed=Dropped(self.dropped))
        events[:count] = [marker]
        # Links of long-gone work go too (oldest first): they could only select events no longer kept.
        excess = len(self._children) - self.max_events // 2
        for key in list(itertools.islice(self._children, max(excess, 0))):
            del self._children[key]

    def new_correlation(self, kind: str, *parents: str) -> str:
        """Return a new correlation id for a unit of work, linked to `parents` (message ids or units)."""
        corr = f"{kind}:{next(self._corr_ids)}"
        for parent in parents:
            if parent:
                self.link(parent, corr)
        return corr

    def link(self, parent: str, child: str) -> None:
        """Declare that the work `child` was done for `parent` (a queue id, a Message-ID or another unit)."""
        if not parent or not child or parent == child:
            return
        with self._lock:
            self._children.setdefault(parent.strip(), set()).add(child)

    def announce(self, key: tuple[Any, ...], corr: str) -> None:
        with self._lock:
            self._announced.pop(key, None)
            self._announced[key] = corr
            while len(self._announced) > _MAX_ANNOUNCED:
                self._announced.pop(next(iter(self._announced)))

    def claim(self, key: tuple[Any, ...], *, keep: bool = False) -> str:
        """Return the correlation announced for `key` ("" if none); with `keep` it stays announced."""
        with self._lock:
            return self._announced.get(key, "") if keep else self._announced.pop(key, "")

    def subscribe(self, listener: Callable[[TraceEvent], None]) -> None:
        """Call `listener(event)` for every new event (from the lab's thread: keep it quick)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def unsubscribe(self, listener: Callable[[TraceEvent], None]) -> None:
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    # --- reading ---
    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._events[-1].seq if self._events else 0

    def mark(self) -> int:
        """Return a mark; `since(mark)` gives everything recorded after it."""
        return self.last_seq

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[TraceEvent]:
        with self._lock:
            return iter(list(self._events))

    def __getitem__(self, index: int) -> TraceEvent:
        return self._events[index]

    def events(self) -> list[TraceEvent]:
        with self._lock:
            return list(self._events)

    def since(self, mark: int) -> list[TraceEvent]:
        # Events are appended in seq order: find the mark by bisection, not by scanning (the relay
        # asks for this once per message, and a busy lab holds hundreds of thousands of events).
        with self._lock:
            start = bisect.bisect_right(self._events, mark, key=_seq)
            return self._events[start:]

    def connections(self, protocol: str | None = None) -> list[str]:
        """Return connection ids in order of first appearance."""
        seen: dict[str, None] = {}
        for e in self.events():
            if e.conn and (protocol is None or e.protocol == protocol):
                seen.setdefault(e.conn, None)
        return list(seen)

    def filter(
        self,
        *,
        conn: str | None = None,
        message: str | None = None,
        host: str | None = None,
        protocol: str | None = None,
        kind: str | None = None,
        since: int | None = None,
    ) -> list[TraceEvent]:
        """Return the events matching every criterion given."""
        if message is not None:
            events = self.for_message(message)
        else:
            events = self.since(since) if since is not None else self.events()
        return [
            e for e in events
            if (conn is None or e.conn == conn)
            and (host is None or e.host == host)
            and (protocol is None or e.protocol == protocol)
            and (kind is None or e.kind == kind)
            and (since is None or e.seq > since)
        ]

    def correlations_of(self, message_id: str) -> set[str]:
        """The correlation ids of every unit of work done for a message (following links down)."""
        key = message_id.strip()
        with self._lock:
            found: set[str] = set()
            todo = [key, key.strip("<>"), f"<{key.strip('<>')}>"]
            while todo:
                for child in self._children.get(todo.pop(), ()):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
            return found

    def for_message(self, message_id: str) -> list[TraceEvent]:
        """Return exactly the events done for one message (by queue id or Message-ID): those that name it,
        and those of every unit of work linked to it where the work started."""
        key = message_id.strip()
        bare = key.strip("<>")
        corrs = self.correlations_of(key)
        return [e for e in self.events()
                if (e.corr and e.corr in corrs) or key in e.message_ids or bare in e.message_ids]

    def transcript(self, events: Iterable[TraceEvent] | None = None, *, times: bool = False, full: bool = False) -> str:
        """The events (all by default) as a C:/S: transcript, folded to fit a notebook unless `full`: an EHLO
        answer in two lines, a long header field of a message (a DKIM-Signature) in one, and lines wider
        than TRANSCRIPT_WIDTH characters cut, each fold saying how much it left out."""
        chosen = self.events() if events is None else events
        return format_transcript(chosen, times=times, width=None if full else TRANSCRIPT_WIDTH, compact=not full)

    def __str__(self) -> str:
        return self.transcript(full=True)

    def __repr__(self) -> str:
        return f"<Trace {len(self._events)} events, {len(self.connections())} connections>"
