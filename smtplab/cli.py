"""`python -m smtplab up`: run the lab in a terminal, for telnet, swaks, curl, dig and friends."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .control import CONTROL_FILE, TOKEN_VARIABLE, ControlServer, find_control, request
from .errors import SmtpLabError, UnknownLanguage
from .files import write_private
from .hosts import Host, User
from .i18n import _, resolve_language
from .lab import Lab, start
from .scenario import WELL_KNOWN_PORTS, Scenario

__all__ = ["main", "env_lines"]

ENV_FILE = "env.sh"  # in the lab directory: `. mylab/env.sh` gives a second terminal the lab's values


def _roles(lab: Lab) -> tuple[Host | None, User | None, User | None, Host | None, Host | None]:
    """The hosts and users of the usual recipe: a sender's submission host, a recipient's MX and IMAP host."""
    sub = next((h for h in lab.hosts.values() if "submission" in h.ports), None)
    sender = next((u for u in lab.users.values() if sub is not None and u.domain == sub.domain), None)
    recipient = next((u for u in lab.users.values() if sender is not None and u.domain != sender.domain), sender)
    mx = imap = None
    if recipient is not None:
        provider = lab.scenario.provider_of(recipient.domain)
        exchanges = [name for _pref, name in sorted(provider.mx)] if provider is not None else []
        mx = next((lab.hosts[n] for n in exchanges if n in lab.hosts and "smtp" in lab.hosts[n].ports),
                  next((h for h in lab.hosts.values() if h.domain == recipient.domain and "smtp" in h.ports), None))
        imap = next((h for h in lab.hosts.values() if h.domain == recipient.domain and "imap" in h.ports), None)
    return sub, sender, recipient, mx, imap


def env_lines(lab: Lab) -> list[str]:
    """`export` lines for a shell: the lab's CA, DNS, the usual hosts' addresses and ports, two users."""
    q = shlex.quote
    # Absolute paths: the second terminal may be in another directory than the one `up` was started in.
    lines = [f"export SMTPLAB_DIR={q(str(Path(lab.directory).resolve()))} CA={q(str(Path(lab.ca_file).resolve()))}",
             f"export DNS_ADDR={lab.dns.address} DNS={lab.dns.port}"]
    sub, sender, recipient, mx, imap = _roles(lab)
    for host, prefix, names in ((sub, "SUB", {"submission": "SUB", "submissions": "SUBS"}),
                                (mx, "MX", {"smtp": "MX"}),
                                (imap, "IMAP", {"imap": "IMAP", "imaps": "IMAPS", "pop3": "POP3", "pop3s": "POP3S"})):
        if host is not None:
            ports = " ".join(f"{var}={host.ports[s]}" for s, var in names.items() if s in host.ports)
            lines.append(f"export {prefix}_ADDR={host.address} {ports}  # {host.name}")
    if sender is not None and recipient is not None:
        lines.append(f"export FROM={q(sender.address)} FROM_PW={q(sender.password)} "
                     f"TO={q(recipient.address)} TO_PW={q(recipient.password)}")
    return lines


def _write_env(lab: Lab) -> Path:
    path = lab.directory / ENV_FILE  # 0600: it holds passwords
    write_private(path, f"# written by `python -m smtplab up`: load it with  . {path.resolve()}\n"
                        + "\n".join(env_lines(lab)) + "\n")
    return path


def _print_human(lab: Lab, env_file: Path) -> None:
    info = lab.describe()
    print(_("smtplab is running (lab directory {directory})").format(directory=info["directory"]))
    try_dig = _("try: {command}").format(command=lab.dns.dig("example.net"))
    print(f"DNS  {lab.dns.name:<18} {lab.dns.address}:{lab.dns.port}   {try_dig}")
    for host in lab.hosts.values():
        ports = "  ".join(f"{service} {port}" for service, port in host.ports.items())
        print(f"host {host.name:<18} {host.address:<12} {ports}")
    print("     " + _("on the Internet: {ports}").format(
        ports=", ".join(f"{s} {p}" for s, p in WELL_KNOWN_PORTS.items() if s != "dns")))
    print("     " + _("(submission, imap and pop3 start TLS with STARTTLS/STLS; submissions, imaps and pop3s from the "
                      "first byte)"))
    for user in lab.users.values():
        print(_("user {address:<24} password {password}").format(address=user.address, password=user.password))
    print(_("TLS  CA certificate: {path}  (curl --cacert, swaks --tls-ca-path, openssl -CAfile)").format(
        path=lab.ca_file))
    print(_("In another terminal, `. {path}` sets these (or paste them):").format(path=env_file.resolve()))
    for line in env_lines(lab):
        print("  " + line)
    sub, sender, recipient, _mx, _imap = _roles(lab)
    if sub is not None and sender is not None and recipient is not None:
        print(_("then, for example:"))
        print('  swaks --server "$SUB_ADDR:$SUB" --tls --tls-verify --tls-ca-path "$CA" \\')
        print('        --auth PLAIN --auth-user "$FROM" --auth-password "$FROM_PW" --from "$FROM" --to "$TO"')
    print(_("Press Ctrl-C to stop."))


def _up(args: argparse.Namespace) -> int:
    scenario: Any = None
    if args.scenario:
        try:
            scenario = Scenario.from_dict(json.loads(Path(args.scenario).read_text()))
        except (OSError, ValueError) as exc:
            print("smtplab: " + _("cannot read scenario {path}: {error}").format(path=args.scenario, error=exc),
                  file=sys.stderr)
            return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        lab = start(scenario=scenario, directory=args.dir, ports=args.ports)
    except SmtpLabError as exc:
        print(f"smtplab: {exc}", file=sys.stderr)
        return 2
    control = ControlServer(lab)
    try:
        lab.services.call(control.start())
        control.write_file(lab.directory / CONTROL_FILE)
        env_file = _write_env(lab)
        if args.json:
            control_info = {"address": control.address, "port": control.port,
                            "file": str(lab.directory / CONTROL_FILE)}  # the token is in that file
            print(json.dumps({**lab.describe(), "control": control_info, "env_file": str(env_file)}), flush=True)
        else:
            _print_human(lab, env_file)
            # The token stays in the lab directory (0600): `ctl` reads it there, never from a command line.
            print(_("control from another terminal: {command}").format(
                command=f"python -m smtplab ctl --dir {lab.directory} down mx1"), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            lab.services.call(control.stop())
        except SmtpLabError:
            pass
        lab.stop()
    if not args.json:
        print(_("smtplab stopped."), flush=True)
    return 0


def _ctl(args: argparse.Namespace) -> int:
    if args.token is not None:
        print("smtplab: " + _("--token is refused: every user of this machine can read a command line "
                              "(/proc/*/cmdline). Give --dir PATH (the lab directory), or --port with {variable} set "
                              "in the environment.").format(variable=TOKEN_VARIABLE), file=sys.stderr)
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
        print("smtplab: " + _("usage: {command}").format(command="python -m smtplab pcap PATH [--message ID]"),
              file=sys.stderr)
        return 2
    if args.action in usage and len(p) != usage[args.action][0]:
        print("smtplab: " + _("usage: {command}").format(command=f"python -m smtplab ctl {usage[args.action][1]}"),
              file=sys.stderr)
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
    if args.action == "queue" and not args.all:  # what waits; `--all` adds what is delivered or bounced
        result = [item for item in result
                  if not all(r.get("state") in ("delivered", "bounced") for r in item.get("recipients", []))]
    if args.action == "pcap":
        _print_capture(result)
    else:
        print(result if isinstance(result, str) else json.dumps(result, indent=1))
    return 0


def _pcap(args: argparse.Namespace) -> int:
    """`python -m smtplab pcap PATH [--message ID]`: a capture of the running lab (through its control port)."""
    params = [args.path] + ([args.message] if args.message else [])
    return _ctl(argparse.Namespace(dir=args.dir, port=args.port, token=args.token, action="pcap", params=params,
                                   all=False))


def _print_capture(result: dict[str, Any]) -> None:
    print(_("wrote {path} ({packets} packets, {connections} connections)").format(
        path=result["pcap"], packets=result["packets"], connections=result["connections"]))
    print(_("TLS keys of {sessions} sessions in {path}").format(sessions=result["sessions"], path=result["keylog"]))
    print(_("open it in Wireshark:"))
    print(result["wireshark"])
    print(_("or list it with tshark (add -Y FILTER to pick frames):"))
    print(result["tshark"])


def _port_base(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_("{text!r} is not a port number (e.g. 10000)").format(text=text)) from None
    if not 1024 <= value <= 65000:
        raise argparse.ArgumentTypeError(_("{value} is outside 1024-65000 (e.g. 10000)").format(value=value))
    return value


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, with its one fixed word ("usage:") in the learner's language."""

    def add_usage(self, usage: str | None, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, _("usage: ") if prefix is None else prefix)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose headings, -h and error line are translated (argparse's own catalog is not
    installed with Python): arguments go into `.arguments` and `.options`, groups with translated titles."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs["add_help"] = False
        super().__init__(*args, **kwargs)
        self.arguments = self.add_argument_group(_("arguments"))
        self.options = self.add_argument_group(_("options"))
        self.options.add_argument("-h", "--help", action="help", default=argparse.SUPPRESS,
                                  help=_("show this help message and exit"))

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(2, _("{prog}: error: {message}").format(prog=self.prog, message=message) + "\n")


