"""`python -m smtplab up`: run the lab in a terminal, for telnet, swaks, curl, dig and friends."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .control import CONTROL_FILE, TOKEN_VARIABLE, ControlServer, find_control, request
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
        control.write_file(lab.directory / CONTROL_FILE)
        if args.json:
            control_info = {"address": control.address, "port": control.port,
                            "file": str(lab.directory / CONTROL_FILE)}  # the token is in that file
            print(json.dumps({**lab.describe(), "control": control_info}), flush=True)
        else:
            _print_human(lab)
            # The token stays in the lab directory (0600): `ctl` reads it there, never from a command line.
            print(f"control from another terminal: python -m smtplab ctl --dir {lab.directory} down mx1", flush=True)
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
    if args.token is not None:
        print(f"smtplab: --token is refused: every user of this machine can read a command line "
              f"(/proc/*/cmdline). Give --dir PATH (the lab directory), or --port with {TOKEN_VARIABLE} set "
              "in the environment.", file=sys.stderr)
        return 2
    try:
        info = find_control(args.dir, args.port)
    except SmtpLabError as exc:
        print(f"smtplab: {exc}", file=sys.stderr)
        return 2
    p = args.params
    usage = {
        "down": (1, "down HOST"), "up": (1, "up HOST"), "fail": (3, "fail HOST STAGE 'REPLY'"),
        "drop": (2, "drop HOST STAGE"), "slow": (3, "slow HOST STAGE SECONDS"), "advance": (1, "advance 5m"),
    }
    if args.action == "pcap" and len(p) not in (1, 2):
        print("smtplab: usage: python -m smtplab pcap PATH [--message ID]", file=sys.stderr)
        return 2
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
        "pcap": ("pcap", lambda: {"path": str(Path(p[0]).resolve()), **({"message": p[1]} if p[1:] else {})}),
    }[args.action]
    try:
        result = request(info["address"], info["port"], info["token"], command, **params())
    except (SmtpLabError, OSError, ValueError) as exc:
        print(f"smtplab: {exc}", file=sys.stderr)
        return 1
    if args.action == "pcap":
        _print_capture(result)
    else:
        print(result if isinstance(result, str) else json.dumps(result, indent=1))
    return 0


def _pcap(args: argparse.Namespace) -> int:
    """`python -m smtplab pcap PATH [--message ID]`: a capture of the running lab (through its control port)."""
    params = [args.path] + ([args.message] if args.message else [])
    return _ctl(argparse.Namespace(dir=args.dir, port=args.port, token=args.token, action="pcap", params=params))


def _print_capture(result: dict[str, Any]) -> None:
    print(f"wrote {result['pcap']} ({result['packets']} packets, {result['connections']} connections)")
    print(f"TLS keys of {result['sessions']} sessions in {result['keylog']}")
    print("open it in Wireshark:")
    print(result["wireshark"])
    print("or list it with tshark (add -Y FILTER to pick frames):")
    print(result["tshark"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtplab", description="A real mail network on loopback.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the lab and run until Ctrl-C / SIGTERM")
    up.add_argument("--json", action="store_true", help="print hosts, ports and users as one JSON line")
    up.add_argument("--dir", metavar="PATH", help="keep mailboxes and queue in PATH (survives restarts)")
    up.add_argument("--scenario", metavar="FILE", help="a scenario as JSON (see Scenario.to_dict())")
    ctl = commands.add_parser("ctl", help="steer a running lab: down/up HOST, fail/drop/slow HOST STAGE, "
                                          "clear [HOST], faults, advance DURATION, queue, hosts")
    ctl.add_argument("--dir", metavar="PATH", help="the lab directory `up` printed (or set SMTPLAB_DIR)")
    ctl.add_argument("--port", type=int, help=f"control port, with the token in ${TOKEN_VARIABLE}")
    ctl.add_argument("--token", help=argparse.SUPPRESS)  # refused with an explanation: never on a command line
    ctl.add_argument("action", choices=["down", "up", "fail", "drop", "slow", "clear", "faults", "advance",
                                        "queue", "hosts", "pcap"])
    ctl.add_argument("params", nargs="*", help="e.g. `fail mx1 RCPT '451 4.7.1 Try later'`, `advance 5m`")
    pcap = commands.add_parser("pcap", help="write the running lab's traffic as a pcapng file for Wireshark, "
                                            "with its TLS key log beside it")
    pcap.add_argument("path", help="the capture file to write, e.g. lab.pcapng (the key log: lab.keylog)")
    pcap.add_argument("--message", metavar="ID", help="only this message's traffic (queue id or Message-ID)")
    pcap.add_argument("--dir", metavar="PATH", help="the lab directory `up` printed (or set SMTPLAB_DIR)")
    pcap.add_argument("--port", type=int, help=f"control port, with the token in ${TOKEN_VARIABLE}")
    pcap.add_argument("--token", help=argparse.SUPPRESS)  # refused with an explanation, as by ctl
    args = parser.parse_args(argv)
    if args.command == "pcap":
        return _pcap(args)
    if args.command == "up":
        return _up(args)
    if args.command == "ctl":
        return _ctl(args)
    return 2  # pragma: no cover - argparse rejects unknown commands
