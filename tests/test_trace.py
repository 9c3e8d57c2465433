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


def test_the_trace_is_a_ring_with_a_marker_where_it_dropped() -> None:
    from smtplab.trace.events import Dropped
    from smtplab.trace.ring import MAX_EVENTS

    seen: list[smtplab.TraceEvent] = []
    trace = smtplab.Trace(lambda: 0.0, max_events=100)
    trace.subscribe(seen.append)
    for n in range(1, 251):
        trace.record("smtp", "line", "mx", f"line {n}", direction="C")
    events = trace.events()
    assert len(events) <= 101 and len(seen) == 250, "every event was seen live; the trace keeps the newest"
    marker, *kept = events
    assert isinstance(marker.payload, Dropped) and marker.kind == "dropped"
    assert marker.payload.count == trace.dropped == 250 - len(kept)
    assert "dropped" in marker.text
    assert [e.text for e in kept] == [f"line {n}" for n in range(251 - len(kept), 251)]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert trace.since(marker.seq) == kept
    assert MAX_EVENTS >= 100 * 759, "far above what the busiest notebook records (759 events, measured)"


def test_reply_and_command_lines_are_parsed_from_the_wire_text() -> None:
    from smtplab.trace.events import (
        ImapCommand,
        ImapResponse,
        SmtpCommand,
        SmtpReply,
        parse_imap_line,
        parse_smtp_command,
        parse_smtp_reply,
    )

    assert parse_smtp_reply("250-2.1.0 Sender OK") == SmtpReply(250, "2.1.0", "Sender OK", True)
    assert parse_smtp_reply("250 mx1.example.net") == SmtpReply(250, "", "mx1.example.net", False)
    assert parse_smtp_reply("550 4.1.1 odd") == SmtpReply(550, "", "4.1.1 odd", False), "class must match (RFC 3463)"
    assert parse_smtp_reply("221") == SmtpReply(221, "", "", False)
    assert parse_smtp_reply("hello") is None and parse_smtp_reply("2500 x") is None
    assert parse_smtp_command("mail FROM:<a@b>") == SmtpCommand("MAIL", "FROM:<a@b>")
    assert parse_imap_line("C", "a1 uid fetch 1:* (FLAGS)") == ImapCommand("a1", "UID FETCH", "1:* (FLAGS)")
    assert parse_imap_line("S", "a1 OK done") == ImapResponse("a1", "OK", "done")
    assert parse_imap_line("S", "* 3 EXISTS") == ImapResponse("*", "", "3 EXISTS")
    assert parse_imap_line("S", "+ go ahead") == ImapResponse("+", "", "go ahead")
    event = smtplab.Trace(lambda: 0.0).record("smtp", "line", "mx", "354 End data", direction="S")
    assert event.payload == SmtpReply(354, "", "End data")


def test_transcript_cuts_lines_wider_than_a_notebook_unless_full(lab: smtplab.Lab) -> None:
    """The DKIM key's TXT record (~460 characters) fills a notebook's width many times over."""
    mark = lab.mark()
    lab.dig("lab._domainkey.example.org", "TXT")
    events = lab.trace.since(mark)
    record = next(e.to_text() for e in events if e.kind == "answer")
    assert len(record) > 400
    folded = lab.trace.transcript(events).splitlines()
    assert max(len(line) for line in folded) <= 110
    cut = next(line for line in folded if "DKIM1" in line)
    assert cut.startswith(record[:60]) and cut.endswith(f"[{len(record) - 84} more characters]")
    assert record in lab.trace.transcript(events, full=True).splitlines()


def test_transcript_folds_ehlo_answers_and_long_header_fields_unless_full(lab: smtplab.Lab) -> None:
    sent = lab.send("alice@example.org", "bob@example.net", "Folded", "Hello.\n")
    events = lab.trace.for_message(sent.message_id)
    folded, full = lab.trace.transcript(events).splitlines(), lab.trace.transcript(events, full=True).splitlines()
    assert len(folded) < len(full) - 20
    # An EHLO answer: its first line as it came, then the other lines' texts listed (not shown as wire lines).
    first = folded.index("S: 250-smtp.example.org")
    assert folded[first + 1].startswith("   … 8 more lines: SIZE 10485760 · 8BITMIME") and "STARTTLS" in folded[first + 1]
    assert "S: 250-STARTTLS" in full and "S: 250-STARTTLS" not in folded and "S: 250 HELP" not in folded
    # The relay's DKIM-Signature (8 lines) keeps its first line; Received (3 lines) is left whole.
    signature = next(n for n, line in enumerate(folded) if line.startswith("C: DKIM-Signature: v=1;"))
    assert folded[signature + 1].startswith("    … (") and "more lines of this header field" in folded[signature + 1]
    assert not any(" b=" in line for line in folded) and any(" b=" in line for line in full)
    assert sum(line.startswith("C: \tby smtp.example.org") for line in folded) == 1
