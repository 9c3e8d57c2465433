"""Check that an executed notebook's outputs fit the notebook: no text line wider than the page, no picture
wider than a notebook cell (STYLE.md: "Outputs fit the notebook").

Used by tests/test_notebooks.py after executing each notebook; `python tests/output_width.py NB.ipynb...`
lists the offenders of executed notebooks.
"""

from __future__ import annotations

import base64
import html
import re
import struct
import sys
from typing import Any

MAX_CHARS = 110  # characters of one output line (a notebook cell shows ~110-120 at the default font)
MAX_PIXELS = 900  # a notebook cell's width in CSS pixels (JupyterLab, default layout)
PT = 4 / 3  # CSS pixels per point (SVG widths are given in pt)

# Cells whose text may still be wider, with why: a raw form that is the lesson, or a line made by a part of the
# package that does not fold yet (named, to fix at its source; then the entry goes). Pictures are never exempt.
KNOWN_WIDE: dict[str, dict[str, str]] = {
    "00-welcome.ipynb": {"00-15": "the notebook prints host.ports dicts on one line",
                         "00-28": "Received: headers unfolded on purpose (one hop a line)"},
    "01-smtp-handshake.ipynb": {"01-38": "smtplab.explain() meanings (replies)", "01-42": "reply.meaning (replies)",
                                "01-44": "reply.explain() (replies)",
                                "01-n05": "Authentication-Results unfolded on purpose",
                                "01-63": "smtplib's own debug output: its raw form is the lesson"},
    "02-mx-lookup.ipynb": {"02-38": "a printed list of MX names", "02-48": "queue event texts (relay)"},
    "03-relay-and-delivery.ipynb": {"nb03-14": "smtplab.explain() (replies)", "nb03-17": "Received: headers",
                                    "nb03-43": "queue event texts (relay)", "nb03-62": "the DSN's human-readable part"},
    "04-imap.ipynb": {"nb04-10": "imaplib's capabilities tuple", "nb04-14": "the IMAP wire as imaplib returns it",
                      "nb04-46": "a curl command line to copy"},
    "05-auth-tls.ipynb": {"05-c2": "a capture file path and its packet count (pcap)",
                          "05-56": "imaplib's LIST answer", "05-60": "the DMARC reject reply (policy)"},
    "06-anti-spam.ipynb": {"06-05": "blocklist TXT answers", "06-07": "a 554 reply with its reason (dnsbl)",
                           "06-09": "spam rule descriptions (spam)", "06-21": "bare-LF replies (handlers)"},
    "07-capstone.ipynb": {"06-08": "queue last replies", "06-33": "a DSN block", "06-35": "explain() and fault notes",
                          "06-49": "queue last replies", "06-20": "queue event texts (relay)",
                          "07-s2": "the solution's reveal() of the mystery (exercises)"},
    "08-wireshark.ipynb": {"75fda89a": "a wireshark command line to copy", "ef5589ad": "tshark's listing",
                           "3aa2f8b6": "tshark's listing", "95dc98fc": "tshark's listing",
                           # the solution's copy of the same cells has other ids
                           "b37cc4a0": "a wireshark command line to copy", "ec989c28": "tshark's listing",
                           "f103dbc7": "tshark's listing", "6232460d": "tshark's listing"},
    "09-the-message.ipynb": {"ce74e8ba": "a table of connections", "0a4a010b": "a table of connections"},
    "10-your-own-client.ipynb": {"fc337c02": "raw IMAP bytes: the lesson", "a17967c1": "raw IMAP bytes: the lesson"},
    "12-tls-downgrade.ipynb": {"c04": "RecipientStatus repr", "c13": "the MTA-STS reply (tlspolicy)",
                               "c15": "RecipientStatus repr", "c17": "TLS-RPT texts", "c21": "the DANE reply (dane)",
                               "c22": "DANE notes (dane)"},
}

_SVG_WIDTH = re.compile(r"<svg\b[^>]*?\bwidth=\"([0-9.]+)(pt|px)?\"", re.S)
_PRE = re.compile(r"<pre\b[^>]*>(.*?)</pre>", re.S)
_TAG = re.compile(r"<[^>]+>")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _png_width(data: str) -> int:
    raw = base64.b64decode(data)
    return struct.unpack(">I", raw[16:20])[0] if raw[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _lines(output: Any) -> list[str]:
    """The text lines a learner reads in one output (stream, text/plain, or the <pre> blocks of HTML)."""
    if output.get("output_type") == "stream":
        return _text(output.get("text", "")).splitlines()
    data = output.get("data", {})
    if "text/html" in data:  # what Jupyter shows; text/plain is then only the fallback
        blocks = _PRE.findall(_text(data["text/html"]))
        return [html.unescape(_TAG.sub("", line)) for block in blocks for line in block.splitlines()]
    if "text/plain" in data and not any(k.startswith("image/") for k in data):
        return _text(data["text/plain"]).splitlines()
    return []


def _width(output: Any) -> tuple[str, float] | None:
    """The widest picture of one output (a diagram comes as SVG and as HTML holding the same SVG)."""
    data = output.get("data", {})
    found: list[tuple[str, float]] = []
    for kind in ("text/html", "image/svg+xml"):
        if kind in data:
            found = [("SVG", float(number) * (PT if unit in ("pt", "") else 1))
                     for number, unit in _SVG_WIDTH.findall(_text(data[kind]))]
            break
    if "image/png" in data:
        found.append(("PNG", _png_width(_text(data["image/png"]))))
    return max(found, key=lambda item: item[1], default=None)


def overwide(nb: Any, max_chars: int = MAX_CHARS, max_pixels: int = MAX_PIXELS,
             known: dict[str, str] | None = None) -> list[str]:
    """Describe every output line over `max_chars` and every picture over `max_pixels` wide, cell named.

    `known`: cell id -> why its text may be wider (see KNOWN_WIDE); its pictures are checked all the same.
    """
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        where = f"cell {index} (id {cell.get('id', '?')})"
        for output in cell.get("outputs", []):
            for line in _lines(output) if cell.get("id") not in (known or {}) else ():
                if len(line) > max_chars:
                    problems.append(f"{where}: a {len(line)}-character line: {line[:60]!r}…")
            picture = _width(output)
            if picture is not None and picture[1] > max_pixels:
                problems.append(f"{where}: a {picture[0]} picture {picture[1]:.0f} px wide")
    return problems


if __name__ == "__main__":
    import nbformat

    for name in sys.argv[1:]:  # every offender, the known ones too
        for problem in overwide(nbformat.read(name, as_version=4)):
            print(f"{name}: {problem}")
