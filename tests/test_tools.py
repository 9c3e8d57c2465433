"""Real third-party clients against a running lab: dig, swaks and curl, as a learner would use them."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool

import smtplab

TIMEOUT = 60  # seconds; a hung tool fails the test instead of hanging the run

ALICE = "alice@example.org"
BOB = "bob@example.net"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def subjects(lab: smtplab.Lab, address: str) -> list[str]:
    return [str(message["Subject"]) for message in lab.messages(address)]


# --- dig against the lab DNS ---


def dig(lab: smtplab.Lab, *args: str) -> str:
    result = run(require_tool("dig"), f"@{lab.dns.address}", "-p", str(lab.dns.port), "+time=5", "+tries=1", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def status(output: str) -> str:
    match = re.search(r"->>HEADER<<- opcode: QUERY, status: (\w+)", output)
    assert match, output
    return match.group(1)


def flags(output: str) -> set[str]:
    match = re.search(r";; flags: ([a-z ]+);", output)
    assert match, output
    return set(match.group(1).split())


def section(output: str, name: str) -> list[list[str]]:
    """Return the records of one section (ANSWER, AUTHORITY, ADDITIONAL) as lists of fields."""
    match = re.search(rf";; {name} SECTION:\n(.*?)(?:\n\n|\Z)", output, re.S)
    if match is None:
        return []
    return [line.split() for line in match.group(1).splitlines() if line and not line.startswith(";")]


def mx_records(output: str) -> list[tuple[int, str]]:
    return sorted((int(r[4]), r[5]) for r in section(output, "ANSWER") if r[3] == "MX" and r[0] == "example.net.")


@pytest.mark.tool("dig")
def test_dig_mx_shows_both_exchanges_authoritatively(lab: smtplab.Lab) -> None:
    output = dig(lab, "example.net", "MX")
    assert status(output) == "NOERROR"
    assert "aa" in flags(output), "the lab DNS is authoritative for example.net"
    assert mx_records(output) == [(10, "mx1.example.net."), (20, "mx2.example.net.")]
    assert "(UDP)" in output


@pytest.mark.tool("dig")
def test_dig_over_tcp(lab: smtplab.Lab) -> None:
    output = dig(lab, "+tcp", "example.net", "MX")
    assert "(TCP)" in output
    assert status(output) == "NOERROR"
    assert "aa" in flags(output)
    assert mx_records(output) == [(10, "mx1.example.net."), (20, "mx2.example.net.")]


@pytest.mark.tool("dig")
def test_dig_a_record_is_the_hosts_loopback_address(lab: smtplab.Lab) -> None:
    output = dig(lab, "mx2.example.net", "A")
    assert status(output) == "NOERROR"
    answer = [(r[0], r[3], r[4]) for r in section(output, "ANSWER")]
    assert answer == [("mx2.example.net.", "A", lab.host("mx2.example.net").address)]


@pytest.mark.tool("dig")
def test_dig_outside_the_zones_is_refused(lab: smtplab.Lab) -> None:
    output = dig(lab, "www.example.com", "A")
    assert status(output) == "REFUSED"
    assert "aa" not in flags(output)
    assert section(output, "ANSWER") == []


@pytest.mark.tool("dig")
def test_dig_nonexistent_name_is_nxdomain_with_soa(lab: smtplab.Lab) -> None:
    output = dig(lab, "nonexistent.example.net", "A")
    assert status(output) == "NXDOMAIN"
    assert "aa" in flags(output)
    assert section(output, "ANSWER") == []
    authority = section(output, "AUTHORITY")
    assert [(r[0], r[3]) for r in authority] == [("example.net.", "SOA")], output


# --- swaks: submission with STARTTLS, certificate verification and AUTH ---


def swaks(
    lab: smtplab.Lab, *extra: str, password: str | None = None, subject: str = "swaks"
) -> subprocess.CompletedProcess[str]:
    host = lab.submission_host(ALICE)
    return run(
        require_tool("swaks"),
        "--server",
        f"{host.address}:{host.ports['submission']}",
        "--from",
        ALICE,
        "--to",
        BOB,
        "--auth-user",
        ALICE,
        "--auth-password",
        lab.users[ALICE].password if password is None else password,
        "--header",
        f"Subject: {subject}",
        "--body",
        "Sent with swaks.",
        "--timeout",
        "30",
        *extra,
    )


@pytest.mark.tool("swaks")
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_submits_with_starttls_verified_and_auth(lab: smtplab.Lab, mechanism: str) -> None:
    subject = f"swaks {mechanism} {secrets.token_hex(4)}"
    result = swaks(lab, "--tls", "--tls-verify", "--tls-ca-path", lab.ca_file, "--auth", mechanism, subject=subject)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  220 " in result.stdout and " -> STARTTLS" in result.stdout
    assert "=== TLS started" in result.stdout
    assert f"~> AUTH {mechanism}" in result.stdout
    assert "<~  235 " in result.stdout
    assert re.search(r"<~  250 .*queued as", result.stdout), result.stdout
    assert lab.wait_for_delivery()
    assert subject in subjects(lab, BOB)
    delivered = next(m for m in lab.messages(BOB) if m["Subject"] == subject)
    assert "Sent with swaks." in delivered.get_content()


@pytest.mark.tool("swaks")
def test_swaks_tls_verify_fails_without_the_lab_ca(lab: smtplab.Lab, tmp_path: Path) -> None:
    # An empty CA directory: nothing vouches for the lab's certificates, so verification must fail.
    empty = tmp_path / "no-ca"
    empty.mkdir()
    result = swaks(lab, "--tls", "--tls-verify", "--tls-ca-path", str(empty), "--auth", "PLAIN")
    assert result.returncode != 0, result.stdout
    assert "certificate verify failed" in result.stderr, result.stderr
    assert "TLS started" not in result.stdout
    assert "queued as" not in result.stdout
    assert lab.wait_for_delivery()
    assert lab.messages(BOB) == []


@pytest.mark.tool("swaks")
def test_swaks_wrong_password_gets_535(lab: smtplab.Lab) -> None:
    result = swaks(
        lab, "--tls", "--tls-verify", "--tls-ca-path", lab.ca_file, "--auth", "PLAIN", password="not-the-password"
    )
    assert result.returncode != 0
    assert re.search(r"<~\*? *535 ", result.stdout + result.stderr), result.stdout + result.stderr
    assert "queued as" not in result.stdout
    assert lab.wait_for_delivery()
    assert lab.messages(BOB) == []


# --- curl: SMTP submission and IMAP retrieval ---


def write_message(path: Path, subject: str, body: str) -> Path:
    path.write_bytes(f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode())
    return path


def curl_smtp(lab: smtplab.Lab, message: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    host = lab.submission_host(ALICE)
    return run(
        require_tool("curl"),
        "-sS",
        "-v",
        "--max-time",
        "30",
        f"smtp://{host.address}:{host.ports['submission']}",
        "--user",
        f"{ALICE}:{lab.users[ALICE].password}",
        "--mail-from",
        ALICE,
        "--mail-rcpt",
        BOB,
        "--upload-file",
        str(message),
        *extra,
    )


@pytest.mark.tool("curl")
def test_curl_smtp_submits_over_starttls(lab: smtplab.Lab, tmp_path: Path) -> None:
    subject = f"curl {secrets.token_hex(4)}"
    message = write_message(tmp_path / "message.eml", subject, "Sent with curl.")
    result = curl_smtp(lab, message, "--ssl-reqd", "--cacert", lab.ca_file)
    assert result.returncode == 0, result.stderr
    assert "> STARTTLS" in result.stderr
    assert "SSL certificate verify ok" in result.stderr
    assert "< 235 " in result.stderr
    assert lab.wait_for_delivery()
    delivered = [m for m in lab.messages(BOB) if m["Subject"] == subject]
    assert len(delivered) == 1
    assert "Sent with curl." in delivered[0].get_content()


@pytest.mark.tool("curl")
def test_curl_smtp_without_tls_is_refused_with_530(lab: smtplab.Lab, tmp_path: Path) -> None:
    message = write_message(tmp_path / "message.eml", "in the clear", "Should never arrive.")
    result = curl_smtp(lab, message)
    assert result.returncode != 0
    assert "< 530 " in result.stderr, result.stderr
    assert "AUTH" not in [line.split()[1] for line in result.stderr.splitlines() if line.startswith("> ")]
    assert lab.wait_for_delivery()
    assert lab.messages(BOB) == []


def curl_imap(
    lab: smtplab.Lab, path: str, *extra: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    host = lab.imap_host(BOB)
    return run(
        require_tool("curl"),
        "-sS",
        "--max-time",
        "30",
        "--ssl-reqd",
        "--cacert",
        lab.ca_file,
        "--user",
        f"{BOB}:{lab.users[BOB].password if password is None else password}",
        f"imap://{host.address}:{host.ports['imap']}/{path}",
        *extra,
    )


@pytest.fixture
def bob_has_mail(lab: smtplab.Lab) -> str:
    """Deliver one message to bob through the lab and return its subject."""
    subject = f"for curl imap {secrets.token_hex(4)}"
    lab.send(ALICE, BOB, subject, "Read me with curl.\n")
    assert subjects(lab, BOB) == [subject]
    return subject


@pytest.mark.tool("curl")
def test_curl_imap_lists_mailboxes(lab: smtplab.Lab, bob_has_mail: str) -> None:
    result = curl_imap(lab, "")
    assert result.returncode == 0, result.stderr
    assert re.search(r'^\* LIST \(.*\) "/" "?INBOX"?\s*$', result.stdout, re.M), result.stdout


@pytest.mark.tool("curl")
def test_curl_imap_fetches_message_by_uid(lab: smtplab.Lab, bob_has_mail: str) -> None:
    result = curl_imap(lab, "INBOX;UID=1")
    assert result.returncode == 0, result.stderr
    assert f"Subject: {bob_has_mail}" in result.stdout
    assert "Read me with curl." in result.stdout
    assert f"From: {ALICE}" in result.stdout


@pytest.mark.tool("curl")
def test_curl_imap_search_all(lab: smtplab.Lab, bob_has_mail: str) -> None:
    result = curl_imap(lab, "INBOX", "-X", "SEARCH ALL")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\* SEARCH 1\s*$", result.stdout, re.M), result.stdout


@pytest.mark.tool("curl")
def test_curl_imap_wrong_password_is_denied(lab: smtplab.Lab, bob_has_mail: str) -> None:
    result = curl_imap(lab, "INBOX;UID=1", password="not-the-password")
    assert result.returncode != 0
    assert "Read me with curl." not in result.stdout
