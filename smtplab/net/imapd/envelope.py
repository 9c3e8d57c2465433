"""FETCH ENVELOPE (RFC 3501 7.4.2) from a message's header fields as they were sent.

pymap 0.36.7 built the envelope from Python's parsed headers: it rewrote the Date, gave "" for an absent
display name (NIL is right), flattened group syntax, wrote ``()`` for an empty group (not valid IMAP)
and stopped the connection mid-reply on an empty ``Sender:``. This module reads the raw, unfolded
field values and follows RFC 3501 7.4.2 to the letter: date, subject, in-reply-to and message-id as
sent; an address as ``(name adl mailbox host)`` with NIL for what is absent; a group as a start marker
``(NIL NIL "group" NIL)``, its members and an end marker ``(NIL NIL NIL NIL)``; Sender and Reply-To
default to From when absent or empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pymap.bytes import Writeable, WriteStream
from pymap.parsing.primitives import String

__all__ = ["Envelope", "header_values", "parse_addresses"]

Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]  # name, adl, mailbox, host

_FOLD = re.compile(rb"\r?\n(?=[ \t])")


def header_values(header: Any, name: bytes) -> list[bytes]:
    """The unfolded values of every `name` field of a pymap MessageHeader (RFC 5322 2.2.3)."""
    wanted = name.lower()
    values = []
    for key, raw in header.folded:
        if key == wanted:
            value = bytes(raw).split(b":", 1)[1]
            values.append(_FOLD.sub(b"", value).strip(b" \t\r\n"))
    return values


def _tokens(value: bytes) -> list[tuple[str, bytes]]:
    """RFC 5322 3.2 lexical tokens: ("q", quoted text), ("s", special), ("a", atom/dot-atom), ("d", [literal])."""
    out: list[tuple[str, bytes]] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i:i + 1]
        if c in b" \t\r\n":
            i += 1
        elif c == b"(":  # a comment, nested, with quoted pairs: not part of any field IMAP reports
            depth = 0
            while i < n:
                ch = value[i:i + 1]
                if ch == b"\\":
                    i += 1
                elif ch == b"(":
                    depth += 1
                elif ch == b")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
        elif c == b'"':
            i += 1
            text = bytearray()
            while i < n and value[i:i + 1] != b'"':
                if value[i:i + 1] == b"\\" and i + 1 < n:
                    i += 1
                text += value[i:i + 1]
                i += 1
            out.append(("q", bytes(text)))
            i += 1
        elif c == b"[":
            end = value.find(b"]", i)
            end = n if end < 0 else end + 1
            out.append(("d", value[i:end]))
            i = end
        elif c in b"<>,:;@":
            out.append(("s", c))
            i += 1
        else:
            start = i
            while i < n and value[i:i + 1] not in b' \t\r\n()"<>,:;@[':
                i += 1
            out.append(("a", value[start:i]))
    return out


def _phrase(words: Sequence[tuple[str, bytes]]) -> bytes | None:
    text = b" ".join(word for kind, word in words if kind in ("a", "q"))
    return text or None


def _addr_spec(words: Sequence[tuple[str, bytes]]) -> tuple[bytes | None, bytes | None]:
    """local-part and domain of `local@domain` (the domain "" when missing: NIL would mean a group)."""
    at = next((i for i, (kind, w) in enumerate(words) if (kind, w) == ("s", b"@")), None)
    local_words = words if at is None else words[:at]
    local = b"".join(w for kind, w in local_words if kind != "s") or None
    if at is None:
        return local, b""
    domain = b"".join(w for kind, w in words[at + 1:] if kind != "s")
    return local, domain


def parse_addresses(value: bytes) -> list[Address]:
    """An RFC 5322 address-list as IMAP address structures, groups as start and end markers."""
    tokens = _tokens(value)
    out: list[Address] = []
    i, n = 0, len(tokens)
    in_group = False
    while i < n:
        words: list[tuple[str, bytes]] = []
        while i < n and tokens[i] not in (("s", b","), ("s", b";"), ("s", b"<"), ("s", b":")):
            words.append(tokens[i])
            i += 1
        token = tokens[i] if i < n else None
        if token == ("s", b":") and not in_group:  # display-name ":" [group-list] ";"
            out.append((None, None, _phrase(words) or b"", None))
            in_group = True
            i += 1
            continue
        if token == ("s", b"<"):  # [display-name] "<" [route ":"] addr-spec ">"
            name = _phrase(words)
            i += 1
            inner: list[tuple[str, bytes]] = []
            while i < n and tokens[i] != ("s", b">"):
                inner.append(tokens[i])
                i += 1
            i += 1
            route = None
            colon = next((k for k, t in enumerate(inner) if t == ("s", b":")), None)
            if colon is not None:  # obsolete source route: "@a,@b:" (RFC 5322 4.4)
                route = b"".join(w for _, w in inner[:colon]) or None
                inner = inner[colon + 1:]
            local, domain = _addr_spec(inner)
            if local is not None or domain:
                out.append((name, route, local, domain))
            while i < n and tokens[i] not in (("s", b","), ("s", b";")):
                i += 1  # anything after ">" up to the next separator is noise
            token = tokens[i] if i < n else None
        elif words:
            local, domain = _addr_spec(words)
            if local is not None:
                out.append((None, None, local, domain))
        if token == ("s", b";") and in_group:
            out.append((None, None, None, None))
            in_group = False
        i += 1
    if in_group:  # a group without its ";": close it
        out.append((None, None, None, None))
    return out


def _nstring(value: bytes | None) -> bytes:
    return bytes(String.build(value))


def _address_list(addresses: Sequence[Address]) -> bytes:
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(_nstring(part) for part in address) + b")"
                           for address in addresses) + b")"


class Envelope(Writeable):
    """The ENVELOPE of a message, given its pymap MessageHeader (RFC 3501 7.4.2)."""

    def __init__(self, header: Any) -> None:
        super().__init__()
        self._header = header

    def _first(self, name: bytes) -> bytes | None:
        values = header_values(self._header, name)
        return values[0] if values else None

    def _addresses(self, name: bytes) -> list[Address]:
        found: list[Address] = []
        for value in header_values(self._header, name):
            found.extend(parse_addresses(value))
        return found

    def __bytes__(self) -> bytes:
        from_ = self._addresses(b"from")
        sender = self._addresses(b"sender") or from_  # absent or empty: the From value (RFC 3501 7.4.2)
        reply_to = self._addresses(b"reply-to") or from_
        fields = [_nstring(self._first(b"date")), _nstring(self._first(b"subject")),
                  _address_list(from_), _address_list(sender), _address_list(reply_to),
                  _address_list(self._addresses(b"to")), _address_list(self._addresses(b"cc")),
                  _address_list(self._addresses(b"bcc")),
                  _nstring(self._first(b"in-reply-to")), _nstring(self._first(b"message-id"))]
        return b"(" + b" ".join(fields) + b")"

    def write(self, writer: WriteStream) -> None:
        writer.write(bytes(self))
