"""The lab's users, hosts and DNS server as a learner meets them: `lab.users`, `lab.hosts`, `lab.dns`."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SmtpLabError
from .files import write_private
from .i18n import N_, _, lazy
from .net.faults import Fault
from .scenario import LISTENERS, WELL_KNOWN_PORTS
from .trace.events import LabChange

__all__ = ["new_password", "sibling_address", "User", "DnsInfo", "Host", "listeners_of", "PORT_OFFSETS", "plan_ports", "load_ports", "save_ports"]

# `ports=BASE` (`up --ports BASE`): the DNS listens on BASE, the n-th host of the scenario (1, 2, ...) on
# BASE + 10*n + the service's offset; the last digit names the service, whatever the host.
PORT_OFFSETS = {"smtp": 0, "submission": 1, "submissions": 2, "imap": 3, "imaps": 4, "pop3": 5, "pop3s": 6}
PORTS_FILE = "ports.json"  # in the lab directory: a lab restarted there keeps its ports


def listeners_of(services: Sequence[str]) -> list[str]:
    """The listeners a host runs for its scenario services, in the order `up` prints them."""
    return [name for service in services for name in LISTENERS.get(service, (service,))]


def plan_ports(base: int, hosts: Sequence[tuple[str, Sequence[str]]]) -> tuple[int, dict[str, dict[str, int]]]:
    """The DNS port and each host's ports for `ports=base` (see PORT_OFFSETS)."""
    last = base + 10 * len(hosts) + max(PORT_OFFSETS.values())
    if not 1024 <= base or last > 65535:
        raise SmtpLabError(_("ports={base}: this lab needs ports {base} to {last}; choose a base from 1024 "
                             "to {highest} (e.g. 10000)").format(base=base, last=last, highest=65535 - (last - base)))
    return base, {name: {s: base + 10 * n + PORT_OFFSETS[s] for s in listeners_of(services)}
                  for n, (name, services) in enumerate(hosts, start=1)}


def load_ports(directory: Path) -> tuple[int, dict[str, dict[str, int]]]:
    """The ports a lab used last time in `directory` (0 and {} when it never ran there)."""
    try:
        saved = json.loads((directory / PORTS_FILE).read_text())
        return int(saved.get("dns", 0)), {str(h): {str(s): int(p) for s, p in ports.items()}
                                         for h, ports in saved.get("hosts", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return 0, {}


def save_ports(directory: Path, dns: int, hosts: dict[str, dict[str, int]]) -> None:
    """Remember the ports in `directory` (a 0600 file from its creation, replaced whole)."""
    write_private(directory / PORTS_FILE, json.dumps({"dns": dns, "hosts": hosts}, indent=1))


@dataclass(frozen=True)
class User:
    """A mailbox owner. Log in to SMTP AUTH and IMAP with the full address."""

    address: str
    password: str
    domain: str

    @property
    def login(self) -> str:
        return self.address


@dataclass(frozen=True)
class DnsInfo:
    name: str
    address: str
    port: int

    def dig(self, name: str, rdtype: str = "MX") -> str:
        """Return the dig command a learner can paste into a terminal."""
        return f"dig @{self.address} -p {self.port} {name} {rdtype}"


@dataclass(eq=False)
class Host:
    """A machine of the lab: a name, a loopback address and the ports of its services."""

    name: str
    address: str
    domain: str
    services: tuple[str, ...]
    options: tuple[str, ...] = ()  # deliberate misconfigurations: "open_relay", "plaintext_auth"
    ports: dict[str, int] = field(default_factory=dict)
    _lab: Any = field(default=None, repr=False)  # the Lab: its `faults` and `trace`
    _power: Callable[[Host, bool], None] | None = field(default=None, repr=False)  # starts/stops the services
    is_up: bool = True

    def down(self) -> None:
        """Stop every service of this host (connections are refused until `up()`)."""
        assert self._power is not None, "a Host made by hand runs no servers"
        self._power(self, False)

    def up(self) -> None:
        """Start this host's services again on the same address and ports."""
        assert self._power is not None, "a Host made by hand runs no servers"
        self._power(self, True)

    def inject(self, stage: str, reply: str = "", *, drop: bool = False, delay: float = 0.0,
               probability: float = 1.0, recipient: str = "") -> Fault:
        """Make this host misbehave at an SMTP stage until the fault is removed.

        `stage` is one of connect, EHLO, MAIL, RCPT, DATA, body, end-of-data. Give the `reply` to
        answer instead (e.g. "451 4.7.1 Greylisted, try again later"), or `drop=True` to hang up,
        or a `delay` in seconds; `probability` below 1 makes it fire only sometimes.
        """
        fault = self._lab.faults.add(self.name, stage, reply, drop=drop, delay=delay,
                                     probability=probability, recipient=recipient)
        self._lab.trace.record("lab", "state", self.name, lazy(N_("fault set: {fault}"), fault=fault.describe()), peer=self.name,
                               payload=LabChange("fault", fault.describe()))
        return fault

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults injected into this host that are still active."""
        return self._lab.faults.active(self.name)

    def clear_faults(self) -> None:
        """Remove every fault of this host: it behaves normally again."""
        if self.faults:
            self._lab.faults.clear(self.name)
            self._lab.trace.record("lab", "state", self.name, lazy(N_("faults of {host} removed"), host=self.name), peer=self.name,
                                   payload=LabChange("fault-removed", self.name))

    @property
    def well_known_ports(self) -> dict[str, int]:
        """The port each service would use on the internet (25, 587, 465, 143, 993, 110, 995)."""
        return {s: WELL_KNOWN_PORTS[s] for s in self.ports}

    def __repr__(self) -> str:
        state = "" if self.is_up else ", DOWN"
        return f"<Host {self.name} {self.address} {self.ports}{state}>"


def sibling_address(address: str, last: int) -> str:
    """An address beside `address` in its /24 (127.0.2.10 -> 127.0.2.66); 127.0.0.1 stays (no own addresses)."""
    if address == "127.0.0.1":
        return address
    return address.rsplit(".", 1)[0] + f".{last}"


def new_password() -> str:
    # Readable, typeable passwords: learners copy them into swaks and curl.
    return secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
