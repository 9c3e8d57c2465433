"""The widgets, driven headless as a learner would: set values, click, read what is shown."""

from __future__ import annotations

import pytest

import smtplab

widgets = pytest.importorskip("smtplab.widgets")


def test_console_mail_before_ehlo_shows_the_real_reply(lab: smtplab.Lab) -> None:
    console = widgets.HandshakeConsole(lab, "mx1.example.net")
    assert "220 mx1.example.net" in console.reply_html.value
    console.line.value = "MAIL FROM:<x@example.org>"
    console.send_button.click()
    assert "503 5.5.1" in console.reply_html.value
    assert "Bad sequence of commands" in console.reply_html.value
    assert "#cf222e" in console.reply_html.value, "5xx replies are red"
    assert "C: MAIL FROM:&lt;x@example.org&gt;" in console.transcript_html.value
    assert console.buttons["EHLO"].button_style == "info", "EHLO is suggested next"


def test_console_walks_a_whole_submission(lab: smtplab.Lab) -> None:
    console = widgets.HandshakeConsole(lab, "smtp.example.org")
    for command in ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA"]:
        console.buttons[command].click()
        assert console.line.value.startswith(command), console.line.value
        console.send_button.click()
    assert "354" in console.reply_html.value
    assert console.buttons["message"].button_style == "info"
    console.buttons["message"].click()
    console.buttons["."].click()
    assert "250 2.0.0" in console.reply_html.value and "queued as" in console.reply_html.value
    console.buttons["QUIT"].click()
    console.send_button.click()
    assert "221" in console.reply_html.value
    lab.wait_for_delivery()
    assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["typed by hand"]
    console.line.value = "NOOP"
    console.send_button.click()
    assert "closed" in console.status_html.value
    console.reset_button.click()
    assert "220 smtp.example.org" in console.reply_html.value


def test_console_reports_a_down_host(lab: smtplab.Lab) -> None:
    lab.host("mx2").down()
    console = widgets.HandshakeConsole(lab, "mx2.example.net")
    assert "cannot connect" in console.status_html.value


def test_mx_explorer_highlights_the_first_choice(lab: smtplab.Lab) -> None:
    explorer = widgets.MxExplorer(lab)
    explorer.lookup_button.click()
    assert [r.exchange for r in explorer.records] == ["mx1.example.net", "mx2.example.net"]
    assert "font-weight:bold'><td style='padding:2px 8px'>10</td><td style='padding:2px 8px'>mx1.example.net" \
        in explorer.result_html.value
    assert "example.net. 300 IN MX 10 mx1.example.net." in explorer.raw_html.value
    assert "dig @" in explorer.raw_html.value
    explorer.domain.value = "missing.example.net"
    explorer.lookup_button.click()
    assert "NXDOMAIN" in explorer.result_html.value
    explorer.domain.value = "imap.example.net"
    explorer.lookup_button.click()
    assert "implicit MX" in explorer.result_html.value


def test_mx_explorer_real_dns_offline_says_so(lab: smtplab.Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    from smtplab.widgets import mx_explorer

    real = mx_explorer.lookup_mx
    monkeypatch.setattr(mx_explorer, "lookup_mx",
                        lambda domain, timeout: real(domain, nameservers=["127.0.0.1"], port=port, timeout=0.3))
    explorer = widgets.MxExplorer(lab, "example.com")
    explorer.real.value = True
    explorer.lookup_button.click()
    silent.close()
    assert "no DNS server answered" in explorer.result_html.value


def test_tracker_shows_delivered_and_bounced(lab: smtplab.Lab) -> None:
    tracker = widgets.RelayTracker(lab)
    tracker.to.value = "bob@example.net, nobody@example.net"
    tracker.send_button.click()
    table = tracker.queue_html.value
    bob_row = table.split("bob@example.net")[1].split("</tr>")[0]
    nobody_row = table.split("nobody@example.net")[1].split("</tr>")[0]
    assert ">delivered<" in bob_row and ">bounced<" in nobody_row
    assert "550 5.1.1" in nobody_row


def test_tracker_faults_and_clock(lab: smtplab.Lab) -> None:
    tracker = widgets.RelayTracker(lab, to="bob@example.net")
    tracker.faults["mx1.example.net"].value = "down"
    tracker.faults["mx2.example.net"].value = "4xx"
    assert not lab.host("mx1").is_up and len(lab.host("mx2").faults) == 1
    tracker.send_button.click()
    assert ">deferred<" in tracker.queue_html.value
    assert tracker.pending.value == 1 and "next retry in" in tracker.clock_html.value
    tracker.faults["mx2.example.net"].value = "ok"
    assert lab.host("mx2").faults == ()
    tracker.step.value = "5m"
    tracker.advance_button.click()
    assert ">delivered<" in tracker.queue_html.value and tracker.pending.value == 0
    tracker.faults["mx1.example.net"].value = "ok"
    assert lab.host("mx1").is_up


def test_mailbox_viewer_lists_and_opens_with_hops(lab: smtplab.Lab) -> None:
    lab.send("alice@example.org", "bob@example.net", "For the viewer", "Hello from alice")
    viewer = widgets.MailboxViewer(lab, "bob@example.net")
    viewer.login_button.click()
    assert "INBOX" in viewer.folders.options
    [(label, uid)] = viewer.messages.options
    assert label.startswith("●") and "For the viewer" in label
    viewer.messages.value = uid
    shown = viewer.message_html.value
    assert "Hello from alice" in shown
    assert shown.index("smtp.example.org</td>") < shown.index("mx1.example.net</td>"), "hops oldest first"
    assert "ESMTPSA" in shown
    assert "UID FETCH" in viewer.imap_html.value and "LOGIN" in viewer.imap_html.value
    viewer.refresh_button.click()
    assert viewer.messages.options[0][0].startswith(" "), "opened messages are \\Seen"
    lab.send("alice@example.org", "bob@example.net", "Second", "new mail")
    viewer.refresh_button.click()
    assert len(viewer.messages.options) == 2
    viewer.logout()
