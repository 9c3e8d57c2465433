"""Widgets in a static view (GitHub, nbviewer, a PDF export) read as a sentence, not as a box of boxes."""

from __future__ import annotations

import pytest

import smtplab
from smtplab.widgets import HandshakeConsole, MailboxViewer, MxExplorer, RelayTracker


@pytest.mark.parametrize(("make", "phrases"), [
    (lambda lab: HandshakeConsole(lab, "mx1.example.net"), ["Handshake console", "mx1.example.net (smtp)"]),
    (lambda lab: MxExplorer(lab, "example.net"), ["MX explorer", "example.net"]),
    (lambda lab: RelayTracker(lab), ["Relay tracker", "alice@example.org"]),
    (lambda lab: MailboxViewer(lab, "bob@example.net"), ["Mailbox viewer", "bob@example.net", "not logged in"]),
])
def test_a_saved_widget_output_reads_as_a_sentence(lab: smtplab.Lab, make, phrases) -> None:  # type: ignore[no-untyped-def]
    bundle = make(lab)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle, "live Jupyter still gets the widget"
    assert max(len(line) for line in bundle["text/plain"].splitlines()) <= 120
    for mime in ("text/plain", "text/html"):
        text = " ".join(bundle[mime].split())
        assert "children=" not in text and "Box(" not in text, text
        assert "run the notebook in Jupyter" in text
        for phrase in phrases:
            assert phrase in text, (phrase, text)


def test_the_summary_follows_the_widgets_state(lab: smtplab.Lab) -> None:
    explorer = MxExplorer(lab, "example.net")
    explorer.lookup()
    assert "10 mx1.example.net, 20 mx2.example.net" in " ".join(explorer._repr_mimebundle_()["text/plain"].split())
