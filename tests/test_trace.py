"""lab.trace: one ordered record, filterable per connection and per message, readable as a transcript."""

from __future__ import annotations

import smtplab


def test_events_are_ordered_and_complete(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "bob@example.net", "Trace me", "hello")
    events = lab.trace.events()
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert {e.protocol for e in events} >= {"smtp", "dns", "queue"}
    submission = [e for e in events if e.port_name == "submission"]
    assert submission[0].kind == "connect"
    assert submission[1].direction == "S" and submission[1].text.startswith("220 smtp.example.org")
    assert submission[-1].kind == "close"
    assert all(e.server.startswith(lab.host("smtp.example.org").address + ":") for e in submission)


def test_filter_per_connection_and_transcript(lab: smtplab.Lab) -> None:
    s = lab.session("mx1")
    s.ehlo("student.local")
    s.quit()
    [conn] = lab.trace.connections("smtp")
    events = lab.trace.filter(conn=conn)
    text = lab.trace.transcript(events)
    lines = text.splitlines()
    assert lines[0].startswith(f"--- {conn}: client -> mx1.example.net (smtp, ")
    assert "C: EHLO student.local" in lines
    assert "S: 250-mx1.example.net" in lines
    assert lines.index("S: 221 2.0.0 Bye") == lines.index("C: QUIT") + 1


def test_relay_connection_names_the_sending_host(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "bob@example.net", "who", "is calling")
    relay = [e for e in lab.trace.filter(host="mx1.example.net") if e.kind == "connect"]
    assert relay and relay[0].peer == "smtp.example.org"


def test_since_mark_and_subscribe(lab: smtplab.Lab) -> None:
    seen: list[smtplab.TraceEvent] = []
    lab.trace.subscribe(seen.append)
    mark = lab.mark()
    lab.lookup_mx("example.org")
    lab.trace.unsubscribe(seen.append)
    later = lab.trace.since(mark)
    assert later and later == seen
    assert all(e.seq > mark for e in later)


def test_starttls_is_marked_in_the_trace(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "bob@example.net", "secret", "text")
    events = lab.trace.filter(host="smtp.example.org")
    tls_at = next(i for i, e in enumerate(events) if e.kind == "tls")
    assert all(not e.tls for e in events[:tls_at] if e.kind == "line")
    assert all(e.tls for e in events[tls_at:] if e.kind == "line" and e.port_name == "submission"
               and e.conn == events[tls_at].conn)


def test_data_collapses_to_a_summary(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "bob@example.net", "Long", "\n".join(f"line {i}" for i in range(100)))
    data = lab.trace.filter(kind="data")
    assert data and data[0].summary.startswith("<message: ")
    assert "C: ... (" in data[0].to_text(), "long bodies are cut in transcripts"
