"""Check for the lesson on reputation: forward-confirmed reverse DNS written by the learner.

The check calls the learner's `fcrdns(address)` on every distinct address of the lab's hosts and on
127.0.0.1 (a client the lab DNS does not know, asked last), in an order it shuffles, and compares each answer with
smtplab.iprev. It also reads the DNS questions the lab server received meanwhile: a function that knows
the answers without asking (a table of the lab's hosts) asks no PTR question, and fails.
"""

from __future__ import annotations

import random
from typing import Any

from ..auth.iprev import iprev
from ..trace.events import DnsQuery
from . import Feedback, failed, passed, unanswered
from ._answers import is_placeholder

__all__ = ["check_fcrdns", "reverse_name"]

FCRDNS = "Exercise 1 · forward-confirmed reverse DNS"
UNKNOWN = "127.0.0.1"


def reverse_name(address: str) -> str:
    """The PTR name of an IPv4 address (RFC 1035 §3.5): 127.0.1.10 -> 10.1.0.127.in-addr.arpa."""
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


def _how(address: str) -> str:
    return (f"Ask the lab DNS yourself: lab.dig({reverse_name(address)!r}, 'PTR'), then lab.dig(name, 'A') for the "
            "name it gives, and compare the address.")


def check_fcrdns(fcrdns: Any, lab: Any) -> Feedback:
    """Each address's confirmed name (or None), as the learner's function finds it through the lab DNS."""
    if is_placeholder(fcrdns):
        return unanswered("Write fcrdns(address) in the cell above and pass the function here.", FCRDNS)
    if not callable(fcrdns):
        return failed(f"pass the function itself (fcrdns, without parentheses), not a {type(fcrdns).__name__}.",
                      FCRDNS)
    addresses = sorted({h.address for h in lab.hosts.values()} - {UNKNOWN})
    random.shuffle(addresses)
    addresses.append(UNKNOWN)  # last: a function that always says None is then told so at a known host
    right = 0
    for address in addresses:
        expected = iprev(address, lab)
        mark = lab.mark()
        try:
            got = fcrdns(address)
        except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything; it is reported
            return failed(f"fcrdns({address!r}) raised {type(exc).__name__}: {exc}. {_how(address)}", FCRDNS)
        if isinstance(got, str):
            got = got.rstrip(".").lower() or None
        elif got is not None:
            return failed(f"fcrdns({address!r}) returned a {type(got).__name__}; return the confirmed name as a "
                          "string, or None when there is none.", FCRDNS)
        want = expected.name if expected.passed else None
        if got != want:
            if got is None:
                said = "None: no confirmed name"
            else:
                said = repr(got)
            return failed(f"fcrdns({address!r}) returned {said}, which the lab DNS does not confirm (the check's own "
                          f"lookup found {len(expected.ptr_names)} PTR name(s) for it). {_how(address)}", FCRDNS)
        asked = [e.payload for e in lab.trace.since(mark) if isinstance(e.payload, DnsQuery)]
        if not any(q.qtype == "PTR" and q.qname.rstrip(".") == reverse_name(address) for q in asked):
            return failed(f"fcrdns({address!r}) gave an answer without asking the lab DNS for the PTR record of "
                          f"{reverse_name(address)}: a receiving server knows only the address, so the name must "
                          "come from the DNS.", FCRDNS)
        if want is not None and not any(q.qtype == "A" and q.qname.rstrip(".").lower() == want for q in asked):
            return failed(f"for {address!r} your function asked for the PTR record but never checked the name's A "
                          "record: anyone can write any name into the reverse zone of their own addresses, so the "
                          "name counts only when it leads back to the address (RFC 8601 §3).", FCRDNS)
        right += 1
    return passed(f"all {right} addresses right, each from the DNS: a PTR question, then the A record of the name, "
                  f"and None for {UNKNOWN}, which the lab's reverse zone does not name.", FCRDNS)
