"""The trace's own words follow the learner's language; the protocol lines stay exactly as they crossed the wire."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import smtplab
from smtplab.i18n import N_, LazyText, lazy, set_language, use_language
from smtplab.trace.events import Dropped, SmtpCommand, SmtpReply
from smtplab.trace.ring import Trace

# Events that are the lab's description of what happened, not a line of a protocol or DNS data.
DESCRIPTIONS = {"connect", "close", "tls", "state", "queue", "fault", "error", "refused", "dropped"}
WIRE = ("smtp", "imap", "pop3")


@pytest.fixture(autouse=True)
def _language_forgotten() -> Iterator[None]:
    """start(lang=...) chooses the language for the process: later tests must not inherit it."""
    yield
    set_language(None)


def _scenario(lang: str) -> dict[str, Any]:
    """Submission, relay, MX and an IMAP read, in a lab speaking `lang`; what a learner would look at."""
    with smtplab.start(lang=lang) as lab:
        sent = lab.send("alice@example.org", "bob@example.net", "Hola", "el cuerpo\n")
        imap = lab.imap("bob@example.net")
        imap.select("INBOX")
        imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        imap.logout()
        ladder = lab.ladder(sent)
    # Read once the lab has stopped: every connection's close is in the trace by then.
    events = lab.trace.events()
    shown = lab.trace.transcript(full=True)
    rows = [e.to_text(10**9) for e in events]
    with use_language("en"):
        english = lab.trace.transcript(full=True)
        english_rows = [e.to_text(10**9) for e in events]
    return {"events": events, "shown": shown, "english": english, "rows": rows, "english_rows": english_rows,
            "ladder": ladder.text}


def _shape(event: smtplab.TraceEvent) -> tuple[object, ...]:
    """What an event is, without what changes between runs (ports, ids, dates, signatures)."""
    payload = event.payload
    if isinstance(payload, SmtpCommand):
        return event.protocol, event.port_name, "C", payload.verb
    if isinstance(payload, SmtpReply):
        return event.protocol, event.port_name, "S", payload.code, payload.enhanced
    return event.protocol, event.port_name, event.kind, event.direction, type(payload).__name__


def test_a_spanish_lab_describes_in_spanish_and_leaves_the_wire_alone() -> None:
    spanish = _scenario("es")
    described = [e for e in spanish["events"] if e.kind in DESCRIPTIONS]
    assert {e.protocol for e in described} >= {"smtp", "imap", "queue"}
    untranslated = [e.text for e in described if e.shown == e.text]
    assert not untranslated, f"descriptions left in English: {untranslated}"
    assert "*  conexión desde " in spanish["shown"] and "*  connection from " in spanish["english"]
    assert "--- cola del relay en smtp.example.org" in spanish["shown"]
    # The same events shown in either language: every SMTP/IMAP line as it crossed the wire, byte for byte.
    for event, row, english_row in zip(spanish["events"], spanish["rows"], spanish["english_rows"], strict=True):
        if event.protocol in WIRE and event.kind in ("line", "data"):
            assert not isinstance(event.text, LazyText)
            assert row == english_row == event.to_text(10**9)
            assert row.startswith(f"{event.direction}: {event.text.split(chr(10))[0]}")
    assert sum(row.startswith("C: ") for row in spanish["rows"]) > 20
    # A DNS question keeps its name and type as asked; only "over udp" is the lab's word.
    assert any(e.protocol == "dns" and e.kind == "query" and e.shown.endswith("MX? por udp")
               for e in spanish["events"])
    # The ladder reads typed fields: its arrows are the same commands, its notes in Spanish.
    assert "mail FROM:<alice@example.org>" in spanish["ladder"] and "250 2.1.0 Sender OK" in spanish["ladder"]
    assert "[smtp.example.org] firmado con DKIM para example.org (selector lab)" in spanish["ladder"]
    assert "signed with DKIM" not in spanish["ladder"]

    english = _scenario("en")
    # The same story in English: the same events (threads interleave them differently), described in English.
    assert Counter(_shape(e) for e in english["events"] if e.protocol != "dns") == \
        Counter(_shape(e) for e in spanish["events"] if e.protocol != "dns")
    assert all(e.shown == e.text for e in english["events"])
    assert "*  signed with DKIM for example.org (selector lab)" in english["shown"]
    assert "[smtp.example.org] signed with DKIM for example.org (selector lab)" in english["ladder"]
    # An event's text stays English whatever the language (code that reads .text keeps working).
    assert [str(e.text) for e in described if e.kind == "connect"][0].startswith("connection from ")


def test_a_description_is_rendered_when_shown_not_when_recorded() -> None:
    trace = Trace(lambda: 0.0)
    with use_language("es"):
        event = trace.record("lab", "state", "mx1", lazy(N_("{host} is down: connections are refused"), host="mx1"))
    assert event.text == "mx1 is down: connections are refused"
    assert event.to_text() == "*  mx1 is down: connections are refused"
    with use_language("es"):
        assert event.to_text() == "*  mx1 está caído: se rechazan las conexiones"
        assert event.summary == "mx1 está caído: se rechazan las conexiones"
    again = pickle.loads(pickle.dumps(event.text))
    assert isinstance(again, LazyText) and again == event.text


def test_the_dropped_marker_speaks_the_learners_language() -> None:
    trace = Trace(lambda: 0.0, max_events=20)
    for n in range(25):
        trace.record("smtp", "line", "mx1", f"NOOP {n}", direction="C")
    marker = trace.events()[0]
    assert isinstance(marker.payload, Dropped)
    count = marker.payload.count
    assert marker.text.startswith(f"{count} older events were dropped here")
    with use_language("es"):
        assert marker.shown.startswith(f"aquí se descartaron {count} eventos antiguos")
        assert "C: NOOP 24" in trace.transcript()  # a protocol line is never translated


def test_a_fault_reads_in_the_learners_language_and_keeps_its_reply_as_sent() -> None:
    from smtplab.net.faults import Fault

    fault = Fault(1, "mx1.example.net", "DATA", reply="451 4.3.0 Try later", delay=2, probability=0.5,
                  recipient="bob@example.net")
    trace = Trace(lambda: 0.0)
    event = trace.record("smtp", "fault", "mx1.example.net", lazy(N_("injected fault fires: {fault}"),
                                                                   fault=fault.describe()))
    assert event.text == ("injected fault fires: mx1.example.net at DATA for <bob@example.net>: stall 2 s, then "
                          "answer '451 4.3.0 Try later' with probability 0.5")
    with use_language("es"):
        assert event.shown == ("se dispara un fallo inyectado: mx1.example.net en DATA para <bob@example.net>: "
                               "esperar 2 s y luego responder '451 4.3.0 Try later' con probabilidad 0.5")


def test_a_message_body_is_summarized_in_the_learners_language_and_shown_as_sent() -> None:
    from smtplab.trace.events import SmtpData

    trace = Trace(lambda: 0.0)
    body = "\n".join(f"línea {n}" for n in range(50))
    event = trace.record("smtp", "data", "mx1", body, direction="C",
                         payload=SmtpData(len(body.encode()), 50, len(body.encode())))
    with use_language("es"):
        assert event.summary == f"<mensaje: 50 líneas, {len(body.encode())} bytes>"
        shown = event.to_text(max_data_lines=40).split("\n")
    assert shown[:40] == [f"C: línea {n}" for n in range(40)]  # the body as it was sent
    assert shown[40] == "C: ... (10 líneas más)"
    assert event.to_text(max_data_lines=40).split("\n")[40] == "C: ... (10 more lines)"


def test_the_labs_note_on_an_unfinished_line_is_translated_and_the_line_kept_as_sent() -> None:
    import socket
    import threading

    with smtplab.start(lang="es") as lab:
        mx = lab.host("mx1.example.net")
        closed = threading.Event()

        def watch(event: smtplab.TraceEvent) -> None:
            if event.host == mx.name and event.kind == "close":
                closed.set()

        lab.trace.subscribe(watch)
        with socket.create_connection((mx.address, mx.ports["smtp"])) as client:
            client.recv(512)  # the 220 greeting
            client.sendall(b"EHLO sin-fin")
        assert closed.wait(30)
        lab.trace.unsubscribe(watch)
        [unfinished] = [e for e in lab.trace.filter(host=mx.name, kind="line") if e.direction == "C"]
    assert unfinished.text == "EHLO sin-fin  (no line end: connection closed)"
    with use_language("es"):
        assert unfinished.to_text() == "C: EHLO sin-fin  (sin fin de línea: conexión cerrada)"
