"""Ladder (sequence) diagrams of what really crossed the lab's wires.

One lifeline per participant (mail clients, servers, the lab DNS), one row per step in trace order.
Commands go client to server; replies come back coloured by class (2xx done, 3xx go on, 4xx try
later, 5xx refused); the TLS handshake is a thick line, and after it the connection's arrows are bold
(encrypted). Relay queue changes, injected faults and lab changes are notes on their lifeline.

DOT layout (see docs/architecture.md, "Ladder layout"): every step is one rank; lifelines are heavy
dashed edges between the ranks, so they stay vertical; every arrow is written left to right between
neighbouring lifelines (a reply uses dir=back), so no arrow ever crosses a rank it does not belong to.

Compact (the default in notebooks) folds STARTTLS handshakes and EHLO extension lists (see
smtplab.views.conversation) and wraps every label to the room its lifelines have, so that the ladder fits a
notebook cell (about 900 px); `full=True` draws every line at full length.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import graphviz

from ..i18n import N_, _, ngettext
from ..trace.ring import TraceEvent, format_transcript
from .conversation import Participant, Step, steps
from .journey import message_events, message_key
from .render import Diagram

__all__ = ["ladder", "ladder_of", "ladder_dot", "compact_text", "TONES", "FILLS", "FONT"]

# Colours that survive colour-blindness reasonably (GitHub Primer palette) and print in grey.
TONES = {
    "command": "#1f2328", "2": "#1a7f37", "3": "#0969da", "4": "#bc4c00", "5": "#cf222e",
    "dns": "#8250df", "tls": "#1a7f37", "conn": "#6e7781", "fail": "#cf222e", "note": "#57606a",
}
FILLS = {"client": "#fff8c5", "server": "#ddf4ff", "dns": "#fbefff", "note": "#f6f8fa", "fail": "#ffebe9",
         "down": "#eaeef2"}
LINE_HEIGHT = 0.15  # inches per label line at 9 pt
HEADER_HEIGHT = 0.5
RANKSEP = 0.02
FONT = "Helvetica"
MONO = "Courier"
CELL_WIDTH = 600  # points of arrows a compact ladder may use: a notebook cell is ~900 px (675 pt) wide
CHAR_WIDTH = 5.4  # points per character of a 9 pt Courier label (0.6 em)
FIT_SIZE = "9.35,1000"  # inches: the widest picture a notebook cell shows at full size (~900 px)
MAX_LABEL_LINES = 4  # lines of one compact label; what is cut is in the full ladder
FOLD_NOTE = N_("Compact: TLS handshakes, EHLO lists and DNS lookups folded; full=True draws every line")


def _label(lines: Iterable[str], justify: str = "\\n") -> str:
    return graphviz.nohtml(justify.join(line.replace("\\", "\\\\") for line in lines) + justify)


def _header(participant: Participant) -> str:
    # Plain labels only: the WebAssembly Graphviz has no HTML-like labels (it is built without expat).
    return _label([participant.name, participant.detail] if participant.detail else [participant.name])


LEGEND = (("command", N_("→ command")), ("2", N_("2xx done")), ("3", N_("3xx go on")), ("4", N_("4xx try later")),
          ("5", N_("5xx refused")), ("dns", N_("DNS")), ("tls", N_("bold: encrypted (TLS)")),
          ("fail", N_("dashed, ending in a bar: could not connect")))


def _legend(g: Any, width: int, steps: list[Step]) -> None:
    """Rows of coloured words above the lifelines, saying what the colours and lines mean.

    Only what this diagram uses, and no wider than its lifelines (a one-row legend of everything made a
    two-lane ladder three times wider than needed).
    """
    used = {s.tone for s in steps} | {"command"}
    if any(s.encrypted or s.kind == "tls" for s in steps):
        used.add("tls")
    if any(s.kind == "failed" for s in steps):
        used.add("fail")
    entries = [entry for entry in LEGEND if entry[0] in used]
    per_row = max(2, min(len(entries), width))
    rows = [entries[i: i + per_row] for i in range(0, len(entries), per_row)]
    n = 0
    firsts: list[int] = []
    for r, entries in enumerate(rows):
        with g.subgraph() as row:
            row.attr(rank="min" if r == 0 else "same")
            firsts.append(n)
            for tone, text in entries:
                row.node(f"legend{n}", _(text), shape="plaintext", fontcolor=TONES[tone], fontsize="10", height="0.2")
                if n > firsts[-1]:
                    row.edge(f"legend{n - 1}", f"legend{n}", style="invis")
                n += 1
        if r:
            g.edge(f"legend{firsts[r - 1]}", f"legend{firsts[r]}", style="invis")
    g.edge(f"legend{firsts[-1]}", "p0_0", style="invis", weight="0")


def _wrap(lines: Iterable[str], width: int, most: int) -> tuple[str, ...]:
    """Wrap label lines to `width` characters, at most `most` lines (the last one says more was cut)."""
    wrapped = [part for line in lines
               for part in (textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False) or [""])]
    if len(wrapped) > most:
        wrapped = [*wrapped[: most - 1], "…"]
    return tuple(wrapped)


def _fit(participants: list[Participant], rows: list[Step]) -> list[Step]:
    """Wrap every label to the room a compact ladder has between two lifelines (its width over the gaps)."""
    gaps = max(len(participants) - 1, 1)
    width = max(18, min(56, int(CELL_WIDTH / gaps / CHAR_WIDTH) - 2))
    fitted = []
    for step in rows:
        if step.kind == "note" and step.tone == "dns":  # a folded lookup: the question, then one record a line
            fitted.append(replace(step, lines=_wrap(step.lines, width + 4, 6)))
        elif step.kind == "note":  # a note's lines were wrapped for the full ladder: wrap the text again
            fitted.append(replace(step, lines=_wrap([" ".join(step.lines)], width + 4, 6)))
        elif step.kind == "break":
            fitted.append(replace(step, lines=_wrap(step.lines, width * gaps, 2)))
        else:
            fitted.append(replace(step, lines=_wrap(step.lines, width, MAX_LABEL_LINES)))
    return fitted


def ladder_dot(participants: list[Participant], rows: list[Step], title: str = "", *, compact: bool = False) -> str:
    """Return the DOT source of a ladder diagram; `compact` wraps labels and headers to fit a notebook cell."""
    if compact:
        rows = _fit(participants, rows)
    column = {p.key: n for n, p in enumerate(participants)}
    width = len(participants)
    last = len(rows) + 1
    footer = len(rows) > 30  # repeat the names at the bottom of a tall diagram
    g = graphviz.Digraph("ladder")
    heading = [title] if title else []
    if compact and any(s.folded for s in rows):  # say what was left out, and how to see it, no wider than the lifelines
        heading += textwrap.wrap(_(FOLD_NOTE), max(40, 32 * (width - 1)), break_on_hyphens=False)
    g.attr(newrank="true", nodesep="0.2" if compact else "0.3", ranksep=f"{RANKSEP}", outputorder="edgesfirst",
           pad="0.2", bgcolor="white", fontname=FONT, fontsize="13" if compact else "16", labelloc="t", labeljust="l",
           label=_label(heading, "\\l") if heading else "")
    if compact:  # the wrapping above keeps it near; a lab of seven lifelines is scaled down a little (~0.9)
        g.attr(size=FIT_SIZE)
    g.attr("node", fontname=FONT, fontsize="10" if compact else "11")
    g.attr("edge", fontname=MONO, fontsize="9", arrowsize="0.7")
    if participants:
        _legend(g, width, rows)

    notes = {(n + 1, column[s.source]): s for n, s in enumerate(rows) if s.kind == "note"}
    boxes = {(0, c) for c in range(width)} | ({(last, c) for c in range(width)} if footer else set())
    heights = _rank_heights(rows, footer)

    def node(rank: int, col: int) -> str:
        return f"p{col}_{rank}"

    for col, p in enumerate(participants):
        fill = FILLS.get(p.role, FILLS["server"])
        for rank in range(last + 1):
            name = node(rank, col)
            if (rank, col) in boxes:
                g.node(name, _header(p), shape="box", style="rounded,filled", fillcolor=fill,
                       margin="0.06,0.04" if compact else "0.12,0.05",
                       height=f"{HEADER_HEIGHT}")
            elif (rank, col) in notes:
                note = notes[(rank, col)]
                g.node(name, _label(note.lines, "\\l"), shape="note", style="filled", fontsize="9",
                       fillcolor=FILLS.get(note.tone, FILLS["note"]),
                       color=TONES[note.tone], fontcolor=TONES[note.tone] if note.tone == "fail" else TONES["command"],
                       margin="0.08,0.04")
            else:
                g.node(name, "", shape="none", width="0.01", fixedsize="true", height=f"{heights[rank]:.2f}")
            if rank:
                clip_tail = (rank - 1, col) in boxes or (rank - 1, col) in notes
                clip_head = (rank, col) in boxes or (rank, col) in notes
                g.edge(node(rank - 1, col), name, style="dashed", color="#8c959f", arrowhead="none", weight="1000",
                       tailclip=str(clip_tail).lower(), headclip=str(clip_head).lower())

    gaps = [0] * max(width - 1, 0)  # widest label placed between each pair of neighbouring lifelines
    for rank in range(last + 1):
        step = rows[rank - 1] if 1 <= rank <= len(rows) else None
        covered: range = range(0)
        with g.subgraph() as same:
            same.attr(rank="same")
            for col in range(width):
                same.node(node(rank, col))
            if step is not None and step.kind != "note":
                covered = _draw(same, step, rank, column, width, gaps, node)
            for col in range(width - 1):
                if col not in covered:
                    same.edge(node(rank, col), node(rank, col + 1), style="invis")
    return g.source


def _rank_heights(rows: list[Step], footer: bool) -> list[float]:
    """Height of each rank's lifeline nodes (inches), so that every label just fits above its arrow.

    A label sits above its arrow, in the space between this rank and the one before; the lower half
    of an arrow's rank is empty, so the next label may use it (the ranks' heights are symmetric).
    """
    heights = [HEADER_HEIGHT]
    free = 0.0  # empty space in the lower half of the previous rank
    for step in rows:
        if step.kind == "note":
            height = len(step.lines) * LINE_HEIGHT + 0.2
            free = 0.0
        else:
            needed = len(step.lines) * LINE_HEIGHT + 0.1  # the label, and a gap to the arrow above
            half = max(0.06, needed - RANKSEP - free)
            height = 2 * half
            free = half - 0.05  # the arrow and its arrowhead
        heights.append(height)
    heights.append(HEADER_HEIGHT if footer else 0.1)
    return heights


def _draw(g: Any, step: Step, rank: int, column: dict[str, int], width: int, gaps: list[int],
          node: Any) -> range:
    """Draw one arrow as segments between neighbouring lifelines; return the gaps it covers."""
    if step.kind == "break":
        a, b = 0, width - 1
    else:
        a, b = column[step.source], column[step.target]
    lo, hi = min(a, b), max(a, b)
    if lo == hi:
        return range(0)
    middle = (lo + hi - 1) / 2
    label_gap = max(range(lo, hi), key=lambda k: (gaps[k], -abs(k - middle)))
    gaps[label_gap] = max(gaps[label_gap], max((len(line) for line in step.lines), default=0))
    colour = TONES[step.tone]
    attrs: dict[str, str] = {"color": colour, "fontcolor": colour, "tailclip": "false", "headclip": "false"}
    if step.kind == "closed":
        attrs.update(style="dotted", arrowhead="none")
    elif step.kind == "break":
        attrs.update(style="dotted", arrowhead="none", penwidth="1.5")
    elif step.kind == "tls":
        attrs.update(penwidth="3", arrowhead="none")
    elif step.kind == "failed":
        attrs.update(style="dashed")
    if step.encrypted and step.kind == "arrow":
        attrs["penwidth"] = "2.2"
    head = "tee" if step.kind == "failed" else "normal"
    for k in range(lo, hi):
        segment = dict(attrs)
        if k == label_gap:
            segment["label"] = _label(step.lines)
        if step.kind in ("arrow", "failed"):
            if a < b:
                segment["arrowhead"] = head if k == hi - 1 else "none"
            else:  # written left to right, drawn pointing left
                segment.update(dir="back", arrowtail=head if k == lo else "none")
        g.edge(node(rank, k), node(rank, k + 1), **segment)
    return range(lo, hi)


def compact_text(participants: list[Participant], rows: list[Step]) -> str:
    """The compact ladder as text, one line per row (its alternative for screen readers and copying)."""
    names = {p.key: p.name for p in participants}
    out = []
    for step in rows:
        label = " / ".join(step.lines)
        if step.kind == "note":
            line = f"[{names.get(step.source, step.source)}] {' '.join(step.lines)}"
        elif step.kind == "break":
            line = f"--- {label} ---"
        else:
            arrow = {"tls": "⇄", "failed": "-x", "closed": "··"}.get(step.kind, "→")
            line = f"{names.get(step.source, step.source)} {arrow} {names.get(step.target, step.target)}: {label}"
        out += textwrap.wrap(line, 108, subsequent_indent="    ", break_on_hyphens=False) or [""]
    return "\n".join(out)


def ladder(events: Iterable[TraceEvent], lab: Any = None, *, title: str | None = None, full: bool = False) -> Diagram:
    """Draw a ladder (sequence) diagram of `events`, e.g. `lab.trace.filter(conn="smtp-1")`.

    Give `lab` to show host addresses and name the mail clients after their users' providers. Compact
    by default (fits a notebook cell; its text is one line per row); `full=True` draws every line, and
    its text is the whole transcript.
    """
    chosen = sorted(events, key=lambda e: e.seq)
    participants, rows = steps(chosen, lab, compact=not full)
    title = title if title is not None else ngettext("{n} trace event", "{n} trace events", len(chosen)).format(
        n=len(chosen))
    text = format_transcript(chosen) if full else compact_text(participants, rows)
    return Diagram("ladder", title, ladder_dot(participants, rows, title, compact=not full), text or _("(no events)"))


def ladder_of(lab: Any, message: Any = None, *, conn: str | Iterable[str] | None = None, since: int | None = None,
              events: Iterable[TraceEvent] | None = None, title: str | None = None, full: bool = False) -> Diagram:
    """Draw a selection of the lab's trace: one message end to end, connections, events since a mark.

    The criteria combine; with none, the whole trace. `events` replaces the trace as the starting
    point (or, with `message`, adds to its events, e.g. a session the lab cannot link to it).
    """
    parts = []
    if message is not None:
        chosen = message_events(lab.trace, message, events or ())
        parts.append(_("Message {id}").format(id=message_key(message)))
    else:
        chosen = list(events) if events is not None else lab.trace.events()
    if conn is not None:
        conns = {conn} if isinstance(conn, str) else set(conn)
        chosen = [e for e in chosen if e.conn in conns]
        parts.append(ngettext("connection {ids}", "connections {ids}", len(conns)).format(ids=", ".join(sorted(conns))))
    if since is not None:
        chosen = [e for e in chosen if e.seq > since]
        parts.append(_("since your mark"))
    if title is None:
        title = ", ".join(parts) if parts else _("The lab's trace") if events is None else _("Trace events")
        title = title[0].upper() + title[1:]
    return ladder(chosen, lab, title=title, full=full)
