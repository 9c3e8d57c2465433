"""The trace as a learner reads it: a C:/S: transcript (split from `trace/ring.py`).

`format_transcript` renders events with a header per connection; compact, it folds an EHLO answer of many
lines into two and a long header field of a message (a DKIM-Signature) into one, and cuts lines wider than
a notebook cell, each fold saying how much it left out.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..i18n import _, ngettext
from .events import SmtpReply

if TYPE_CHECKING:
    from .ring import TraceEvent

__all__ = ["TRANSCRIPT_WIDTH", "format_transcript"]

TRANSCRIPT_WIDTH = 110  # characters: a notebook cell's width at the default font


def _fold(line: str, width: int) -> str:
    if len(line) <= width:
        return line
    cut = width - 26  # room for the note, in any language
    left = len(line) - cut
    return line[:cut] + " " + ngettext("… [{n} more character]", "… [{n} more characters]", left).format(n=left)


def _fold_header_fields(text: str) -> str:
    """A DATA body's transcript with each header field of more than three lines (a DKIM-Signature: eight)
    cut to its first line and a count.

    Continuation lines start with white space (RFC 5322 §2.2.3); the header section ends at the first
    empty line; the body is left as it is.
    """
    lines = text.split("\n")
    fields: list[list[str]] = []
    n = 0
    while n < len(lines) and lines[n][3:]:
        if lines[n][3:4] in (" ", "\t") and fields:
            fields[-1].append(lines[n])
        else:
            fields.append([lines[n]])
        n += 1
    out: list[str] = []
    for field in fields:
        if len(field) > 3:
            more = len(field) - 1
            out += [field[0], "    " + ngettext("… ({n} more line of this header field)",
                                                "… ({n} more lines of this header field)", more).format(n=more)]
        else:
            out += field
    return "\n".join(out + lines[n:])


def _rows(events: Iterable[TraceEvent], compact: bool) -> Iterator[tuple[TraceEvent, str]]:
    """Each event with its transcript text; compact folds an SMTP reply of many lines (an EHLO answer) into
    its first line and one line listing the rest, and long header fields of DATA bodies."""
    open_replies: dict[str, list[str]] = {}  # connection -> the lines after the first of a multiline reply
    for event in events:
        payload = event.payload
        if compact and isinstance(payload, SmtpReply):
            more = open_replies.get(event.conn)
            if more is None and payload.more:
                open_replies[event.conn] = []
                yield event, event.to_text()
                continue
            if more is not None:
                more.append(event.text[4:])
                if payload.more:
                    continue
                del open_replies[event.conn]
                summary = ngettext("… {n} more line: {items}", "… {n} more lines: {items}", len(more)).format(
                    n=len(more), items=" · ".join(more))  # not a wire line: no "S:", and wrapped, not cut
                yield event, "\n".join(textwrap.wrap(summary, TRANSCRIPT_WIDTH - 2, initial_indent="   ",
                                                     subsequent_indent="     ", break_on_hyphens=False))
                continue
        if compact and event.kind == "data":
            yield event, _fold_header_fields(event.to_text())
            continue
        yield event, event.to_text()


def format_transcript(events: Iterable[TraceEvent], *, times: bool = False, width: int | None = None,
                      compact: bool = False) -> str:
    """Render events as a readable C:/S: transcript, with a header per connection change.

    With `width`, a longer line (a DKIM key's TXT record, a DNSSEC key) is cut there and says how many
    characters it left out. `compact` folds an EHLO answer into two lines and a long header field of a
    message (a DKIM-Signature) into one.
    """
    lines: list[str] = []
    current = None
    for event, shown in _rows(events, compact):
        key = (event.conn, event.host)
        if key != current:
            current = key
            if event.protocol == "queue":
                lines.append("--- " + _("relay queue on {host}").format(host=event.host))
            elif event.protocol == "lab":
                lines.append("--- " + _("lab"))
            else:
                where = f"{event.peer or 'client'} -> {event.host}"
                if event.port_name:
                    where += f" ({event.port_name}"
                    where += f", {event.server})" if event.server else ")"
                lines.append(f"--- {event.conn or event.protocol}: {where}")
        prefix = f"[{event.when:%H:%M:%S.%f}"[:-3] + "] " if times else ""
        lines.append(prefix + shown)
    text = "\n".join(lines)
    return text if width is None else "\n".join(_fold(line, width) for line in text.split("\n"))
