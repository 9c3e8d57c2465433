"""`python -m smtplab up` in a real subprocess, used with smtplib, imaplib and dig like a terminal user would."""

from __future__ import annotations

import imaplib
import json
import os
import queue
import random
import secrets
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

ALICE = "alice@example.org"
BOB = "bob@example.net"
HOSTS = [
    "smtp.example.org",
    "imap.example.org",
    "smtp.example.net",
    "mx1.example.net",
    "mx2.example.net",
    "imap.example.net",
]
START_TIMEOUT = 60.0  # seconds for the first line; generous for a slow CI machine, but never forever
STOP_TIMEOUT = 60.0  # a hang detector, above the lab's own 30 s bound on its shutdown stage


class LabProcess:
    """`python -m smtplab up ...` running in a subprocess; stdout is read by a thread, never blocking the test."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / f"stderr-{secrets.token_hex(3)}.txt"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtplab", "up", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=workdir,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # a hung stop dumps every thread's stack (see stop)
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def readline(self, timeout: float = START_TIMEOUT) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output from smtplab within {timeout:g} s; stderr: {self.stderr()}")
        if line is None:
            self._lines.put(None)
            pytest.fail(f"smtplab ended (exit {self.proc.wait(STOP_TIMEOUT)}) early; stderr: {self.stderr()}")
        return line

    def read_until(self, last: str) -> list[str]:
        """Read lines until one contains `last` (within START_TIMEOUT in total)."""
        deadline = time.monotonic() + START_TIMEOUT
        lines: list[str] = []
        while not lines or last not in lines[-1]:
            lines.append(self.readline(max(0.1, deadline - time.monotonic())))
        return lines

    def describe(self) -> dict[str, Any]:
        line = self.readline()
        try:
            return json.loads(line)
        except ValueError:
            pytest.fail(f"the first line of --json output is not JSON: {line!r}; stderr: {self.stderr()}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send `signum`, wait for the exit and return its code."""
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler writes where each thread waits to stderr
            self.proc.wait(STOP_TIMEOUT)
            pytest.fail(f"smtplab did not stop within {STOP_TIMEOUT:g} s after signal {signum}; "
                        f"its threads: {self.stderr()[-6000:]}")
        self._reader.join(STOP_TIMEOUT)
        return code

    def rest_of_stdout(self) -> str:
        lines = []
        while (line := self._lines.get(timeout=STOP_TIMEOUT)) is not None:
            lines.append(line)
        self._lines.put(None)
        return "".join(lines)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def run_lab(tmp_path: Path) -> Iterator[Callable[..., LabProcess]]:
    """Start `python -m smtplab up` with the given arguments; every process is killed after the test."""
    started: list[LabProcess] = []

    def run(*args: str) -> LabProcess:
        process = LabProcess(list(args), tmp_path / "cwd")
        started.append(process)
        return process

    yield run
    for process in started:
        process.close()


def context(info: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=info["ca_file"])


def submit(info: dict[str, Any], subject: str, body: str) -> None:
    """Submit alice → bob on smtp.example.org's submission port: STARTTLS, then AUTH."""
    host = info["hosts"]["smtp.example.org"]
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ALICE, BOB, subject
    message.set_content(body)
    with smtplib.SMTP(
        host["address"], host["ports"]["submission"], local_hostname="client.local", timeout=30
    ) as client:
        client.starttls(context=context(info))
        client.login(ALICE, info["users"][ALICE]["password"])
        refused = client.send_message(message)
    assert refused == {}


def open_imap(info: dict[str, Any], address: str = BOB) -> imaplib.IMAP4:
    host = info["hosts"]["imap." + address.rpartition("@")[2]]
    client = imaplib.IMAP4(host["address"], host["ports"]["imap"], timeout=30)
    client.starttls(ssl_context=context(info))
    client.login(info["users"][address]["login"], info["users"][address]["password"])
    return client


def wait_for_subject(client: imaplib.IMAP4, subject: str, timeout: float = 5.0) -> bytes:
    """Return the UID of the message with `subject` in INBOX, re-checking until `timeout`.

    The relay runs in another process, so there is no event to await: NOOP/SEARCH again briefly.
    """
    deadline = time.monotonic() + timeout
    typ, _ = client.select("INBOX")
    assert typ == "OK"
    while True:
        typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK", data
        uids = data[0].split()
        if uids:
            assert len(uids) == 1, uids
            return uids[0]
        if time.monotonic() > deadline:
            pytest.fail(f"{subject!r} did not reach bob's INBOX within {timeout:g} s")
        time.sleep(0.1)
        client.noop()


def fetch(client: imaplib.IMAP4, uid: bytes) -> bytes:
    typ, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
    assert typ == "OK", data
    return next(part[1] for part in data if isinstance(part, tuple))


