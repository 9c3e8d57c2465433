"""SEARCH keys that read a message's text (RFC 3501 6.4.4): BODY, TEXT, FROM, TO, CC, BCC, SUBJECT, HEADER.

pymap 0.36.7's ``BODY`` also matched the header fields, and its ``FROM``/``TO``/``CC`` compared against
Python's parsed address objects and missed matches. Here, after RFC 3501 6.4.4 and Dovecot's reading
of it: every match is a case-insensitive substring test; ``BODY`` looks in the body only (the text of
each part, its transfer encoding undone); ``TEXT`` in the header and the body; the address keys and
``SUBJECT``/``HEADER`` in every field of that name, unfolded and with RFC 2047 encoded words decoded,
display names included. The other keys (flags, dates, sizes, sequence sets) are pymap's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.header import decode_header, make_header
from typing import Any

from pymap.interfaces.message import LoadedMessageInterface, MessageInterface
from pymap.mime import MessageContent
from pymap.mime.cte import MessageDecoder
from pymap.parsing.specials import SearchKey
from pymap.search import SearchCriteria, SearchCriteriaSet, SearchParams

from .envelope import header_values

__all__ = ["LabSearchCriteriaSet"]

_TEXT_FIELDS = {b"FROM": b"from", b"TO": b"to", b"CC": b"cc", b"BCC": b"bcc", b"SUBJECT": b"subject"}


def _criteria(key: SearchKey, params: SearchParams) -> SearchCriteria:
    """pymap's SearchCriteria.of, with the text keys (and the keys that nest them) of this module."""
    name = key.value
    if name in params.disabled:
        return SearchCriteria.of(key, params)  # pymap refuses it
    if key.inverse:
        return _Not(_criteria(key.not_inverse, params), params)
    if name == b"KEYSET":
        return LabSearchCriteriaSet(key.filter_key_set, params)
    if name == b"OR":
        left, right = key.filter_key_or
        return _Or(_criteria(left, params), _criteria(right, params), params)
    if name in _TEXT_FIELDS:
        return _FieldContains(_TEXT_FIELDS[name], key.filter_str, params)
    if name == b"HEADER":
        field, value = key.filter_header
        return _FieldContains(field.encode("ascii", "replace").lower(), value, params)
    if name == b"BODY":
        return _TextContains(key.filter_str, params, header=False)
    if name == b"TEXT":
        return _TextContains(key.filter_str, params, header=True)
    return SearchCriteria.of(key, params)


class LabSearchCriteriaSet(SearchCriteriaSet):
    """All of the keys must match (RFC 3501 6.4.4)."""

    def __init__(self, keys: Iterable[SearchKey], params: SearchParams) -> None:
        SearchCriteria.__init__(self, params)
        self.all_criteria = [_criteria(key, params) for key in keys]


class _Not(SearchCriteria):
    def __init__(self, inner: SearchCriteria, params: SearchParams) -> None:
        super().__init__(params)
        self.inner = inner

    def matches(self, msg_seq: int, msg: MessageInterface, loaded_msg: LoadedMessageInterface) -> bool:
        return not self.inner.matches(msg_seq, msg, loaded_msg)


class _Or(SearchCriteria):
    def __init__(self, left: SearchCriteria, right: SearchCriteria, params: SearchParams) -> None:
        super().__init__(params)
        self.left, self.right = left, right

    def matches(self, msg_seq: int, msg: MessageInterface, loaded_msg: LoadedMessageInterface) -> bool:
        return self.left.matches(msg_seq, msg, loaded_msg) or self.right.matches(msg_seq, msg, loaded_msg)


def _decoded(value: bytes) -> str:
    """A header field value with RFC 2047 encoded words decoded; raw 8-bit read as UTF-8."""
    text = value.decode("utf-8", "replace")
    if "=?" in text:
        try:
            return str(make_header(decode_header(text)))
        except (ValueError, LookupError):  # a broken encoded word: search the text as sent
            pass
    return text


class _FieldContains(SearchCriteria):
    """Some `field` of the message header contains `value` (case-insensitive)."""

    def __init__(self, field: bytes, value: str, params: SearchParams) -> None:
        super().__init__(params)
        self.field = field
        self.value = value.casefold()

    def matches(self, msg_seq: int, msg: MessageInterface, loaded_msg: LoadedMessageInterface) -> bool:
        content = _content(loaded_msg)
        if content is None:
            return False
        values = header_values(content.header, self.field)
        if not self.value:  # HEADER name "": every message that has the field (RFC 3501 6.4.4)
            return bool(values)
        return any(self.value in _decoded(value).casefold() for value in values)


def _content(loaded_msg: LoadedMessageInterface) -> MessageContent | None:
    try:
        return loaded_msg.content  # type: ignore[attr-defined,no-any-return]
    except ValueError:  # pymap's _NoContent
        return None


def _part_texts(part: MessageContent) -> Iterable[str]:
    """The text of each leaf part of a body, transfer encoding undone, in its charset."""
    if part.body.has_nested:
        for nested in part.body.nested:
            if part.is_rfc822:
                yield _decoded(bytes(nested.header))
            yield from _part_texts(nested)
        return
    data: Any = MessageDecoder.of(part.header).decode(part.body)
    raw = bytes(data)
    charset = part.body.content_type.params.get("charset", "utf-8")
    try:
        yield raw.decode(str(charset), "replace")
    except LookupError:
        yield raw.decode("utf-8", "replace")


class _TextContains(SearchCriteria):
    """BODY (the body only) or TEXT (the header and the body) contains `value`."""

    def __init__(self, value: str, params: SearchParams, *, header: bool) -> None:
        super().__init__(params)
        self.value = value.casefold()
        self.header = header

    def matches(self, msg_seq: int, msg: MessageInterface, loaded_msg: LoadedMessageInterface) -> bool:
        content = _content(loaded_msg)
        if content is None:
            return False
        if self.header and self.value in _decoded(bytes(content.header)).casefold():
            return True
        return any(self.value in text.casefold() for text in _part_texts(content))