def main(argv: list[str] | None = None) -> int:
    try:
        resolve_language()  # SMTPLAB_LANG=xx is a mistake to name now, not English text without a word
    except UnknownLanguage as exc:
        print(f"smtplab: {exc}", file=sys.stderr)
        return 2
    parser = _Parser(prog="python -m smtplab", description=_("A real mail network on loopback."))
    commands = parser.add_subparsers(dest="command", required=True, title=_("commands"))
    up = commands.add_parser("up", help=_("start the lab and run until Ctrl-C / SIGTERM"))
    up.options.add_argument("--json", action="store_true", help=_("print hosts, ports and users as one JSON line"))
    up.options.add_argument("--dir", metavar="PATH", help=_("keep mailboxes and queue in PATH (survives restarts)"))
    up.options.add_argument("--scenario", metavar="FILE", help=_("a scenario as JSON (see Scenario.to_dict())"))
    up.options.add_argument(
        "--ports", metavar="BASE", type=_port_base,
        help=_("pin the ports: DNS on BASE, the n-th host's services on BASE+10n+0 smtp, 1 submission, "
               "2 submissions, 3 imap, 4 imaps, 5 pop3, 6 pop3s (without it, a lab started again "
               "with the same --dir keeps its ports)"))
    steer = _("steer a running lab: down/up HOST, fail HOST STAGE REPLY, drop HOST STAGE, slow HOST STAGE SECONDS, "
              "clear [HOST], faults, advance DURATION, queue [--all], hosts")
    ctl = commands.add_parser("ctl", help=steer, description=steer)
    lab_dir = _("the lab directory `up` printed (or set SMTPLAB_DIR)")
    control_port = _("control port, with the token in ${variable}").format(variable=TOKEN_VARIABLE)
    ctl.options.add_argument("--dir", metavar="PATH", help=lab_dir)
    ctl.options.add_argument("--port", type=int, help=control_port)
    ctl.options.add_argument("--token", help=argparse.SUPPRESS)  # refused with an explanation: never on a command line
    ctl.arguments.add_argument("action", choices=["down", "up", "fail", "drop", "slow", "clear", "faults", "advance",
                                                  "queue", "hosts", "pcap"])
    ctl.options.add_argument("--all", action="store_true", help=_("queue: also what was delivered or bounced"))
    ctl.arguments.add_argument("params", nargs="*",
                               help=_("e.g. `fail mx1 RCPT '451 4.7.1 Try later'`, `advance 5m`"))
    pcap = commands.add_parser("pcap", help=_("write the running lab's traffic as a pcapng file for Wireshark, "
                                              "with its TLS key log beside it"))
    pcap.arguments.add_argument("path", help=_("the capture file to write, e.g. lab.pcapng (the key log: lab.keylog)"))
    pcap.options.add_argument("--message", metavar="ID",
                              help=_("only this message's traffic (queue id or Message-ID)"))
    pcap.options.add_argument("--dir", metavar="PATH", help=lab_dir)
    pcap.options.add_argument("--port", type=int, help=control_port)
    pcap.options.add_argument("--token", help=argparse.SUPPRESS)  # refused with an explanation, as by ctl
    args = parser.parse_args(argv)
    if args.command == "pcap":
        return _pcap(args)
    if args.command == "up":
        return _up(args)
    if args.command == "ctl":
        return _ctl(args)
    return 2  # pragma: no cover - argparse rejects unknown commands
