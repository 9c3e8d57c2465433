"""Run one SMTP server for the intake benchmark, in its own process, until stdin closes.

    python benchmarks/serve.py bare      # aiosmtpd with a handler that accepts and drops every message
    python benchmarks/serve.py maildir   # aiosmtpd with its own Mailbox handler (stdlib Maildir)
    python benchmarks/serve.py durable   # aiosmtpd storing each message as the lab does (fsync'd Maildir)
    python benchmarks/serve.py lab       # a whole smtplab lab; the server is mx1.example.net's MX
    python benchmarks/serve.py lab-plain # the same without the security checks (SPF/DKIM/DMARC, DNSBL, spam)
    python benchmarks/serve.py lab-tmpfs # lab-plain with the lab directory on tmpfs (/dev/shm)
    python benchmarks/serve.py sink      # Postfix's smtp-sink (C), when installed

Prints one line `READY <address> <port> <pid>` (the pid of the process that serves) when the server
accepts connections, then serves until its stdin is closed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

SMTP_SINK = "/usr/sbin/smtp-sink"
# What the providers of the default lab publish and check, all switched off: the bare mail path.
PLAIN_SECURITY = {"spf": None, "dkim": False, "dmarc": None, "verify": False, "dnsbl": [], "spam": None}


def plain_scenario() -> dict[str, Any]:
    """The default lab without SPF, DKIM, DMARC, blocklist and spam checks."""
    import smtplab

    scenario = smtplab.Scenario.default().to_dict()
    for provider in scenario["providers"]:
        provider["security"] = dict(PLAIN_SECURITY)
    return scenario


class DropHandler:
    """Accept everything, keep nothing: the fastest a handler can be."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


class DurableMaildirHandler:
    """Store each message as the lab's MX does, in a few lines: into tmp/, fsync, rename into new/, fsync
    new/, before the 250 (RFC 5321 section 6.1), in a thread of the default executor. Written with the
    standard library only, on purpose: the baseline must not share smtplab's code."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.count = 0
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        await asyncio.get_running_loop().run_in_executor(None, self.write, envelope.original_content, self.count)
        return "250 2.0.0 OK"

    def write(self, data: bytes, number: int) -> None:
        name = f"{time.time():.6f}.P{os.getpid()}Q{number}.bench"
        tmp = os.path.join(self.root, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.root, "new", name))
        folder = os.open(os.path.join(self.root, "new"), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def serve_aiosmtpd(handler: Any) -> None:
    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # Same settings as the lab's MX where they apply: loopback, a server name, the size limit.
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bare.test", data_size_limit=10 * 1024 * 1024, timeout=300),
            host="127.0.0.1", port=0,
        )
        port = server.sockets[0].getsockname()[1]
        print(f"READY 127.0.0.1 {port} {os.getpid()}", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
        server.close()

    asyncio.run(main())


def serve_lab(directory: str | None = None, scenario: dict[str, Any] | None = None) -> None:
    import smtplab

    with smtplab.start(scenario, directory=directory) as lab:
        mx = lab.host("mx1.example.net")
        print(f"READY {mx.address} {mx.ports['smtp']} {os.getpid()}", flush=True)
        sys.stdin.read()


def serve_sink() -> None:
    if not os.path.exists(SMTP_SINK):
        print("NOT-INSTALLED", flush=True)
        return
    with socket.socket() as probe:  # find a free port; smtp-sink needs one on its command line
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{port}", "256"], stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                threading.Event().wait(0.05)
        print(f"READY 127.0.0.1 {port} {sink.pid}", flush=True)
        sys.stdin.read()
    finally:
        sink.terminate()
        sink.wait(10)


def serve_into_maildir(handler: Callable[[str], Any]) -> None:
    """Serve aiosmtpd with `handler(maildir)` storing into a Maildir in a temporary folder (removed after)."""
    directory = tempfile.mkdtemp(prefix="bench-maildir-")
    try:
        serve_aiosmtpd(handler(os.path.join(directory, "Maildir")))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    kind = sys.argv[1]
    if kind == "bare":
        serve_aiosmtpd(DropHandler())
    elif kind == "maildir":
        from aiosmtpd.handlers import Mailbox

        serve_into_maildir(Mailbox)
    elif kind == "durable":
        serve_into_maildir(DurableMaildirHandler)
    elif kind == "lab":
        serve_lab()
    elif kind == "lab-plain":
        serve_lab(scenario=plain_scenario())
    elif kind == "lab-tmpfs":  # the same, with the lab directory (mailboxes, queue) in memory
        if not os.path.isdir("/dev/shm"):
            print("NOT-AVAILABLE", flush=True)
            return
        directory = tempfile.mkdtemp(prefix="bench-lab-", dir="/dev/shm")
        try:
            serve_lab(directory, plain_scenario())
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    elif kind == "sink":
        serve_sink()
    else:
        raise SystemExit(f"unknown server kind {kind!r}: bare, maildir, durable, lab, lab-plain, lab-tmpfs or sink")


if __name__ == "__main__":
    main()
