"""What each trace event says, as typed fields: the payloads that views, widgets and checkers read.

The prose of an event (`TraceEvent.text`) is for a learner to read and may be reworded or translated;
these fields are the facts. A protocol line (SMTP, IMAP, POP3) is the wire text itself, so its payload
is parsed from that line; every other event gets its payload from the code that records it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Connect", "Close", "Refused", "TlsStarted", "SmtpCommand", "SmtpReply", "SmtpData", "SmtpDataEnd",
    "ClientLine", "DnsQuery", "DnsAnswer", "DnsError", "QueueChange", "PolicyVerdict", "Note", "FaultFired",
    "LabChange", "ImapCommand", "ImapResponse", "Pop3Command", "Pop3Response", "Dropped",
    "parse_smtp_command", "parse_smtp_reply", "parse_imap_line", "parse_pop3_line", "payload_of_line",
]


@dataclass(frozen=True, slots=True)
class Connect:
    """A client connected (`client` and `server` are "address:port")."""

    client: str
    server: str


@dataclass(frozen=True, slots=True)
class Close:
    """The connection ended; `error` is empty for an orderly close."""

    error: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """A connection or request the lab refused before any protocol exchange."""

    reason: str


@dataclass(frozen=True, slots=True)
class TlsStarted:
    """The TLS handshake finished: from here the wire is encrypted."""

    version: str
    cipher: str = ""


@dataclass(frozen=True, slots=True)
class SmtpCommand:
    """One command line a client sent (RFC 5321 §4.1.1): the verb upper-cased, the rest as sent."""

    verb: str
    argument: str = ""


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One reply line (RFC 5321 §4.2): `more` is True for a "250-" line that another line follows."""

    code: int
    enhanced: str  # RFC 3463 status code, e.g. "2.1.0"; "" when the line has none
    text: str
    more: bool = False


@dataclass(frozen=True, slots=True)
class SmtpData:
    """A message body as the server read it after its 354 (without the final dot)."""

    size: int  # bytes read, line ends included
    lines: int
    kept: int  # bytes kept in the event's text (a very large body is cut)


@dataclass(frozen=True, slots=True)
class SmtpDataEnd:
    """The line holding only "." that ends the body (RFC 5321 §4.1.1.4)."""


@dataclass(frozen=True, slots=True)
class ClientLine:
    """A client line that is not a command: an AUTH answer, an unfinished line, or one too long."""

    text: str
    complete: bool = True  # False: the connection ended (or the line limit was hit) before its line end


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """A question the lab DNS received (RFC 1035 §4.1.2)."""

    qname: str  # absolute, with the final dot
    qtype: str
    id: int
    transport: str  # "udp" or "tcp"
    asker: str = ""  # correlation id of the work that asked, when a lab component asked


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The lab DNS's answer: its RCODE and answer records in presentation format."""

    rcode: str
    records: tuple[str, ...] = ()
    truncated: bool = False
    authority_soa: bool = False  # no answer, the zone's SOA in the authority section (RFC 2308)


@dataclass(frozen=True, slots=True)
class DnsError:
    """A DNS message the server could not use."""

    reason: str


@dataclass(frozen=True, slots=True)
class QueueChange:
    """The relay queue changed for a message (and some of its recipients).

    `state` is one of: queued, resumed, mx-lookup, connecting, connect-failed, delivered, deferred,
    bounced, dsn-sent, warning-sent, bounce-dropped, tls-policy (MTA-STS / DANE: what the MX must do).
    """

    queue_id: str
    state: str
    recipients: tuple[str, ...] = ()
    mx: str = ""  # the exchange concerned (connecting, connect-failed, delivered...)
    address: str = ""
    port: int = 0
    source: str = ""  # the relay's own address when connecting
    reply: str = ""  # the reply or error that decided it
    exchanges: tuple[tuple[str, int], ...] = ()  # mx-lookup: (exchange, preference) in the order to try
    reused: bool = False  # connecting over a connection kept open from an earlier message


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    """What a receiving server decided about a client or a message (blocklist, SPF/DKIM/DMARC, spam)."""

    verdict: str  # "accepted", "junk", "refused", "deferred" (a 4xx: try later) or "listed"
    summary: str = ""
    reply: str = ""


