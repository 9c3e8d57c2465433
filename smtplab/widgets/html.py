"""Small HTML renderers shared by the widgets (pure functions of core data)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from ..i18n import _
from ..mail.queue import state_name
from ..net.replies import Reply

CLASS_COLOURS = {"2": "#1a7f37", "3": "#0969da", "4": "#9a6700", "5": "#cf222e"}
STATE_COLOURS = {
    "queued": "#57606a", "mx-lookup": "#0969da", "connecting": "#0969da",
    "delivered": "#1a7f37", "deferred": "#9a6700", "bounced": "#cf222e",
}


def colour_of(code: int | str) -> str:
    return CLASS_COLOURS.get(str(code)[:1], "#57606a")


def reply_card(reply: Reply) -> str:
    """Render one reply: the wire lines, the code coloured by class, what it means, what to do next."""
    colour = colour_of(reply.code)
    wire = "<br>".join(escape(line) for line in reply.to_wire())
    enhanced = f" <code>{escape(reply.enhanced)}</code>" if reply.enhanced else ""
    meaning, next_step = escape(_("meaning:")), escape(_("next:"))
    return (
        f"<div class='smtplab-reply' style='border-left:4px solid {colour};padding:4px 8px;margin:4px 0'>"
        f"<div style='font-family:monospace'>{wire}</div>"
        f"<div><b style='color:{colour}' class='smtplab-code'>{reply.code}</b>{enhanced} &mdash; "
        f"{escape(reply.category)}</div>"
        f"<div><i>{meaning}</i> {escape(reply.meaning)}</div>"
        f"<div><i>{next_step}</i> {escape(reply.next_step)}</div></div>"
    )


def transcript(lines: Iterable[str]) -> str:
    """Render C:/S: lines with server replies coloured by class."""
    out = []
    for line in lines:
        text = escape(line)
        if line.startswith("S: ") and line[3:4].isdigit():
            text = f"<span style='color:{colour_of(line[3])}'>{text}</span>"
        elif line.startswith("*"):
            text = f"<span style='color:#57606a'>{text}</span>"
        out.append(text)
    return ("<pre class='smtplab-transcript' style='max-height:22em;overflow:auto;font-size:12px'>"
            + "\n".join(out) + "</pre>")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, highlight: int | None = None,
          raw: bool = False) -> str:
    """Render a simple table; `highlight` marks one row index; `raw` cells are trusted HTML."""
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        style = " style='background:#fff8c5;font-weight:bold'" if index == highlight else ""
        cells = "".join(f"<td style='padding:2px 8px'>{c if raw else escape(str(c))}</td>" for c in row)
        body.append(f"<tr{style}>{cells}</tr>")
    return f"<table class='smtplab-table'><tr>{head}</tr>{''.join(body)}</table>"


def state_badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#57606a")
    return (f"<span class='smtplab-state' style='color:white;background:{colour};border-radius:3px;"
            f"padding:0 6px' data-state='{escape(state)}'>{escape(state_name(state))}</span>")


def note(text: str, kind: str = "info") -> str:
    colour = {"info": "#0969da", "error": "#cf222e", "ok": "#1a7f37"}.get(kind, "#57606a")
    return f"<div class='smtplab-note' style='color:{colour}'>{escape(text)}</div>"


def diagram(obj: object) -> str:
    """Inline SVG of a diagram object (anything with _repr_svg_), or '' when there is none."""
    render = getattr(obj, "_repr_svg_", None)
    if render is None:
        return ""
    try:
        svg = render()
    except Exception as exc:  # a diagram must never break the widget around it
        return note(_("(diagram unavailable: {error})").format(error=exc), "error")
    return f"<div class='smtplab-diagram' style='overflow:auto;max-height:40em'>{svg}</div>"
