"""`python -m smtplab up`: run the lab in a terminal, for telnet, swaks, curl, dig and friends."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .control import ControlServer, request
from .errors import SmtpLabError
from .lab import Lab, start
from .scenario import Scenario

__all__ = ["main"]


def _print_human(lab: Lab) -> None:
    info = lab.describe()
    print(f"smtplab is running (lab directory {info['directory']})")
    print(f"DNS  {lab.dns.name:<18} {lab.dns.address}:{lab.dns.port}   try: {lab.dns.dig('example.net')}")
    for host in lab.hosts.values():
        ports = "  ".join(f"{service} {port}" for service, port in host.ports.items())
        print(f"host {host.name:<18} {host.address:<12} {ports}")
    for user in lab.users.values():
        print(f"user {user.address:<24} password {user.password}")
    print(f"TLS  CA certificate: {lab.ca_file}  (curl --cacert, swaks --tls-ca-path, openssl -CAfile)")
    sub = next((h for h in lab.hosts.values() if "submission" in h.ports), None)
    if sub is not None and lab.users:
        user = next(u for u in lab.users.values() if u.domain == sub.domain)
        other = next((u for u in lab.users.values() if u.domain != sub.domain), user)
        print("example:")
        print(f"  swaks --server {sub.address}:{sub.ports['submission']} --tls --tls-verify --tls-ca-path {lab.ca_file} \\")
        print(f"        --auth PLAIN --auth-user {user.address} --auth-password {user.password} \\")
        print(f"        --from {user.address} --to {other.address}")
    print("Press Ctrl-C to stop.")


def _up(args: argparse.Namespace) -> int:
    scenario: Any = None
    if args.scenario:
        try:
            scenario = Scenario.from_dict(json.loads(Path(args.scenario).read_text()))
        except (OSError, ValueError) as exc:
            print(f"smtplab: cannot read scenario {args.scenario}: {exc}", file=sys.stderr)
            return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        lab = start(scenario=scenario, directory=args.dir)
    except SmtpLabError as exc:
        print(f"smtplab: {exc}", file=sys.stderr)
        return 2
    control = ControlServer(lab)
    try:
        lab._call(control.start())
        control.write_file(lab.directory / "control.json")
        if args.json:
            print(json.dumps({**lab.describe(), "control": control.info()}), flush=True)
        else:
            _print_human(lab)
            where = f"--dir {args.dir}" if args.dir else f"--port {control.port} --token {control.token}"
            print(f"control from another terminal: python -m smtplab ctl {where} down mx1", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            lab._call(control.stop())
        except SmtpLabError:
            pass
        lab.stop()
    if not args.json:
        print("smtplab stopped.", flush=True)
    return 0


def _ctl(args: argparse.Namespace) -> int:
    if args.dir:
        try:
            info = json.loads((Path(args.dir) / "control.json").read_text())
        except OSError:
            print(f"smtplab: no running lab found in {args.dir} (start one with `python -m smtplab up --dir ...`)",
                  file=sys.stderr)
            return 2
    elif args.port and args.token:
        info = {"address": "127.0.0.1", "port": args.port, "token": args.token}
    else:
        print("smtplab: give --dir PATH, or --port and --token as printed by `python -m smtplab up`", file=sys.stderr)
        return 2
    p = args.params
    usage = {
        "down": (1, "down HOST"), "up": (1, "up HOST"), "fail": (3, "fail HOST STAGE 'REPLY'"),
        "drop": (2, "drop HOST STAGE"), "slow": (3, "slow HOST STAGE SECONDS"), "advance": (1, "advance 5m"),
    }
    if args.action in usage and len(p) != usage[args.action][0]:
        print(f"smtplab: usage: python -m smtplab ctl {usage[args.action][1]}", file=sys.stderr)
        return 2
    command, params = {
        "down": ("down", lambda: {"host": p[0]}),
        "up": ("up", lambda: {"host": p[0]}),
        "fail": ("inject", lambda: {"host": p[0], "stage": p[1], "reply": p[2]}),
        "drop": ("inject", lambda: {"host": p[0], "stage": p[1], "drop": True}),
        "slow": ("inject", lambda: {"host": p[0], "stage": p[1], "delay": float(p[2])}),
        "clear": ("clear", lambda: {"host": p[0]} if p else {}),
        "faults": ("faults", dict),
        "advance": ("advance", lambda: {"by": p[0]}),
        "queue": ("queue", dict),
        "hosts": ("hosts", dict),
    }[args.action]
    try:
        result = request(info["address"], info["port"], info["token"], command, **params())
    except (SmtpLabError, OSError, ValueError) as exc:
        print(f"smtplab: {exc}", file=sys.stderr)
        return 1
    print(result if isinstance(result, str) else json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtplab", description="A real mail network on loopback.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the lab and run until Ctrl-C / SIGTERM")
    up.add_argument("--json", action="store_true", help="print hosts, ports and users as one JSON line")
    up.add_argument("--dir", metavar="PATH", help="keep mailboxes and queue in PATH (survives restarts)")
    up.add_argument("--scenario", metavar="FILE", help="a scenario as JSON (see Scenario.to_dict())")
    ctl = commands.add_parser("ctl", help="steer a running lab: down/up HOST, fail/drop/slow HOST STAGE, "
                                          "clear [HOST], faults, advance DURATION, queue, hosts")
    ctl.add_argument("--dir", metavar="PATH", help="the --dir the lab was started with")
    ctl.add_argument("--port", type=int, help="control port (printed by `up`)")
    ctl.add_argument("--token", help="control token (printed by `up`)")
    ctl.add_argument("action", choices=["down", "up", "fail", "drop", "slow", "clear", "faults", "advance",
                                        "queue", "hosts"])
    ctl.add_argument("params", nargs="*", help="e.g. `fail mx1 RCPT '451 4.7.1 Try later'`, `advance 5m`")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    if args.command == "ctl":
        return _ctl(args)
    return 2  # pragma: no cover - argparse rejects unknown commands