@dataclass(frozen=True, slots=True)
class Note:
    """Something a server decided or did beside the protocol (DKIM signing, a teaching toggle...)."""

    warning: bool = False  # a thing a learner should notice as risky or refused


@dataclass(frozen=True, slots=True)
class FaultFired:
    """An injected fault fired."""

    description: str


@dataclass(frozen=True, slots=True)
class LabChange:
    """The lab itself changed: a host went down or up, the clock moved, a fault was set."""

    what: str  # "down", "up", "clock", "fault", "key"
    subject: str = ""


@dataclass(frozen=True, slots=True)
class ImapCommand:
    """One IMAP command line (RFC 3501 §2.2.1): its tag, command (UID folded in) and the rest."""

    tag: str
    command: str
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ImapResponse:
    """One IMAP server line: tagged ("a1"), untagged ("*") or a continuation ("+")."""

    tag: str
    status: str = ""  # OK, NO, BAD, BYE, PREAUTH, or "" (e.g. "* 3 EXISTS")
    text: str = ""


@dataclass(frozen=True, slots=True)
class Pop3Command:
    verb: str
    argument: str = ""


@dataclass(frozen=True, slots=True)
class Pop3Response:
    ok: bool | None  # True "+OK", False "-ERR", None for a line of a multi-line answer
    text: str = ""


@dataclass(frozen=True, slots=True)
class ServerError:
    """A server failed inside (a full disk, a bug): the exception, for the teacher; the client got only `reply`."""

    error: str  # "OSError: [Errno 28] No space left on device"
    reply: str  # the reply code sent instead, e.g. "452 4.3.1"


@dataclass(frozen=True, slots=True)
class Dropped:
    """The trace is a ring: `count` older events were dropped here to keep its memory bounded."""

    count: int


_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}\Z")
_STATUS = {"OK", "NO", "BAD", "BYE", "PREAUTH"}


def parse_smtp_command(line: str) -> SmtpCommand:
    """Split a command line the way aiosmtpd does: the verb up to the first space, upper-cased."""
    verb, _, argument = line.partition(" ")
    return SmtpCommand(verb.upper(), argument.strip())


def parse_smtp_reply(line: str) -> SmtpReply | None:
    """Parse "250-2.1.0 text" into its code, enhanced code (RFC 3463 §2) and text; None if not a reply."""
    code = line[:3]
    if len(code) != 3 or not code.isdigit() or line[3:4] not in ("", " ", "-"):
        return None
    rest = line[4:]
    first, _, text = rest.partition(" ")
    if _ENHANCED.match(first) and first[0] == code[0]:
        return SmtpReply(int(code), first, text, line[3:4] == "-")
    return SmtpReply(int(code), "", rest, line[3:4] == "-")


def parse_imap_line(direction: str, line: str) -> ImapCommand | ImapResponse:
    words = line.split(" ", 3)
    if direction == "C":
        tag = words[0]
        command = words[1].upper() if len(words) > 1 else ""
        rest = words[2:]
        if command == "UID" and rest:
            command = "UID " + rest[0].upper()
            rest = rest[1:]
        return ImapCommand(tag, command, " ".join(rest))
    tag = words[0]
    if tag == "+":
        return ImapResponse("+", "", line[2:])
    status = words[1].upper() if len(words) > 1 and words[1].upper() in _STATUS else ""
    text = line.split(" ", 2)[2] if status and len(words) > 2 else line[len(tag) + 1:]
    return ImapResponse(tag, status, text)


def parse_pop3_line(direction: str, line: str) -> Pop3Command | Pop3Response:
    if direction == "C":
        verb, _, argument = line.partition(" ")
        return Pop3Command(verb.upper(), argument)
    if line.startswith("+OK"):
        return Pop3Response(True, line[4:])
    if line.startswith("-ERR"):
        return Pop3Response(False, line[5:])
    return Pop3Response(None, line)


def payload_of_line(protocol: str, direction: str, text: str) -> object:
    """The payload of a protocol line recorded without one: parsed from the wire text itself."""
    if protocol == "smtp":
        if direction == "S":
            return parse_smtp_reply(text) or ClientLine(text)
        return parse_smtp_command(text)
    if protocol == "imap":
        return parse_imap_line(direction, text)
    if protocol == "pop3":
        return parse_pop3_line(direction, text)
    return None
