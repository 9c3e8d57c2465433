"""The notebooks' output-width check (tests/output_width.py) finds what is too wide, and names the cell."""

from __future__ import annotations

import base64
import struct
import zlib

import nbformat
from output_width import overwide


def png(width: int) -> str:
    """A 1-pixel-high grey PNG `width` pixels wide."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = zlib.compress(b"\x00" + b"\x80" * width)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


def notebook(*outputs: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for n, output in enumerate(outputs):
        cell = nbformat.v4.new_code_cell("x", id=f"c{n}")
        cell.outputs = [nbformat.from_dict(output)]
        nb.cells.append(cell)
    return nb


def test_wide_text_lines_and_pictures_are_found_with_their_cell() -> None:
    svg = '<svg width="{}pt" height="50pt" viewBox="0 0 1 1"></svg>'
    nb = notebook(
        {"output_type": "stream", "name": "stdout", "text": "short\n" + "x" * 111 + "\n"},
        {"output_type": "stream", "name": "stdout", "text": "y" * 110 + "\n"},
        {"output_type": "display_data", "metadata": {},
         "data": {"text/html": f"<div>{svg.format(700)}</div><pre>{'z' * 120}</pre>",
                  "image/svg+xml": svg.format(700), "text/plain": "<Diagram>"}},
        {"output_type": "display_data", "metadata": {}, "data": {"image/svg+xml": svg.format(675)}},
        {"output_type": "display_data", "metadata": {}, "data": {"image/png": png(901), "text/plain": "w" * 200}},
    )
    problems = overwide(nb)
    assert problems == ["cell 0 (id c0): a 111-character line: " + repr("x" * 60) + "…",
                        "cell 2 (id c2): a 120-character line: " + repr("z" * 60) + "…",
                        "cell 2 (id c2): a SVG picture 933 px wide",
                        "cell 4 (id c4): a PNG picture 901 px wide"]
    # A known cell's text may be wide (its reason is written down); its pictures may not.
    assert overwide(nb, known={"c0": "raw on purpose", "c2": "raw on purpose"}) == [
        "cell 2 (id c2): a SVG picture 933 px wide", "cell 4 (id c4): a PNG picture 901 px wide"]
