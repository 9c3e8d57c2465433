"""When the disk refuses a write, the servers (MX and submission) say so with the right reply, keep nothing
half-written, and go on serving: a full disk is a temporary failure (452 4.3.1, the sender retries), a message larger
than a file may be is a permanent one (552 5.3.4)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from smtplab.mail.handlers import InboundHandler
from smtplab.net import replies

# A lab in a process whose files may not grow past 256 KB (RLIMIT_FSIZE: the kernel answers a write
# past it with EFBIG, as a file system's size limit would). A 400 KB message to mx1, then a small one.
LIMITED = r"""
import json, os, resource, smtplib
import smtplab

resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
head = ("From: Dora <dora@example.test>\r\nTo: bob@example.net\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        "Message-ID: <{0}@example.test>\r\nSubject: {0}\r\n\r\n")
out = {}
with smtplab.start() as lab:
    mx = lab.host("mx1.example.net")
    with smtplib.SMTP(mx.address, mx.ports["smtp"], timeout=30) as client:
        try:
            client.sendmail("dora@example.test", ["bob@example.net"], head.format("big") + ("x" * 78 + "\r\n") * 5000)
        except smtplib.SMTPDataError as exc:
            out["big"] = [exc.smtp_code, exc.smtp_error.decode()]
        client.sendmail("dora@example.test", ["bob@example.net"], head.format("small") + "fits\r\n")
        out["small"] = "accepted"
    try:  # through submission: the queue's spool file cannot hold it either
        lab.send("alice@example.org", "bob@example.net", "big", "y" * 300_000)
    except smtplab.SendError as exc:
        out["submitted"] = str(exc)
    out["spool"] = sorted(os.listdir(os.path.join(lab.directory, "queue")))
    root = os.path.join(lab.directory, "mail", "example.net", "bob")
    out["tmp"] = os.listdir(os.path.join(root, "tmp"))
    out["subjects"] = [m["Subject"] for m in lab.messages("bob@example.net")]
print(json.dumps(out))
"""


def test_a_message_larger_than_a_file_may_be_is_refused_whole_and_the_mx_goes_on() -> None:
    done = subprocess.run([sys.executable, "-c", LIMITED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["big"] == [552, replies.TOO_BIG_FOR_SYSTEM[4:]]
    assert out["small"] == "accepted"
    assert out["tmp"] == []  # the refused message's partial file is gone from tmp/
    assert out["subjects"] == ["small"]  # and only the accepted one is in the mailbox
    assert "552 5.3.4 Message too big for system" in out["submitted"]
    assert out["spool"] == []  # nothing half-queued: no partial file, no message without its envelope


@pytest.mark.parametrize("code", [errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)])
def test_a_full_disk_or_quota_is_a_temporary_452(code: int) -> None:
    import asyncio

    reply = asyncio.run(InboundHandler.handle_exception(None, OSError(code, "No space left on device")))  # type: ignore[arg-type]
    assert reply == replies.STORAGE_FULL and reply.startswith("452 4.3.1 ")


def test_other_local_errors_stay_a_temporary_451_that_says_nothing_of_the_inside() -> None:
    import asyncio

    reply = asyncio.run(InboundHandler.handle_exception(None, OSError(errno.EIO, "Input/output error")))  # type: ignore[arg-type]
    assert reply == replies.LOCAL_ERROR and reply.startswith("451 4.3.0 ")
    assert "Errno" not in reply and "OSError" not in reply  # the trace has it, for the teacher


@pytest.fixture
def two_users():  # type: ignore[no-untyped-def]
    """The default lab with a second mailbox at example.net."""
    import smtplab

    scenario = smtplab.Scenario.default().to_dict()
    for provider in scenario["providers"]:
        if provider["domain"] == "example.net":
            provider["users"]["carol@example.net"] = None
    with smtplab.start(scenario) as running:
        yield running


def test_a_message_for_two_mailboxes_is_stored_for_both_or_for_neither(two_users) -> None:  # type: ignore[no-untyped-def]
    """Carol's Maildir cannot take a file (its tmp/ is not a folder: a real ENOTDIR from the kernel), so the
    MX refuses the message with a temporary error and takes Bob's copy back: the retry makes no duplicate."""
    import smtplib
    from pathlib import Path

    lab = two_users
    carol_tmp = Path(lab.directory) / "mail" / "example.net" / "carol" / "tmp"
    carol_tmp.rmdir()
    carol_tmp.write_text("not a folder")
    message = ("From: Dora <dora@example.test>\r\nTo: bob@example.net, carol@example.net\r\nSubject: both\r\n"
               "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <both@example.test>\r\n\r\nfor you two\r\n")
    mx = lab.host("mx1.example.net")
    with smtplib.SMTP(mx.address, mx.ports["smtp"], timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("dora@example.test", ["bob@example.net", "carol@example.net"], message)
        assert refused.value.smtp_code == 451 and b"4.3.0" in refused.value.smtp_error
        assert b"NotADirectoryError" not in refused.value.smtp_error  # the trace says what failed, the wire does not
        assert any(e.kind == "error" and "NotADirectoryError" in e.text for e in lab.trace.events())
        assert lab.messages("bob@example.net") == []  # taken back
        carol_tmp.unlink()
        carol_tmp.mkdir()
        client.sendmail("dora@example.test", ["bob@example.net", "carol@example.net"], message)  # the retry
    for address in ("bob@example.net", "carol@example.net"):
        assert [m["Subject"] for m in lab.messages(address)] == ["both"], address