def ports(info: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Every TCP listener the lab announced: (what, address, port)."""
    found = [
        (f"{name} {service}", host["address"], port)
        for name, host in info["hosts"].items()
        for service, port in host["ports"].items()
    ]
    found.append(("dns (tcp)", info["dns"]["address"], info["dns"]["port"]))
    return found


def assert_gone(process: LabProcess, info: dict[str, Any]) -> None:
    assert process.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(process.proc.pid, 0)
    for what, address, port in ports(info):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=5).close()
            pytest.fail(f"{what} ({address}:{port}) still accepts connections")


@pytest.mark.tool("dig")
def test_up_json_serves_mail_and_dns_then_sigterm_stops_cleanly(run_lab: Callable[..., LabProcess]) -> None:
    process = run_lab("--json")
    info = process.describe()
    assert set(info["hosts"]) == set(HOSTS)
    assert set(info["users"]) == {ALICE, BOB}
    assert Path(info["ca_file"]).is_file()

    subject = f"from the cli lab {secrets.token_hex(4)}"
    submit(info, subject, "Hello Bob, over STARTTLS.")
    with open_imap(info) as client:
        raw = fetch(client, wait_for_subject(client, subject))
    assert f"Subject: {subject}".encode() in raw
    assert b"Hello Bob, over STARTTLS." in raw

    dns = info["dns"]
    dig = subprocess.run(
        [
            require_tool("dig"),
            f"@{dns['address']}",
            "-p",
            str(dns["port"]),
            "+time=5",
            "+tries=1",
            "+short",
            "example.net",
            "MX",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dig.returncode == 0, dig.stderr
    assert sorted(dig.stdout.split("\n")[:-1]) == ["10 mx1.example.net.", "20 mx2.example.net."]

    assert process.stop(signal.SIGTERM) == 0, process.stderr()
    assert process.rest_of_stdout() == ""
    assert_gone(process, info)
    assert not Path(info["directory"]).exists(), "a temporary lab directory is removed on stop"


def test_up_sigint_stops_with_exit_code_0(run_lab: Callable[..., LabProcess]) -> None:
    process = run_lab("--json")
    info = process.describe()
    with socket.create_connection((info["dns"]["address"], info["dns"]["port"]), timeout=5):
        pass  # it really is listening before the signal
    assert process.stop(signal.SIGINT) == 0, process.stderr()
    assert "Traceback" not in process.stderr()
    assert_gone(process, info)


def test_up_dir_keeps_passwords_and_mail_across_restarts(run_lab: Callable[..., LabProcess], lab_dir: Path) -> None:
    first = run_lab("--json", "--dir", str(lab_dir))
    before = first.describe()
    assert Path(before["directory"]).resolve() == lab_dir.resolve()
    subject = f"kept across restarts {secrets.token_hex(4)}"
    submit(before, subject, "Still here after a restart.")
    with open_imap(before) as client:
        wait_for_subject(client, subject)
    assert first.stop() == 0, first.stderr()
    assert_gone(first, before)
    assert lab_dir.is_dir(), "a lab directory given with --dir survives the stop"

    second = run_lab("--json", "--dir", str(lab_dir))
    after = second.describe()
    assert {a: u["password"] for a, u in after["users"].items()} == {
        a: u["password"] for a, u in before["users"].items()
    }
    assert {n: h["ports"] for n, h in after["hosts"].items()} == {n: h["ports"] for n, h in before["hosts"].items()}, \
        "a lab started again in its directory keeps its ports: client configurations keep working"
    assert after["dns"]["port"] == before["dns"]["port"]
    with open_imap(after) as client:
        typ, _ = client.select("INBOX")
        assert typ == "OK"
        typ, data = client.uid("SEARCH", "ALL")
        assert typ == "OK"
        uids = data[0].split()
        assert len(uids) == 1, "the message is neither lost nor delivered a second time"
        raw = fetch(client, uids[0])
    assert f"Subject: {subject}".encode() in raw
    assert b"Still here after a restart." in raw
    assert second.stop() == 0, second.stderr()


def test_up_human_output_names_every_host_and_user(run_lab: Callable[..., LabProcess]) -> None:
    process = run_lab()
    text = "".join(process.read_until("Ctrl-C"))
    for name in HOSTS:
        assert name in text
    assert ALICE in text and BOB in text
    passwords = [line.split("password", 1)[1].strip() for line in text.splitlines() if line.startswith("user ")]
    assert len(passwords) == 2 and all(passwords), text
    assert "dig @" in text and "swaks" in text
    assert process.stop(signal.SIGTERM) == 0, process.stderr()
    assert "smtplab stopped." in process.rest_of_stdout()


@pytest.mark.tool("swaks")
@pytest.mark.tool("curl")
def test_swaks_and_curl_work_against_the_cli_lab(run_lab: Callable[..., LabProcess]) -> None:
    process = run_lab("--json")
    info = process.describe()
    sub = info["hosts"]["smtp.example.org"]
    imap = info["hosts"]["imap.example.net"]
    subject = f"swaks via the cli {secrets.token_hex(4)}"
    sent = subprocess.run(
        [require_tool("swaks"), "--server", f"{sub['address']}:{sub['ports']['submission']}", "--tls",
         "--tls-verify", "--tls-ca-path", info["ca_file"], "--auth", "PLAIN", "--auth-user", ALICE,
         "--auth-password", info["users"][ALICE]["password"], "--from", ALICE, "--to", BOB,
         "--header", f"Subject: {subject}", "--body", "sent with swaks", "--helo", "client.local"],
        capture_output=True, text=True, timeout=60,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "235 2.7.0" in sent.stdout and "queued as" in sent.stdout
    with open_imap(info) as client:
        uid = wait_for_subject(client, subject)
    fetched = subprocess.run(
        [require_tool("curl"), "--silent", "--show-error", "--ssl-reqd", "--cacert", info["ca_file"],
         "--user", f"{BOB}:{info['users'][BOB]['password']}",
         f"imap://{imap['address']}:{imap['ports']['imap']}/INBOX;UID={uid.decode()}"],
        capture_output=True, text=True, timeout=60,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert f"Subject: {subject}" in fetched.stdout and "sent with swaks" in fetched.stdout
    assert process.stop(signal.SIGTERM) == 0


def free_base() -> int:
    """A port base below Linux's ephemeral range, so no lab picking free ports lands on it."""
    for _ in range(50):
        base = random.randrange(20000, 32000, 100)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 11))
                return base
            except OSError:
                continue
    pytest.skip("no free port base found")


