"""What a widget shows where no widget can run: GitHub, nbviewer, a PDF export, a saved notebook.

ipywidgets puts `repr(widget)` into the output as its text, which for a box of boxes reads
`HandshakeConsole(children=(HBox(children=(Dropdown(...`. A `StaticSummary` widget writes a sentence
instead, and the same sentence as HTML: JupyterLab still draws the live widget (its view outranks both),
while a static viewer shows what the widget was, what state it was in, and that it needs a live kernel.
"""

from __future__ import annotations

import textwrap
from html import escape
from typing import Any

from ..i18n import N_, _

LIVE = N_("(an interactive widget: run the notebook in Jupyter to use it)")  # shown translated: _(LIVE)


class StaticSummary:
    """Mixin for the course's widgets: a readable text/plain and text/html beside the widget view."""

    def summary(self) -> str:
        """One or two sentences: which widget, on what, in which state."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return textwrap.fill(f"{self.summary()} {_(LIVE)}", 110)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        if data is None:
            return None
        text = self.summary()
        data["text/plain"] = textwrap.fill(f"{text} {_(LIVE)}", 110)  # no line wider than the notebook
        data["text/html"] = (f"<div class='smtplab-widget-summary' style='border:1px dashed #8c959f;padding:4px 8px'>"
                             f"{escape(text)} <i>{escape(_(LIVE))}</i></div>")
        return data
