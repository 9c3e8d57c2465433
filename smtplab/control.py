"""A small control endpoint on loopback, so a lab started with `python -m smtplab up` can be steered
from another terminal: take hosts down, inject faults, advance the clock, read the queue.

One JSON object per line each way; every request carries the lab's random token, because on a shared
JupyterHub host other users can reach the same loopback ports. The token never goes on a command line
(every user can read every process's in /proc/*/cmdline): `ctl` reads it from the lab directory's
control.json (0600, in a 0700 folder) or from the SMTPLAB_TOKEN environment variable.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import SmtpLabError
from .files import write_private
from .i18n import _
from .net.guard import BACKLOG

__all__ = ["ControlServer", "request", "find_control", "COMMANDS", "CONTROL_FILE", "TOKEN_VARIABLE"]

CONTROL_FILE = "control.json"  # in the lab directory, 0600
TOKEN_VARIABLE = "SMTPLAB_TOKEN"  # or the token comes from the environment (with --port)
DIR_VARIABLE = "SMTPLAB_DIR"  # the lab directory, when --dir is not given

COMMANDS = ("hosts", "down", "up", "inject", "clear", "faults", "advance", "queue", "pcap")


class ControlServer:
    """Serve control requests for one lab on 127.0.0.1."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        # Hex: a token is typed on command lines, where one starting with '-' would read as an option.
        self.token = secrets.token_hex(16)
        self.address = "127.0.0.1"
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        guard = self.lab.services.guard  # only the lab's own Unix user may steer it (net/guard.py)
        serve = self._serve if guard is None else guard.callback(self._serve, "control", "control")
        self._server = await asyncio.start_server(serve, self.address, 0, backlog=BACKLOG)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def info(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "token": self.token}

    def write_file(self, path: Path) -> None:
        """Write where and how to reach this server (with the token) into `path`, 0600 from its creation."""
        write_private(path, json.dumps(self.info()))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            try:
                request_data = json.loads(line)
                if not secrets.compare_digest(str(request_data.get("token", "")), self.token):
                    raise SmtpLabError(_("wrong or missing token"))
                loop = asyncio.get_running_loop()
                # Lab methods block until the loop did the work: run them off the loop.
                result = await loop.run_in_executor(None, self._execute, request_data)
                answer: dict[str, Any] = {"ok": True, "result": result}
            except (SmtpLabError, ValueError, KeyError, TypeError) as exc:
                answer = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _execute(self, data: dict[str, Any]) -> Any:
        command = data.get("command")
        args: dict[str, Any] = data.get("args") or {}
        lab = self.lab
        handlers: dict[str, Callable[[], Any]] = {
            "hosts": lambda: lab.describe()["hosts"],
            "down": lambda: lab.host(args["host"]).down() or f"{lab.host(args['host']).name} is down",
            "up": lambda: lab.host(args["host"]).up() or f"{lab.host(args['host']).name} is up",
            "inject": lambda: lab.host(args["host"]).inject(
                args["stage"], args.get("reply", ""), drop=bool(args.get("drop", False)),
                delay=float(args.get("delay", 0)), probability=float(args.get("probability", 1)),
                recipient=args.get("recipient", ""),
            ).describe(),
            "clear": lambda: _clear(lab, args.get("host")),
            "faults": lambda: [f.describe() for f in lab.faults.active()],
            "advance": lambda: lab.clock.advance(args["by"]) and f"lab time is {lab.clock.datetime():%Y-%m-%d %H:%M:%S} UTC",
            "queue": lambda: [asdict(item) for item in lab.queue],
            "pcap": lambda: _pcap(lab, args["path"], args.get("message")),
        }
        if command not in handlers:
            raise SmtpLabError(_("unknown command {command!r}; commands: {commands}").format(
                command=command, commands=', '.join(COMMANDS)))
        return handlers[command]()


def _clear(lab: Any, host: str | None) -> str:
    if host:
        lab.host(host).clear_faults()
        return f"faults of {lab.host(host).name} removed"
    for each in lab.hosts.values():
        each.clear_faults()
    return "all faults removed"


def find_control(directory: str | os.PathLike[str] | None = None, port: int | None = None,
                 environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Return a running lab's control address, port and token: from `directory`'s control.json (else
    $SMTPLAB_DIR's), or `port` with the token in $SMTPLAB_TOKEN. Raises SmtpLabError saying what to give."""
    where = directory or (None if port else environ.get(DIR_VARIABLE))
    if where:
        path = Path(where) / CONTROL_FILE
        try:
            info = json.loads(path.read_text())
            return {"address": str(info["address"]), "port": int(info["port"]), "token": str(info["token"])}
        except (OSError, ValueError, KeyError, TypeError):
            raise SmtpLabError(_("no running lab found in {where} (no readable {control_file}; start one with `python "
                                 "-m smtplab up --dir ...`)").format(where=where, control_file=CONTROL_FILE)) from None
    token = environ.get(TOKEN_VARIABLE)
    if port and token:
        return {"address": "127.0.0.1", "port": int(port), "token": token}
    raise SmtpLabError(_("give --dir PATH (the lab directory `python -m smtplab up` printed; or set {dir_variable}), "
                         "or --port PORT with the token in the environment variable {token_variable}").format(
        dir_variable=DIR_VARIABLE, token_variable=TOKEN_VARIABLE))


def _pcap(lab: Any, path: str, message: str | None) -> dict[str, Any]:
    """Write a capture (`lab.pcap`) at `path`, which must be absolute: the lab runs in another folder."""
    if not Path(path).is_absolute():
        raise SmtpLabError(_("give an absolute path for the capture, not {path!r}").format(path=path))
    capture = lab.pcap(path, message or None)
    return {"pcap": str(capture.pcap), "keylog": str(capture.keylog), "packets": capture.packets,
            "connections": capture.connections, "sessions": capture.sessions,
            "wireshark": capture.command("wireshark"), "tshark": capture.command("tshark")}


def request(address: str, port: int, token: str, command: str, timeout: float = 30, **args: Any) -> Any:
    """Send one control request and return its result (raises SmtpLabError with the lab's answer)."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(json.dumps({"token": token, "command": command, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not answer.get("ok"):
        raise SmtpLabError(answer.get("error") or _("the lab refused the request"))
    return answer["result"]
