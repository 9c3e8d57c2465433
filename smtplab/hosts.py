"""The lab's users, hosts and DNS server as a learner meets them: `lab.users`, `lab.hosts`, `lab.dns`."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from .events import LabChange
from .faults import Fault
from .scenario import WELL_KNOWN_PORTS

__all__ = ["User", "DnsInfo", "Host"]


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
    _lab: Any = field(default=None, repr=False)
    _servers: list[Any] = field(default_factory=list, repr=False)
    _protocols: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet, repr=False)
    is_up: bool = True

    def down(self) -> None:
        """Stop every service of this host (connections are refused until `up()`)."""
        self._lab._call(self._lab._host_down(self))

    def up(self) -> None:
        """Start this host's services again on the same address and ports."""
        self._lab._call(self._lab._host_up(self))

    def inject(self, stage: str, reply: str = "", *, drop: bool = False, delay: float = 0.0,
               probability: float = 1.0, recipient: str = "") -> Fault:
        """Make this host misbehave at an SMTP stage until the fault is removed.

        `stage` is one of connect, EHLO, MAIL, RCPT, DATA, body, end-of-data. Give the `reply` to
        answer instead (e.g. "451 4.7.1 Greylisted, try again later"), or `drop=True` to hang up,
        or a `delay` in seconds; `probability` below 1 makes it fire only sometimes.
        """
        fault = self._lab.faults.add(self.name, stage, reply, drop=drop, delay=delay,
                                     probability=probability, recipient=recipient)
        self._lab.trace.record("lab", "state", self.name, f"fault set: {fault.describe()}", peer=self.name,
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
            self._lab.trace.record("lab", "state", self.name, f"faults of {self.name} removed", peer=self.name,
                                   payload=LabChange("fault-removed", self.name))

    @property
    def well_known_ports(self) -> dict[str, int]:
        """The port each service would use on the internet (25, 587, 143)."""
        return {s: WELL_KNOWN_PORTS[s] for s in self.ports}

    def __repr__(self) -> str:
        state = "" if self.is_up else ", DOWN"
        return f"<Host {self.name} {self.address} {self.ports}{state}>"
