"""`python -m smtplab up`: run the lab in a terminal, for telnet, swaks, curl, dig and friends."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

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
    print("Press Ctrl-C to stop.", flush=True)


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
    try:
        if args.json:
            print(json.dumps(lab.describe()), flush=True)
        else:
            _print_human(lab)
        while not stop.wait(0.5):
            pass
    finally:
        lab.stop()
    if not args.json:
        print("smtplab stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtplab", description="A real mail network on loopback.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the lab and run until Ctrl-C / SIGTERM")
    up.add_argument("--json", action="store_true", help="print hosts, ports and users as one JSON line")
    up.add_argument("--dir", metavar="PATH", help="keep mailboxes and queue in PATH (survives restarts)")
    up.add_argument("--scenario", metavar="FILE", help="a scenario as JSON (see Scenario.to_dict())")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    return 2  # pragma: no cover - argparse rejects unknown commands
