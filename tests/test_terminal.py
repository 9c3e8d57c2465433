"""The terminal recipes of docs/terminal.md, run for real: nc, telnet, openssl s_client, mutt."""

from __future__ import annotations

import os
import select
import subprocess
import time

import pytest
from conftest import require_tool

import smtplab


@pytest.mark.tool("nc")
def test_nc_talks_smtp_to_an_mx(lab: smtplab.Lab) -> None:
    mx = lab.host("mx1")
    result = subprocess.run(
        [require_tool("nc"), "-C", "-q", "2", mx.address, str(mx.ports["smtp"])],
        input="EHLO client.local\nMAIL FROM:<carol@example.org>\nRCPT TO:<bob@example.net>\nDATA\n"
              "Subject: by nc\n\ntyped in a terminal\n.\nQUIT\n",
        capture_output=True, text=True, timeout=30,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "220 mx1.example.net ESMTP smtplab"
    assert "354 End data with <CR><LF>.<CR><LF>" in lines
    assert lines[-1] == "221 2.0.0 Bye"
    assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["by nc"]


@pytest.mark.tool("telnet")
def test_telnet_conversation(lab: smtplab.Lab) -> None:
    mx = lab.host("mx2")
    proc = subprocess.Popen([require_tool("telnet"), mx.address, str(mx.ports["smtp"])], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""

    def expect(text: bytes, timeout: float = 10) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"telnet never showed {text!r}; got {seen!r}"
            chunk = os.read(proc.stdout.fileno(), 4096)  # type: ignore[union-attr]
            assert chunk, f"telnet ended before {text!r}; got {seen!r}"
            seen += chunk

    try:
        expect(b"220 mx2.example.net")
        proc.stdin.write(b"HELO student.local\n")  # type: ignore[union-attr]  # telnet sends CRLF for Enter
        proc.stdin.flush()  # type: ignore[union-attr]
        expect(b"250 mx2.example.net")
        proc.stdin.write(b"QUIT\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        expect(b"221 2.0.0 Bye")
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.tool("openssl")
def test_openssl_s_client_starttls_verifies_the_lab_certificate(lab: smtplab.Lab) -> None:
    host = lab.host("smtp.example.org")
    result = subprocess.run(
        [require_tool("openssl"), "s_client", "-quiet", "-starttls", "smtp", "-connect",
         f"{host.address}:{host.ports['submission']}", "-CAfile", lab.ca_file, "-verify_return_error",
         "-verify_hostname", "smtp.example.org"],
        input="EHLO client.local\nQUIT\n", capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "CN = smtp.example.org" in result.stderr and "verify return:1" in result.stderr
    assert "250-AUTH LOGIN PLAIN" in result.stdout, "AUTH is offered inside TLS"
    assert "221 2.0.0 Bye" in result.stdout


@pytest.mark.tool("mutt")
def test_mutt_sends_through_submission(lab: smtplab.Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host = lab.host("smtp.example.org")
    alice = lab.users["alice@example.org"]
    settings = (
        f"set smtp_url=smtp://alice%40example.org@{host.address}:{host.ports['submission']}/ "
        f"smtp_pass={alice.password} ssl_starttls=yes ssl_force_tls=yes "
        f"ssl_ca_certificates_file={lab.ca_file} from=alice@example.org"
    )
    result = subprocess.run(
        [require_tool("mutt"), "-n", "-F", "/dev/null", "-e", settings, "-s", "from mutt", "--", "bob@example.net"],
        input="Hello from mutt\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    lab.wait_for_delivery()
    [message] = lab.messages("bob@example.net")
    assert message["Subject"] == "from mutt" and "Hello from mutt" in message.get_content()
    assert "ESMTPSA" in message.get_all("Received")[-1]
