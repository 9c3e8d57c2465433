"""One ordered record of everything that crossed the lab's wires.

Servers record both directions of every SMTP and IMAP connection (what the client sent, what the
server answered), the DNS server records every question and answer, and the relay queue records its
state changes. Events are immutable; the trace is append-only and safe to read from any thread.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

__all__ = ["TraceEvent", "Trace", "format_transcript"]

# Kinds of events. A "line" is one protocol line; "data" is a whole DATA body (collapsed);
# "connect"/"close"/"tls" mark connection life; "query"/"answer" are DNS; "queue" is relay state;
# "fault" is an injected fault firing; "state" is a lab change (protocol "lab": host down, clock moved).
KINDS = ("connect", "line", "data", "tls", "close", "error", "fault", "query", "answer", "queue", "state")


class TraceEvent(NamedTuple):
    """One thing that happened on the lab network (immutable: a named tuple, cheap to make on every line)."""

    seq: int
    time: float  # lab clock (virtual) POSIX timestamp
    protocol: str  # "smtp", "imap", "dns", "queue" or "lab"
    kind: str  # one of KINDS
    host: str  # the lab host that recorded it (the server side, or the relaying host)
    conn: str = ""  # connection id, e.g. "smtp-12"; DNS queries get "dns-N"
    direction: str = ""  # "C" client to server, "S" server to client, "" for state changes
    client: str = ""  # client endpoint "address:port"
    server: str = ""  # server endpoint "address:port"
    peer: str = ""  # lab host name of the client side when known, else "client"
    text: str = ""  # the line without CRLF, or a description
    message_ids: tuple[str, ...] = ()  # queue ids / Message-IDs this event belongs to
    tls: bool = False  # True once the connection is encrypted (after STARTTLS)
    port_name: str = ""  # which service: "smtp", "submission", "imap", "dns"

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.time, tz=timezone.utc)

    def to_text(self, max_data_lines: int = 40) -> str:
        """Render as transcript lines: `C: EHLO x` / `S: 250 ...` / `*  note`; DATA bodies line by line."""
        if self.kind == "data":
            lines = self.text.split("\n")
            shown = lines[:max_data_lines]
            out = [f"C: {line}" for line in shown]
            if len(lines) > len(shown):
                out.append(f"C: ... ({len(lines) - len(shown)} more lines)")
            return "\n".join(out)
        if self.direction in ("C", "S"):
            return f"{self.direction}: {self.text}"
        return f"*  {self.text}"

    @property
    def summary(self) -> str:
        """One short line, for diagrams: DATA bodies collapse to their size."""
        if self.kind == "data":
            lines = self.text.split("\n")
            return f"<message: {len(lines)} lines, {len(self.text.encode())} bytes>"
        return self.text


def format_transcript(events: Iterable[TraceEvent], *, times: bool = False) -> str:
    """Render events as a readable C:/S: transcript, with a header per connection change."""
    lines: list[str] = []
    current = None
    for event in events:
        key = (event.conn, event.host)
        if key != current:
            current = key
            if event.protocol == "queue":
                lines.append(f"--- relay queue on {event.host}")
            elif event.protocol == "lab":
                lines.append("--- lab")
            else:
                where = f"{event.peer or 'client'} -> {event.host}"
                if event.port_name:
                    where += f" ({event.port_name}"
                    where += f", {event.server})" if event.server else ")"
                lines.append(f"--- {event.conn or event.protocol}: {where}")
        prefix = f"[{event.when:%H:%M:%S.%f}"[:-3] + "] " if times else ""
        lines.append(prefix + event.to_text())
    return "\n".join(lines)


def _seq(event: TraceEvent) -> int:
    return event.seq


@dataclass
class _Link:
    conn: str
    first: int
    last: int


class Trace:
    """Append-only, thread-safe, ordered list of TraceEvents with filters."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._events: list[TraceEvent] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._links: dict[str, list[_Link]] = {}
        self._listeners: tuple[Callable[[TraceEvent], None], ...] = ()  # replaced, never changed in place

    # --- recording (called by the lab's servers) ---
    def new_conn_id(self, protocol: str) -> str:
        return f"{protocol}-{next(self._conn_ids)}"

    def record(self, protocol: str, kind: str, host: str, text: str = "", **fields: object) -> TraceEvent:
        with self._lock:
            event = TraceEvent(next(self._seq), self._clock(), protocol, kind, host, text=text,
                               **fields)  # type: ignore[arg-type]
            self._events.append(event)
        for listener in self._listeners:
            listener(event)
        return event

    def link(self, message_id: str, conn: str, first: int, last: int) -> None:
        """Declare that events `first..last` of connection `conn` carried `message_id`."""
        with self._lock:
            self._links.setdefault(message_id, []).append(_Link(conn, first, last))

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

    def for_message(self, message_id: str) -> list[TraceEvent]:
        """Return every event that belongs to one message (by queue id or Message-ID)."""
        key = message_id.strip()
        with self._lock:
            links = list(self._links.get(key, ())) + list(self._links.get(key.strip("<>"), ()))
            events = list(self._events)
        bare = key.strip("<>")
        out = []
        for e in events:
            if key in e.message_ids or bare in e.message_ids or any(
                e.conn == link.conn and link.first <= e.seq <= link.last for link in links
            ):
                out.append(e)
        return out

    def transcript(self, events: Iterable[TraceEvent] | None = None, *, times: bool = False) -> str:
        return format_transcript(self.events() if events is None else events, times=times)

    def __str__(self) -> str:
        return self.transcript()

    def __repr__(self) -> str:
        return f"<Trace {len(self._events)} events, {len(self.connections())} connections>"