@pytest.mark.tool("swaks")
def test_up_ports_pins_the_ports_and_env_sh_drives_the_printed_recipe(run_lab: Callable[..., LabProcess]) -> None:
    base = free_base()
    process = run_lab("--ports", str(base), "--dir", "mylab")  # relative to where `up` runs
    text = "".join(process.read_until("Ctrl-C"))
    assert f"submission {base + 11}  submissions {base + 12}" in text
    assert f"imap {base + 63}  imaps {base + 64}  pop3 {base + 65}  pop3s {base + 66}" in text
    assert "--token" not in text.split("Ctrl-C")[0]
    env_file = Path(text.split("In another terminal, `. ", 1)[1].split("`", 1)[0])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, "env.sh holds passwords"
    assert f"SUB={base + 11} SUBS={base + 12}" in env_file.read_text()
    assert env_file.is_absolute() and f"CA={env_file.parent}/tls/ca.pem" in env_file.read_text(), \
        "absolute paths: the second terminal may be elsewhere"
    recipe = text.split("then, for example:\n", 1)[1].split("Press Ctrl-C", 1)[0]
    subject = f"recipe {secrets.token_hex(3)}"
    sent = subprocess.run(["bash", "-c", f". {env_file}\n{recipe.strip()} --header 'Subject: {subject}'"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": os.path.dirname(require_tool("swaks")) + ":" + os.environ["PATH"]})
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "250 2.0.0" in sent.stdout and "<~  235 2.7.0" in sent.stdout
    assert process.stop() == 0


def test_ctl_queue_shows_what_waits_and_all_with_a_flag(lab_dir: Path) -> None:
    import smtplab
    from smtplab.control import ControlServer

    with smtplab.start(directory=lab_dir) as lab:
        control = ControlServer(lab)
        lab.services.call(control.start())
        control.write_file(lab.directory / "control.json")
        try:
            delivered = lab.send(ALICE, BOB, "on time", "arrives")
            lab.host("mx1").inject("RCPT", "451 4.7.1 Greylisted, try again later")
            lab.host("mx2").inject("RCPT", "451 4.7.1 Greylisted, try again later")
            waiting = lab.send(ALICE, BOB, "late", "waits")

            def ctl(*args: str) -> list[dict[str, Any]]:
                result = subprocess.run([sys.executable, "-m", "smtplab", "ctl", "--dir", str(lab_dir), *args],
                                        capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, result.stderr
                return json.loads(result.stdout)

            assert [item["queue_id"] for item in ctl("queue")] == [waiting.queue_id]
            assert {item["queue_id"] for item in ctl("queue", "--all")} == {delivered.queue_id, waiting.queue_id}
        finally:
            lab.services.call(control.stop())


def test_ctl_help_names_every_argument() -> None:
    result = subprocess.run([sys.executable, "-m", "smtplab", "ctl", "--help"], capture_output=True, text=True,
                            timeout=60)
    text = " ".join(result.stdout.split())
    assert "slow HOST STAGE SECONDS" in text and "queue [--all]" in text
