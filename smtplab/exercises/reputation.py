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
from ..i18n import N_, _, ngettext
from ..trace.events import DnsQuery
from . import Feedback, failed, passed, unanswered
from ._answers import is_placeholder

__all__ = ["check_fcrdns", "reverse_name"]

FCRDNS = N_("Exercise 1 · forward-confirmed reverse DNS")
UNKNOWN = "127.0.0.1"


def reverse_name(address: str) -> str:
    """The PTR name of an IPv4 address (RFC 1035 §3.5): 127.0.1.10 -> 10.1.0.127.in-addr.arpa."""
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


def _how(address: str) -> str:
    return _("Ask the lab DNS yourself: lab.dig({reverse!r}, 'PTR'), then lab.dig(name, 'A') for the name it "
             "gives, and compare the address.").format(reverse=reverse_name(address))


def check_fcrdns(fcrdns: Any, lab: Any) -> Feedback:
    """Each address's confirmed name (or None), as the learner's function finds it through the lab DNS."""
    if is_placeholder(fcrdns):
        return unanswered(_("Write fcrdns(address) in the cell above and pass the function here."), _(FCRDNS))
    if not callable(fcrdns):
        return failed(_("pass the function itself (fcrdns, without parentheses), not a {type}.").format(
            type=type(fcrdns).__name__), _(FCRDNS))
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
            return failed(_("fcrdns({address!r}) raised {error}: {detail}. {how}").format(
                address=address, error=type(exc).__name__, detail=exc, how=_how(address)), _(FCRDNS))
        if isinstance(got, str):
            got = got.rstrip(".").lower() or None
        elif got is not None:
            return failed(_("fcrdns({address!r}) returned a {type}; return the confirmed name as a string, or None "
                            "when there is none.").format(address=address, type=type(got).__name__), _(FCRDNS))
        want = expected.name if expected.passed else None
        if got != want:
            said = _("None: no confirmed name") if got is None else repr(got)
            return failed(ngettext(
                "fcrdns({address!r}) returned {said}, which the lab DNS does not confirm (the check's own lookup "
                "found {n} PTR name for it). {how}",
                "fcrdns({address!r}) returned {said}, which the lab DNS does not confirm (the check's own lookup "
                "found {n} PTR names for it). {how}", len(expected.ptr_names)).format(
                address=address, said=said, n=len(expected.ptr_names), how=_how(address)), _(FCRDNS))
        asked = [e.payload for e in lab.trace.since(mark) if isinstance(e.payload, DnsQuery)]
        if not any(q.qtype == "PTR" and q.qname.rstrip(".") == reverse_name(address) for q in asked):
            return failed(_("fcrdns({address!r}) gave an answer without asking the lab DNS for the PTR record of "
                            "{reverse}: a receiving server knows only the address, so the name must come from the "
                            "DNS.").format(address=address, reverse=reverse_name(address)), _(FCRDNS))
        if want is not None and not any(q.qtype == "A" and q.qname.rstrip(".").lower() == want for q in asked):
            return failed(_("for {address!r} your function asked for the PTR record but never checked the name's A "
                            "record: anyone can write any name into the reverse zone of their own addresses, so the "
                            "name counts only when it leads back to the address (RFC 8601 §3).").format(
                address=address), _(FCRDNS))
        right += 1
    return passed(_("all {n} addresses right, each from the DNS: a PTR question, then the A record of the name, "
                    "and None for {unknown}, which the lab's reverse zone does not name.").format(
        n=right, unknown=UNKNOWN), _(FCRDNS))
