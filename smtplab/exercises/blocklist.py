"""Check of notebook 06's blocklist exercise: ask a DNS blocklist yourself, and read a listed client's 554.

The learner writes `listing_reason(lab, address)`: the reason a blocklist gives for a client address, or
None when it is not listed. The check runs that function in a fresh lab that lists a host the learner has
not seen listed, with a reason the learner has never read, and compares with the refusal that Bob's MX
really gives a connection from that host (RFC 5782: the address's octets reversed under the list's zone;
an A record means listed, the TXT record at the same name says why).
"""

from __future__ import annotations

import secrets
from typing import Any

from ..i18n import N_, _
from ..lab import Lab
from ..scenario import Scenario
from . import Feedback, failed, passed, unanswered
from ._answers import is_placeholder

__all__ = ["check_listing_reason", "ZONE"]

LISTING = N_("Exercise 1 · ask the blocklist yourself")
ZONE = "bl.lab"
MX = "mx1.example.net"
BOB = "bob@example.net"
LISTED_HOST = "smtp.example.net"  # listed in the check's own lab: not the notebook's mail.evil.example
CLEAN_HOST = "smtp.example.org"



def _call(function: Any, lab: Any, address: str) -> tuple[Any, str]:
    try:
        return function(lab, address), ""
    except Exception as exc:  # the learner's code: report it, never crash a Run-All
        return None, f"{type(exc).__name__}: {exc}"


def _refusal(lab: Any, host: str) -> Any:
    """What Bob's MX answers RCPT TO from a connection that comes from `host`."""
    session = lab.session(MX, source=host)
    try:
        session.ehlo(host)
        session.mail(f"postmaster@{host.split('.', 1)[1]}")
        reply = session.rcpt(BOB)
        session.quit()
    finally:
        session.close()
    return reply


def _clean_text(value: Any) -> str:
    text = bytes(value).decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    return text.strip().strip('"')


def check_listing_reason(lab: Any, listing_reason: Any) -> Feedback:
    """Run the learner's `listing_reason(lab, address)` on the notebook's lab and on a fresh lab of its own."""
    if is_placeholder(listing_reason):
        return unanswered(_("Write the function listing_reason(lab, address): it asks the lab DNS about address in the "
                          "blocklist bl.lab and returns the list's reason as text, or None."), _(LISTING))
    if not callable(listing_reason):
        return failed(_("listing_reason must be a function of (lab, address), not a {type}: "
                      "the check runs it on addresses of another lab.").format(type=type(listing_reason).__name__), _(LISTING))
    evil = lab.host("mail.evil.example").address if "mail.evil.example" in lab.hosts else None
    if evil is not None:
        mine, error = _call(listing_reason, lab, evil)
        if error:
            return failed(_("listing_reason(lab, {evil!r}) raised {error}. Try its steps one at a time in a cell.").format(evil=evil, error=error),
                          _(LISTING))
        if is_placeholder(mine):  # the untouched stub returns None too: not a wrong answer yet
            return unanswered(_("listing_reason(lab, {evil!r}) returns {mine!r}, but mail.evil.example ({evil}) is on "
                              "this lab's blocklist. Write the function's steps: which DNS name does a server ask "
                              "for that address (RFC 5782 section 2.1), and which record type holds the reason?").format(evil=evil, mine=mine),
                              _(LISTING))
    reason = f"reported for spam runs, case {secrets.token_hex(3)}"
    scenario = Scenario.security(policy="reject").to_dict()
    scenario["blocklist"] = {LISTED_HOST: reason}
    try:
        with Lab(scenario).start() as other:
            listed = other.host(LISTED_HOST).address
            clean = other.host(CLEAN_HOST).address
            refusal = _refusal(other, LISTED_HOST)
            found, error = _call(listing_reason, other, listed)
            clean_found, clean_error = _call(listing_reason, other, clean)
    except Exception as exc:  # the check must never crash a Run-All
        return failed(_("the check could not run its own lab: {exc}").format(exc=exc), _(LISTING))
    where = (_("In the check's own lab, {LISTED_HOST} ({listed}) is listed, and {MX} answered RCPT TO from it with "
             "'{refusal}'.").format(LISTED_HOST=LISTED_HOST, listed=listed, MX=MX, refusal=refusal))
    if error:
        return failed(_("on another lab's address ({listed}) listing_reason raised {error}. Does it rely on something "
                      "only this notebook's lab has?").format(listed=listed, error=error), _(LISTING))
    if is_placeholder(found):
        return failed(_("listing_reason returned {found!r} for {listed}. {where} Does your function build the name "
                      "from the address it is given, octets reversed, under bl.lab?").format(found=found, listed=listed, where=where), _(LISTING))
    text = _clean_text(found)
    if text != reason and reason in text:
        return failed(_("almost: the list's reason is in what listing_reason returned for {listed}, with more around it "
                      "({count} characters). {where} Return only the text of the TXT record, without its quotes.").format(listed=listed, count=len(text), where=where),
                      _(LISTING))
    if text != reason:
        shown = text if len(text) < 120 else text[:117] + "..."
        return failed(_("for {listed} listing_reason returned {shown!r}, not the reason the list gives. {where} Ask for "
                      "the TXT record (not the A record) and return its text.").format(listed=listed, shown=shown, where=where), _(LISTING))
    if clean_error:
        return failed(_("for a clean address ({clean}) listing_reason raised {clean_error}. A blocklist answers "
                      "NXDOMAIN for an address it does not list: return None then.").format(clean=clean, clean_error=clean_error), _(LISTING))
    if not is_placeholder(clean_found):
        return failed(_("for {clean} ({CLEAN_HOST}), which no list names, listing_reason returned {clean_found!r}. "
                      "Look at the rcode of the answer: NXDOMAIN means not listed.").format(clean=clean, CLEAN_HOST=CLEAN_HOST, clean_found=clean_found), _(LISTING))
    return passed(_("Right. {where} Your function found the same reason in the list's TXT record, and None for "
                  "{clean}. The MX asks at RCPT, before any message is sent (like Postfix's reject_rbl_client), and "
                  "quotes the list's reason in its 554 so that the sender's admin learns why (RFC 5782 section "
                  "2.1); 554 is permanent, so the sending server bounces instead of retrying.").format(where=where, clean=clean), _(LISTING))
