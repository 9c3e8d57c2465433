"""One exception root: every error a learner meets through the public API is an SmtpLabError saying what to do."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

import smtplab
from smtplab import widgets
from smtplab.clock import VirtualClock, parse_duration
from smtplab.errors import (
    BadDuration,
    HostUnreachable,
    LabNotRunning,
    LabTimeout,
    SmtpLabError,
    UnknownConnection,
    UnknownMessage,
)
from smtplab.loop import LoopThread


def test_send_with_the_submission_host_down(lab: smtplab.Lab) -> None:
    lab.host("smtp.example.org").down()
    with pytest.raises(HostUnreachable) as caught:
        lab.send("alice@example.org", "bob@example.net", "x", "y")
    assert isinstance(caught.value, SmtpLabError)
    assert ".up()" in str(caught.value)


def test_relay_tracker_says_the_submission_host_is_down(lab: smtplab.Lab) -> None:
    tracker = widgets.RelayTracker(lab, to="bob@example.net")
    lab.host("smtp.example.org").down()
    tracker.send_button.click()
    assert "submission host is down" in tracker.status_html.value


def test_unknown_queue_id_and_connection(lab: smtplab.Lab) -> None:
    with pytest.raises(UnknownMessage, match="lab.queue") as caught:
        lab.queue_item("NOSUCHID")
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, SmtpLabError)
    with pytest.raises(UnknownConnection, match=r"lab.trace.connections\('smtp'\)"):
        lab.wire("smtp-999")


def test_messages_after_stop() -> None:
    lab = smtplab.start()
    lab.stop()
    with pytest.raises(LabNotRunning, match="smtplab.start"):
        lab.messages("bob@example.net")


def test_clock_reads_durations_as_a_learner_writes_them() -> None:
    clock = VirtualClock()
    clock.advance("5 minutes")
    assert clock.offset == 300
    clock.advance(timedelta(hours=1))
    clock.advance(30)
    assert clock.offset == 300 + 3600 + 30
    with pytest.raises(BadDuration, match="'5m'"):
        clock.advance("5 fortnights")
    assert clock.offset == 3930, "a refused duration moves nothing"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("5m", 300), ("5 minutes", 300), ("1h30m", 5400), ("2d", 172800), ("2 hours 15 min", 8100),
    ("1.5h", 5400), ("30 s", 30), ("1 day", 86400), ("1w", 604800), (" 10 Min ", 600),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5 parsecs", "5 3m", "nan", "inf", "five minutes", "5m!"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(BadDuration):
        parse_duration(text)


def test_a_timed_out_call_is_cancelled() -> None:
    loop = LoopThread("test-timeout")
    stopped = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    try:
        with pytest.raises(LabTimeout, match="cancelled"):
            loop.call(forever(), timeout=0.01)
        assert stopped.wait(30), "the coroutine was cancelled on the loop"
    finally:
        loop.close()


def test_no_library_hook_is_set_at_import() -> None:
    """pyspf, authheaders and dkimpy are left alone by `import smtplab`; the lab sets their hooks on first use."""
    import subprocess
    import sys

    code = ("import spf, dkim, authheaders, authheaders.dmarc_lookup as d; "
            "before = (spf.DNSLookup, d.get_org_domain, authheaders.get_org_domain, dkim.RSASSA_PKCS1_v1_5_sign, "
            "dkim.RSASSA_PKCS1_v1_5_verify); import smtplab, smtplab.lab, smtplab.auth.mailauth; "
            "after = (spf.DNSLookup, d.get_org_domain, authheaders.get_org_domain, dkim.RSASSA_PKCS1_v1_5_sign, "
            "dkim.RSASSA_PKCS1_v1_5_verify); print(all(a is b for a, b in zip(before, after)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True", result.stderr


def test_a_library_hook_that_is_not_the_expected_function_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import spf

    from smtplab.auth import mailauth
    from smtplab.errors import LibraryMismatch

    monkeypatch.setattr(mailauth, "_hooks_set", False)
    monkeypatch.setattr(spf, "DNSLookup", lambda *a, **k: [])  # someone else's patch
    with pytest.raises(LibraryMismatch, match="spf.DNSLookup"):
        mailauth._set_hooks()


def test_dns_errors_carry_the_rcode_not_only_a_sentence(lab: smtplab.Lab) -> None:
    from smtplab.errors import DnsLookupError

    with pytest.raises(DnsLookupError) as refused:
        lab.lookup_mx("gmail.com")
    assert refused.value.rcode == "REFUSED"
    with pytest.raises(DnsLookupError) as missing:
        lab.lookup_mx("nowhere.example.net")
    assert missing.value.rcode == "NXDOMAIN"


def test_a_session_or_imap_to_a_host_that_is_down(lab: smtplab.Lab) -> None:
    lab.host("mx1.example.net").down()
    with pytest.raises(HostUnreachable, match=r"lab.host\('mx1.example.net'\).up\(\)"):
        lab.session("mx1")
    lab.host("imap.example.net").down()
    with pytest.raises(HostUnreachable, match="IMAP"):
        lab.imap("bob@example.net")
