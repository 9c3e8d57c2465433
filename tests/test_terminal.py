"""The terminal recipes of docs/terminal.md, run for real: the marked ones exactly as written, with bash."""

from __future__ import annotations

import os
import re
import select
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import require_tool

import smtplab
from smtplab.cli import env_lines

ALICE = "alice@example.org"
BOB = "bob@example.net"


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


# --- the recipes of docs/terminal.md, run exactly as written (bash, with the values of `up`'s env.sh) ---

DOCS = Path(__file__).resolve().parent.parent / "docs" / "terminal.md"
_BLOCK = re.compile(r"<!-- tested: ([\w-]+) -->\n```sh\n(.*?)```", re.DOTALL)


def recipes() -> dict[str, str]:
    return dict(_BLOCK.findall(DOCS.read_text()))


class Shell:
    """A second terminal: HOME in a temporary directory, the lab's env.sh loaded, recipes run with bash."""

    def __init__(self, lab: smtplab.Lab, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir(mode=0o700)
        self.env_file = tmp_path / "env.sh"
        self.env_file.write_text("\n".join(env_lines(lab)) + "\n")

    def run(self, name: str) -> subprocess.CompletedProcess[str]:
        script = f"set -e\n. {self.env_file}\n{recipes()[name]}"
        result = subprocess.run([require_tool("bash"), "-c", script], capture_output=True, text=True, timeout=180,
                                cwd=self.home, env={**os.environ, "HOME": str(self.home)})
        assert result.returncode == 0, f"recipe {name!r} failed:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture
def shell(lab: smtplab.Lab, tmp_path: Path) -> Shell:
    return Shell(lab, tmp_path)


def test_every_marked_recipe_is_a_test() -> None:
    assert set(recipes()) == {"dig", "message", "swaks", "curl-send", "curl-read", "msmtp", "mutt-send",
                              "fetchmail", "mbsync"}


def delivered(lab: smtplab.Lab) -> list[tuple[str, str]]:
    lab.wait_for_delivery()
    return [(m["Subject"], m.get_all("Received")[-1]) for m in lab.messages(BOB)]


@pytest.mark.tool("dig")
def test_recipe_dig(lab: smtplab.Lab, shell: Shell) -> None:
    require_tool("dig")
    out = shell.run("dig").stdout
    assert "10 mx1.example.net." in out and "20 mx2.example.net." in out
    assert "status: REFUSED" in out
    assert re.search(r"^11\.2\.0\.127\.in-addr\.arpa\.\s.*PTR\s+mx1\.example\.net\.$", out, re.MULTILINE)
    assert len(re.findall(r"^example\.net\.\s.*\sSOA\s", out, re.MULTILINE)) == 2, "AXFR: SOA first and last"


@pytest.mark.tool("swaks")
def test_recipe_swaks_verifies_the_certificate_on_both_ports(lab: smtplab.Lab, shell: Shell) -> None:
    require_tool("swaks")
    out = shell.run("swaks").stdout
    assert out.count("235 2.7.0 Authentication successful") == 2
    received = delivered(lab)
    assert sorted(s for s, _ in received) == ["via swaks", "via swaks, implicit TLS"]
    assert all("ESMTPSA" in r for _, r in received)


@pytest.mark.tool("curl")
def test_recipe_curl_sends_the_message_file_and_reads_it_back(lab: smtplab.Lab, shell: Shell) -> None:
    require_tool("curl")
    shell.run("message")
    shell.run("curl-send")
    assert [s for s, _ in delivered(lab)] == ["hello from a file"] * 2
    [message, _] = lab.messages(BOB)
    assert message["From"] == ALICE and message.get_content().startswith("Hello Bob,\nthis message was written")
    out = shell.run("curl-read").stdout
    assert re.search(r'^\* LIST \(.*\) "/" INBOX\r?$', out, re.MULTILINE), "imap://host/ lists the folders"
    assert "* SEARCH 1 2" in out, "INBOX?ALL searches instead of listing"
    assert out.count("Subject: hello from a file") == 2, "INBOX;UID=1 and pop3s://.../1 each fetched it"
    assert re.search(r"^1 \d+\r?$", out, re.MULTILINE) and re.search(r"^2 \d+\r?$", out, re.MULTILINE)


@pytest.mark.tool("msmtp")
def test_recipe_msmtp(lab: smtplab.Lab, shell: Shell) -> None:
    require_tool("msmtp")
    shell.run("message")
    shell.run("msmtp")
    assert stat.S_IMODE((shell.home / ".msmtprc").stat().st_mode) == 0o600
    ports = {e.port_name for e in lab.trace.events() if e.protocol == "smtp" and e.text.startswith("AUTH")}
    assert ports == {"submission", "submissions"}
    assert [s for s, _ in delivered(lab)] == ["hello from a file"] * 2


@pytest.mark.tool("mutt")
def test_recipe_mutt_sends_headers_as_headers(lab: smtplab.Lab, shell: Shell) -> None:
    require_tool("mutt")
    shell.run("message")
    shell.run("mutt-send")
    [(subject, received)] = delivered(lab)
    assert subject == "hello from a file" and "ESMTPSA" in received
    [message] = lab.messages(BOB)
    assert message.get_content().startswith("Hello Bob,"), "the body is the body, without the header lines"


@pytest.mark.tool("fetchmail")
def test_recipe_fetchmail_keeps_over_imap_then_downloads_over_pop3(lab: smtplab.Lab, shell: Shell) -> None:
    require_tool("fetchmail")
    lab.send(ALICE, BOB, "for fetchmail", "fetched twice")
    shell.run("fetchmail")
    for name in ("fetched-imap.mbox", "fetched-pop3.mbox"):
        assert "Subject: for fetchmail" in (shell.home / name).read_text(), name
    assert lab.messages(BOB) == [], "the POP3 poll deleted what it downloaded"


@pytest.mark.tool("mbsync")
@pytest.mark.tool("openssl")
def test_recipe_mbsync(lab: smtplab.Lab, shell: Shell) -> None:
    require_tool("mbsync")
    require_tool("openssl")
    lab.send(ALICE, BOB, "for mbsync", "synchronised")
    shell.run("mbsync")
    synced = [p.read_bytes() for p in (shell.home / "Mail" / "INBOX").glob("*/*")]
    assert len(synced) == 1 and b"Subject: for mbsync" in synced[0]


@pytest.mark.tool("openssl")
def test_pop3_by_hand_with_openssl_stls(lab: smtplab.Lab) -> None:
    lab.send(ALICE, BOB, "by hand", "typed")
    host = lab.imap_host(BOB)
    result = subprocess.run(
        [require_tool("openssl"), "s_client", "-quiet", "-crlf", "-starttls", "pop3", "-connect",
         f"{host.address}:{host.ports['pop3']}", "-CAfile", lab.ca_file, "-verify_return_error",
         "-verify_hostname", "imap.example.net"],
        input=f"CAPA\nUSER {BOB}\nPASS {lab.users[BOB].password}\nSTAT\nTOP 1 0\nDELE 1\nQUIT\n",
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "USER" in lines, "inside TLS, CAPA offers USER"
    assert any(line.startswith("+OK maildrop locked and ready: 1 message") for line in lines)
    assert "Subject: by hand" in lines
    assert lines[-1].startswith("+OK imap.example.net POP3 server signing off (0 message(s) left)")
    assert lab.messages(BOB) == []


@pytest.mark.tool("nc")
def test_pop3_refuses_a_password_in_clear(lab: smtplab.Lab) -> None:
    host = lab.imap_host(BOB)
    result = subprocess.run(
        [require_tool("nc"), "-C", "-q", "2", host.address, str(host.ports["pop3"])],
        input=f"USER {BOB}\nPASS {lab.users[BOB].password}\nQUIT\n", capture_output=True, text=True, timeout=30,
    )
    lines = result.stdout.splitlines()
    assert lines[1] == lines[2] == "-ERR [AUTH] Plaintext authentication disallowed before STLS: send STLS first"


@pytest.mark.tool("openssl")
def test_openssl_s_client_on_submissions_needs_no_starttls(lab: smtplab.Lab) -> None:
    host = lab.host("smtp.example.org")
    result = subprocess.run(
        [require_tool("openssl"), "s_client", "-quiet", "-crlf", "-connect",
         f"{host.address}:{host.ports['submissions']}", "-CAfile", lab.ca_file, "-verify_return_error",
         "-verify_hostname", "smtp.example.org"],
        input="EHLO client.local\nQUIT\n", capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("220 smtp.example.org ESMTP")
    assert "250-AUTH LOGIN PLAIN" in result.stdout and "STARTTLS" not in result.stdout
