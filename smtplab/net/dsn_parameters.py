"""The SMTP DSN extension's parameters (RFC 3461): NOTIFY and ORCPT on RCPT, RET and ENVID on MAIL.

At submission a client may ask, per recipient, to hear of success, delay and/or failure (NOTIFY), give
the address as it first wrote it (ORCPT), choose whether a failure returns the whole message or its
headers (RET) and give the transaction an id of its own (ENVID). The server parses and checks them here,
the lab's clients write them (xtext, RFC 3461 section 4), and the relay passes them on to a next hop that
offers DSN. The notifications themselves are built in smtplab/mail/dsn.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["DsnRequest", "DsnSyntaxError", "NOTIFY_CHOICES", "DSN_KEYWORDS", "xtext_encode", "xtext_decode",
           "parse_mail_parameters", "parse_rcpt_parameters"]

NOTIFY_CHOICES = ("SUCCESS", "FAILURE", "DELAY")
DSN_KEYWORDS = ("RET", "ENVID", "NOTIFY", "ORCPT")
_ENVID_MAX = 100  # RFC 3461 section 4.4: at most 100 characters (after xtext decoding)
_ORCPT_MAX = 500  # RFC 3461 section 4.2


@dataclass(frozen=True)
class DsnRequest:
    """What a sender asked of notifications for one message (RFC 3461); empty values mean "not given"."""

    ret: str = ""  # FULL or HDRS
    envid: str = ""  # decoded from xtext
    notify: dict[str, str] = field(default_factory=dict)  # recipient -> "SUCCESS,DELAY" / "NEVER"
    orcpt: dict[str, str] = field(default_factory=dict)  # recipient -> "rfc822;bob@example.net" (decoded)


class DsnSyntaxError(ValueError):
    """A DSN parameter is malformed; its text is the SMTP reply to give (RFC 3461 section 5)."""


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 section 4's xtext ("+" and two upper-case hex digits for a special character)."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "+":
            digits = text[i + 1:i + 3]
            if len(digits) != 2 or any(d not in "0123456789ABCDEF" for d in digits):
                raise DsnSyntaxError(f"501 5.5.4 Bad xtext {text!r}: '+' must be followed by two upper-case hex "
                                     "digits (RFC 3461 section 4)")
            out.append(chr(int(digits, 16)))
            i += 3
            continue
        if not 33 <= ord(char) <= 126 or char == "=":
            raise DsnSyntaxError(f"501 5.5.4 Bad xtext {text!r}: {char!r} must be written as +{ord(char):02X} "
                                 "(RFC 3461 section 4)")
        out.append(char)
        i += 1
    return "".join(out)


def xtext_encode(text: str) -> str:
    """Encode `text` as RFC 3461 xtext (printable ASCII but "+" and "=" as is, the rest as +XX of UTF-8)."""
    out = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if 33 <= byte <= 126 and byte not in (0x2B, 0x3D) else f"+{byte:02X}")
    return "".join(out)


def _pairs(params: Sequence[str], keywords: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for param in params:
        keyword, _, value = param.partition("=")
        keyword = keyword.upper()
        if keyword not in keywords:
            continue
        if keyword in found:
            raise DsnSyntaxError(f"501 5.5.4 {keyword} given twice (RFC 3461 section 4)")
        if not value:
            raise DsnSyntaxError(f"501 5.5.4 {keyword} needs a value (RFC 3461 section 4)")
        found[keyword] = value
    return found


def parse_mail_parameters(params: Sequence[str]) -> tuple[str, str]:
    """Return (RET, ENVID) from MAIL FROM's parameters (as the client wrote them); raise DsnSyntaxError."""
    found = _pairs(params, ("RET", "ENVID"))
    ret = found.get("RET", "").upper()
    if ret and ret not in ("FULL", "HDRS"):
        raise DsnSyntaxError("501 5.5.4 RET must be FULL or HDRS (RFC 3461 section 4.3)")
    envid = xtext_decode(found["ENVID"]) if "ENVID" in found else ""
    if len(envid) > _ENVID_MAX:
        raise DsnSyntaxError(f"501 5.5.4 ENVID longer than {_ENVID_MAX} characters (RFC 3461 section 4.4)")
    return ret, envid


def parse_rcpt_parameters(params: Sequence[str]) -> tuple[str, str]:
    """Return (NOTIFY, ORCPT) from RCPT TO's parameters: NOTIFY normalised ("SUCCESS,DELAY", "NEVER"),
    ORCPT decoded ("rfc822;bob@example.net"); raise DsnSyntaxError."""
    found = _pairs(params, ("NOTIFY", "ORCPT"))
    notify = ""
    if "NOTIFY" in found:
        words = [w.strip().upper() for w in found["NOTIFY"].split(",")]
        if words == ["NEVER"]:
            notify = "NEVER"
        elif not words or len(set(words)) != len(words) or any(w not in NOTIFY_CHOICES for w in words):
            raise DsnSyntaxError("501 5.5.4 NOTIFY must be NEVER, or one or more of SUCCESS, FAILURE, DELAY "
                                 "separated by commas (RFC 3461 section 4.1)")
        else:
            notify = ",".join(w for w in NOTIFY_CHOICES if w in words)
    orcpt = ""
    if "ORCPT" in found:
        kind, semicolon, original = found["ORCPT"].partition(";")
        if not semicolon or not kind or not original:
            raise DsnSyntaxError("501 5.5.4 ORCPT must be address-type;xtext, e.g. ORCPT=rfc822;bob@example.net "
                                 "(RFC 3461 section 4.2)")
        decoded = xtext_decode(original)
        if len(decoded) > _ORCPT_MAX:
            raise DsnSyntaxError("501 5.5.4 ORCPT too long (RFC 3461 section 4.2)")
        orcpt = f"{kind.lower()};{decoded}"
    return notify, orcpt
