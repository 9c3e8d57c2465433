"""Fault injection: make a lab host answer a code, stall, or hang up at a chosen SMTP stage.

Faults are how a learner sees the delivery guarantee at work: a 451 at RCPT is retried, a 550
bounces, a connection dropped during DATA leaves no half message anywhere. Every injected fault is
recorded in the trace where it fires, and every fault can be removed again.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass

from ..errors import SmtpLabError
from ..i18n import N_, _, lazy

__all__ = ["Fault", "FaultTable", "STAGES"]

# Where a fault can fire, in the order of an SMTP session. "DATA" is the DATA command (instead of
# 354), "body" is while the message is arriving, "end-of-data" is the reply to the final dot.
STAGES = ("connect", "EHLO", "MAIL", "RCPT", "DATA", "body", "end-of-data")


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour of one host."""

    id: int
    host: str
    stage: str
    reply: str = ""  # the reply to give instead of the normal one, e.g. "451 4.7.1 Try again later"
    drop: bool = False  # hang up (TCP reset) instead of answering
    delay: float = 0.0  # seconds to stall before answering (real time: this is about the network)
    probability: float = 1.0
    recipient: str = ""  # only for this RCPT address (RCPT stage only)

    def describe(self) -> str:
        """What the fault does, in one line (a LazyText: English as a str, the learner's language when shown)."""
        what = lazy(N_("hang up")) if self.drop else (
            lazy(N_("answer {reply}"), reply=repr(self.reply)) if self.reply else lazy(N_("answer normally")))
        if self.delay:
            what = lazy(N_("stall {delay} s, then {what}"), delay=f"{self.delay:g}", what=what)
        facts = dict(host=self.host, stage=self.stage, what=what, recipient=self.recipient,
                     probability=f"{self.probability:g}")
        if self.probability >= 1:
            return lazy(N_("{host} at {stage} for <{recipient}>: {what}") if self.recipient else
                        N_("{host} at {stage}: {what}"), **facts)
        return lazy(N_("{host} at {stage} for <{recipient}>: {what} with probability {probability}") if self.recipient
                    else N_("{host} at {stage}: {what} with probability {probability}"), **facts)


class FaultTable:
    """The active faults of a lab (thread-safe: cells add them, the servers read them)."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: dict[int, Fault] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, host: str, stage: str, reply: str = "", *, drop: bool = False, delay: float = 0.0,
            probability: float = 1.0, recipient: str = "") -> Fault:
        stage = _stage(stage)
        if not reply and not drop and not delay:
            raise SmtpLabError(_("a fault needs a reply (e.g. '451 4.3.0 Try later'), drop=True or a delay"))
        if reply:
            code = reply[:3]
            if not (code.isdigit() and code[0] in "45" and (len(reply) == 3 or reply[3] == " ")):
                raise SmtpLabError(_("a fault reply is a 4xx or 5xx SMTP reply like '451 4.3.0 Try later', got {reply!r}")
                                   .format(reply=reply))
        if stage == "body" and reply:
            raise SmtpLabError(_("during the message body a server cannot reply; use drop=True or delay="))
        if stage == "connect" and reply and not reply.startswith(("421", "554")):
            raise SmtpLabError(_("a server refuses at connect time with 421 (try later) or 554 (no service)"))
        if not 0 < probability <= 1:
            raise SmtpLabError(_("probability must be in (0, 1]"))
        if recipient and stage != "RCPT":
            raise SmtpLabError(_("recipient= only makes sense at the RCPT stage"))
        if not 0 <= delay <= 60:
            raise SmtpLabError(_("delay is in real seconds, between 0 and 60"))
        with self._lock:
            fault = Fault(next(self._ids), host, stage, reply, drop, float(delay), float(probability),
                          recipient.lower())
            self._faults[fault.id] = fault
        return fault

    def remove(self, fault: Fault | int) -> None:
        with self._lock:
            self._faults.pop(fault if isinstance(fault, int) else fault.id, None)

    def clear(self, host: str | None = None) -> None:
        """Remove every fault (of one host, or of the whole lab)."""
        with self._lock:
            for key in [k for k, f in self._faults.items() if host is None or f.host == host]:
                del self._faults[key]

    def active(self, host: str | None = None) -> tuple[Fault, ...]:
        with self._lock:
            return tuple(f for f in self._faults.values() if host is None or f.host == host)

    def seed(self, value: int) -> None:
        """Make probabilistic faults repeatable."""
        with self._lock:
            self._random.seed(value)

    def pick(self, host: str, stage: str, recipient: str = "") -> Fault | None:
        """Return the fault that fires now at this point, if any (probabilities are rolled here)."""
        if not self._faults:  # the usual case, asked at every stage of every message: no lock needed
            return None
        with self._lock:
            for fault in self._faults.values():
                if fault.host != host or fault.stage != stage:
                    continue
                if fault.recipient and fault.recipient != recipient.lower():
                    continue
                if fault.probability >= 1 or self._random.random() < fault.probability:
                    return fault
        return None

    def __len__(self) -> int:
        return len(self._faults)

    def __repr__(self) -> str:
        items = "; ".join(f.describe() for f in self.active()) or "none"
        return f"<faults: {items}>"


def _stage(stage: str) -> str:
    for known in STAGES:
        if stage.lower() == known.lower():
            return known
    raise SmtpLabError(_("unknown stage {stage!r}; choose one of {stages}").format(stage=stage, stages=", ".join(STAGES)))
