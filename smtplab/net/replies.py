"""SMTP reply codes: the lab's reply texts as named constants, and what every reply means.

Texts carry enhanced status codes (RFC 3463, advertised as ENHANCEDSTATUSCODES per RFC 2034).
`Reply.parse` turns wire lines into a Reply with a plain-language meaning and the client's next step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..i18n import N_, _

__all__ = ["Reply", "explain", "enhance", "REPLY_CLASSES"]

# --- the lab's own replies (RFC 5321 section 4.2, enhanced codes RFC 3463) ---
OK = "250 2.0.0 OK"
OK_SENDER = "250 2.1.0 Sender OK"
OK_RECIPIENT = "250 2.1.5 Recipient OK"
OK_QUEUED = "250 2.0.0 OK: queued as {queue_id}"
OK_DELIVERED = "250 2.0.0 OK: delivered as {queue_id}"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
SENDER_NOT_OWNED = "553 5.7.1 Sender address rejected: not owned by user {user}"
RELAY_DENIED = "550 5.7.1 Relaying denied: {domain} is not a domain of this server"
USER_UNKNOWN = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
BAD_DESTINATION = "501 5.1.3 Bad recipient address syntax"
ADDRESS_LITERAL = "550 5.1.2 Address literals are not routed in this lab: give a domain the lab DNS knows"
BARE_LF = "554 5.6.0 Message contains bare <LF> or <CR>: lines must end with <CR><LF> (RFC 5321 section 2.3.8)"
NO_VALID_RECIPIENTS = "554 5.5.1 No valid recipients"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
NULL_SENDER_SUBMISSION = "553 5.7.1 A null sender <> is for bounces; give your own address"
SERVICE_UNAVAILABLE = "421 4.3.2 Service not available, closing transmission channel"
NUL_IN_DATA = "554 5.6.0 Message contains NUL characters: text may not hold them (RFC 5322 section 2.3)"
BAD_HELLO = "501 5.5.2 {command} needs an ASCII domain name or address literal, without control characters"
TLS_ALREADY_ACTIVE = "503 5.5.1 TLS is already active (RFC 3207 section 4.2: STARTTLS only once)"
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1: 512 octets for commands, 1000 for text)"
TOO_MANY_BOGUS = "421 4.7.0 Too many unrecognized commands, closing connection"
TIMEOUT = "421 4.4.2 {host} Error: timeout exceeded, closing connection"
# RFC 5321 section 3.8: a server that cannot take the session answers 421 and closes; 4.7.0 (RFC 3463):
# a security or policy reason, here the listener's connection limit.
TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Too many connections, try again later"
STORAGE_FULL = "452 4.3.1 Insufficient system storage: the server's disk is full, try again later"
TOO_BIG_FOR_SYSTEM = "552 5.3.4 Message too big for system: the server cannot store a file this large"
# RFC 4954 section 6: a SASL answer longer than the server's buffer for the mechanism.
AUTH_LINE_TOO_LONG = "500 5.5.6 Authentication Exchange line is too long"
# An MX offers no AUTH mechanism: the command is not enabled here (Postfix's wording).
AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled (AUTH is for submission, not for an MX)"
# RFC 6531 section 3.4: a non-ASCII address in a transaction that did not ask for SMTPUTF8 (or not UTF-8 at all).
NEEDS_SMTPUTF8 = "553 5.6.7 Non-ASCII address without the SMTPUTF8 parameter (RFC 6531)"
NOT_UTF8 = "553 5.6.7 Address is not valid UTF-8 (RFC 6531 section 3.3)"
CANNOT_VRFY = "252 2.0.0 Cannot VRFY user; RCPT TO will tell whether the mailbox exists (RFC 5321 section 3.5.3)"
# Something in the server failed: the client keeps the message and retries; what failed is in the trace, never
# on the wire (an exception's text tells an attacker about the server and a sender nothing useful).
LOCAL_ERROR = "451 4.3.0 Local error in processing: try again later"
# RFC 3463 X.4.3 "directory server failure": the DNS the checks (SPF, DKIM, DMARC) need did not answer.
CHECKS_DNS_FAILED = "451 4.4.3 Temporary DNS failure while checking the message: try again later"
# RFC 3463 X.6.0: the content cannot be processed (e.g. MIME nested deeper than a parser can follow); a retry
# of the same bytes would fail the same way, so this is permanent.
UNPARSABLE = "554 5.6.0 Message could not be parsed: its structure is malformed or nested too deeply"

# aiosmtpd's built-in replies, rewritten with enhanced status codes (matched by prefix).
_STOCK = [
    ("250 OK", "250 2.0.0 OK"),
    ("221 Bye", "221 2.0.0 Bye"),
    ("235 2.7.0", None),
    ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
    # RFC 5321 section 4.2.1: help text is a 214 reply (aiosmtpd answers 250).
    ("250 Supported commands:", "214 2.0.0 Supported commands:"),
    ("250 Syntax:", "214 2.0.0 Syntax:"),
    ("500 Command line too long", "500 5.5.2 Command line too long (RFC 5321 section 4.5.3.1.4: 512 octets)"),
    ("500 Line too long", "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6: 1000 octets)"),
    ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
    ("500 Error: strict ASCII mode", "500 5.6.7 Non-ASCII characters without SMTPUTF8"),
    ("500 Error: command", "500 5.5.1 Error: command"),
    ("500 ", "500 5.5.2 "),
    ("501 Syntax:", "501 5.5.4 Syntax:"),
    ("501 Error:", "501 5.5.4 Error:"),
    ("501 ", "501 5.5.4 "),
    ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
    ("502 ", "502 5.5.1 "),
    ("503 Error: send HELO first", "503 5.5.1 Error: send HELO/EHLO first"),
    ("503 Error: send EHLO first", "503 5.5.1 Error: send EHLO first"),
    ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
    ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
    ("503 Error: nested MAIL command", "503 5.5.1 Error: nested MAIL command"),
    ("503 Already authenticated", "503 5.5.1 Already authenticated"),
    ("503 ", "503 5.5.1 "),
    ("504 ", "504 5.5.4 "),
    ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
    ("530 SMTP authentication is required", "530 5.7.0 Authentication required"),
    ("535 5.7.8", None),
    ("538 5.7.11", None),
    ("552 Error: message size exceeds", "552 5.3.4 Error: message size exceeds"),
    ("552 Error: Too much mail data", "552 5.3.4 Error: Too much mail data"),
    ("554 Command refused due to lack of security", "554 5.7.0 Command refused due to lack of security"),
    ("555 ", "555 5.5.4 "),
    ("252 ", "252 2.1.5 "),
    ("454 TLS not available", "454 4.7.0 TLS not available"),
]


def enhance(line: str) -> str:
    """Return `line` with an enhanced status code if it is a stock reply that lacks one."""
    if len(line) < 4 or line[3] == "-" or not line[:3].isdigit():
        return line
    if line[0] not in "245" or _ENHANCED.match(line[4:]):
        return line
    for prefix, replacement in _STOCK:
        if line.startswith(prefix):
            return line if replacement is None else replacement + line[len(prefix):]
    return line


_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")

# The English texts are marked with N_() and translated where they are shown (`_()`), in the learner's language.
REPLY_CLASSES = {
    "2": N_("success: the server did what was asked"),
    "3": N_("intermediate: the server waits for more from the client"),
    "4": N_("temporary failure: try again later, nothing is lost"),
    "5": N_("permanent failure: do not repeat the same request"),
}

# Meaning of the first digits and of specific codes (RFC 5321 section 4.2.2-4.2.3).
_CODES = {
    "211": (N_("System status"), N_("read the status")),
    "214": (N_("Help message"), N_("read the help")),
    "220": (N_("The server is ready (greeting), or ready to start TLS after STARTTLS"), N_("send EHLO (again after TLS)")),
    "221": (N_("The server closes the connection"), N_("nothing: the session is over")),
    "235": (N_("Authentication succeeded"), N_("start a transaction with MAIL FROM")),
    "250": (N_("Requested action okay, completed"), N_("send the next command")),
    "251": (N_("User not local; the server will forward"), N_("continue")),
    "252": (N_("Cannot verify the user, but will accept the message"), N_("continue")),
    "334": (N_("The server waits for the next piece of authentication data (base64)"), N_("send the base64 answer")),
    "354": (N_("Start the message; end it with a line holding only '.'"), N_("send headers, blank line, body, then '.'")),
    "421": (N_("Service not available; the server closes the connection"), N_("try again later, maybe at another MX")),
    "450": (N_("Mailbox unavailable right now"), N_("keep the message queued and retry later")),
    "451": (N_("Local error in processing"), N_("keep the message queued and retry later")),
    "452": (N_("Insufficient storage, or too many recipients"), N_("retry the remaining recipients later")),
    "454": (N_("TLS not available right now"), N_("retry later or continue without TLS if policy allows")),
    "500": (N_("Syntax error: command unrecognised or line too long"), N_("fix the command and send it again")),
    "501": (N_("Syntax error in the arguments"), N_("fix the arguments")),
    "502": (N_("Command not implemented"), N_("use another command")),
    "503": (N_("Bad sequence of commands"), N_("send the commands in order: EHLO, MAIL, RCPT, DATA")),
    "504": (N_("Command parameter not implemented"), N_("drop the parameter")),
    "530": (N_("Authentication (or STARTTLS) required first"), N_("STARTTLS, EHLO again, then AUTH")),
    "535": (N_("Authentication credentials invalid"), N_("check the user name (full address) and password")),
    "550": (N_("Mailbox unavailable or action refused (user unknown, relaying denied, policy)"), N_("do not retry; tell the sender")),
    "551": (N_("User not local"), N_("do not retry")),
    "552": (N_("Exceeded storage allocation or message too big"), N_("send a smaller message")),
    "553": (N_("Mailbox name not allowed (bad or forbidden address)"), N_("use a valid address you own")),
    "554": (N_("Transaction failed (policy or content refused)"), N_("do not retry the same message")),
    "555": (N_("MAIL/RCPT parameters not recognised"), N_("drop the unknown parameters")),
}

# Enhanced status details (RFC 3463 §3, and the IANA registry).
_DETAILS = {
    "0.0": N_("other or undefined status"),
    "1.0": N_("other address status"),
    "1.1": N_("bad destination mailbox address (no such user)"),
    "1.3": N_("bad destination mailbox address syntax"),
    "1.5": N_("destination address valid"),
    "2.0": N_("other mailbox status"),
    "2.1": N_("mailbox disabled, not accepting messages"),
    "2.2": N_("mailbox full"),
    "3.0": N_("other or undefined mail system status"),
    "3.1": N_("mail system full"),
    "3.2": N_("system not accepting network messages"),
    "3.4": N_("message too big for system"),
    "4.1": N_("no answer from host"),
    "4.3": N_("directory server failure"),
    "4.4": N_("unable to route (no MX, Null MX or no such domain)"),
    "4.7": N_("delivery time expired"),
    "5.1": N_("invalid command"),
    "5.2": N_("syntax error"),
    "5.3": N_("too many recipients"),
    "5.4": N_("invalid command arguments"),
    "5.6": N_("authentication exchange line too long"),
    "6.0": N_("other or undefined media error"),
    "6.7": N_("non-ASCII addresses not permitted"),
    "7.0": N_("security: authentication or TLS required"),
    "7.1": N_("delivery not authorized (relaying denied, sender not allowed)"),
    "7.8": N_("authentication credentials invalid"),
    "7.11": N_("encryption required"),
}


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: code, text lines, enhanced status code and what it means."""

    code: int
    lines: tuple[str, ...]  # the text of each line, without code and separator
    enhanced: str = ""  # e.g. "5.7.1"; empty when the server gave none

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def category(self) -> str:
        return _(REPLY_CLASSES.get(str(self.code)[0], N_("unknown class")))

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 400

    @property
    def meaning(self) -> str:
        return explain(self.code, self.enhanced)

    @property
    def next_step(self) -> str:
        step = _CODES.get(str(self.code), ("", ""))[1]
        return _(step) if step else _class_step(self.code)

    @classmethod
    def parse(cls, wire_lines: Sequence[str]) -> Reply:
        """Parse the lines of one (possibly multi-line) reply, e.g. ['250-a', '250 b']."""
        if not wire_lines:
            raise ValueError("an SMTP reply has at least one line")
        code = int(wire_lines[0][:3])
        texts = [line[4:] for line in wire_lines]
        enhanced = ""
        match = _ENHANCED.match(texts[-1])
        if match and match.group(1) == str(code)[0]:
            enhanced = f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
            texts = [t[match.end():].lstrip() if _ENHANCED.match(t) else t for t in texts]
        return cls(code=code, lines=tuple(texts), enhanced=enhanced)

    def to_wire(self) -> list[str]:
        out = []
        for i, text in enumerate(self.lines):
            sep = " " if i == len(self.lines) - 1 else "-"
            body = f"{self.enhanced} {text}" if self.enhanced and text else text
            out.append(f"{self.code}{sep}{body}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.to_wire())

    def explain(self) -> str:
        """Return a few lines a learner can read: code, class, meaning, next step."""
        return f"{self.code} {self.enhanced}".rstrip() + f" - {self.category}\n" + _(
            "meaning: {meaning}\nnext: {next_step}").format(meaning=self.meaning, next_step=self.next_step)


def _class_step(code: int) -> str:
    step = {2: N_("continue"), 3: N_("send what the server asks for"), 4: N_("retry later"),
            5: N_("do not retry as is")}.get(code // 100)
    return _(step) if step else "?"


def explain(code: int, enhanced: str = "") -> str:
    """Say in plain language what reply `code` (and enhanced code, if any) means."""
    base = _(_CODES.get(str(code), (REPLY_CLASSES.get(str(code)[0], N_("unknown reply")), ""))[0])
    if enhanced:
        detail = _DETAILS.get(enhanced.split(".", 1)[1], "")
        if detail:
            return f"{base} ({enhanced}: {_(detail)})"
    return base
