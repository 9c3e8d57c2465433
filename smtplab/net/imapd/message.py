"""One message of a Maildir folder: its UID, flags and date, and its content as FETCH and SEARCH read it.

Adapted from pymap 0.36.7 ``pymap/backend/maildir/mailbox.py`` (classes ``Message``, ``LoadedMessage``)
and ``pymap/message.py`` (c) Ian Good, MIT license: see :mod:`smtplab.net.imapd`. Changed: the bytes are
served as stored, with CRLF line ends (pymap re-serialised each message through email.message, which
emits bare LF: IMAP literals must use CRLF, RFC 3501 2.2); ENVELOPE as sent (:mod:`.envelope`);
BODYSTRUCTURE part sizes count the body octets only, not the part's header (RFC 3501 7.4.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from mailbox import MaildirMessage
from typing import Any, Final, Self

from pymap.interfaces.message import CachedMessage
from pymap.message import BaseLoadedMessage, BaseMessage
from pymap.mime import MessageBody, MessageContent, MessageHeader
from pymap.parsing.message import AppendMessage
from pymap.parsing.response.fetch import (
    BodyStructure,
    ContentBodyStructure,
    MessageBodyStructure,
    MultipartBodyStructure,
    TextBodyStructure,
)
from pymap.parsing.specials import FetchRequirement, ObjectId
from pymap.parsing.specials.flag import Flag

from .envelope import Envelope
from .flags import MaildirFlags
from .maildir import Maildir

__all__ = ["Message", "LoadedMessage", "parse_content"]


class _Content(MessageContent):
    """pymap's MIME tree, whose multipart parts end where RFC 2046 5.1.1 says."""

    @classmethod
    def _parse(cls, data: bytes, view: memoryview, lines: Any) -> MessageContent:
        header_lines, body_lines = cls._split_lines(data, lines)
        header = MessageHeader._parse(data, view, header_lines)
        body = _Body._parse(data, view, body_lines, header.parsed.content_type)
        return cls(data, header, body)


class _Body(MessageBody):
    """A body whose parts exclude the CRLF before each boundary: RFC 2046 5.1.1 makes it part of the
    boundary, so ``BODY[1]`` and the BODYSTRUCTURE size of part 1 are the part's own octets (pymap
    counted the CRLF in both)."""

    def __init__(self, data: bytes, lines: Any, content_type: Any, nested: Any) -> None:
        super().__init__(data, lines, content_type, nested)
        if not lines:  # pymap's get_raw returned all of `data` but its last byte for no lines
            self._raw = memoryview(b"")

    @classmethod
    def _parse_rfc822(cls, data: bytes, view: memoryview, lines: Any, content_type: Any) -> MessageBody:
        return cls(data, lines, content_type, [_Content._parse(data, view, lines)])

    @classmethod
    def _parse_multipart(cls, data: bytes, view: memoryview, lines: Any, content_type: Any,
                         boundary: bytes) -> MessageBody:
        parts = cls._find_parts(data, view, lines, boundary)
        return cls(data, lines, content_type, [_Content._parse(data, view, part) for part in parts])

    @classmethod
    def _find_parts(cls, data: bytes, view: memoryview, lines: Any, boundary: bytes) -> Any:
        parts = super()._find_parts(data, view, lines, boundary)
        trimmed = []
        for part in parts:
            if part:
                start, end, _ = part[-1]
                part = [*part[:-1], (start, end, end)]  # the line end before "--boundary" is the boundary's
            trimmed.append(part)
        return trimmed


def parse_content(raw: bytes) -> MessageContent:
    """The MIME tree of a message (pymap's, with RFC 2046 part boundaries)."""
    return _Content.parse(raw)


def body_lines(body: Any) -> int:
    """The number of text lines of a body (RFC 3501 7.4.2 body-fld-lines): its line ends, plus a last
    line without one."""
    raw = bytes(body)
    return raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)


class Message(BaseMessage):
    """A message's metadata; its content is read on demand (:meth:`load_content`)."""

    __slots__ = ["recent", "_maildir", "_key"]

    def __init__(self, uid: int, internal_date: datetime, permanent_flags: Iterable[Flag], *,
                 expunged: bool = False, email_id: ObjectId | None = None, thread_id: ObjectId | None = None,
                 recent: bool = False, maildir: Maildir | None = None, key: str | None = None) -> None:
        super().__init__(uid, internal_date, permanent_flags, expunged=expunged, email_id=email_id,
                         thread_id=thread_id)
        self.recent: Final = recent  # still in new/: no session has claimed it (RFC 3501 2.3.2)
        self._maildir = maildir
        self._key = key

    @property
    def key(self) -> str | None:
        """The message's unique Maildir key (None for a message not in a Maildir)."""
        return self._key

    async def load_content(self, requirement: FetchRequirement) -> LoadedMessage:
        if self._key is None or self._maildir is None or requirement.has_none(FetchRequirement.CONTENT):
            return LoadedMessage(self, requirement, None)
        try:
            raw = self._maildir.get_bytes(self._key)
        except (KeyError, FileNotFoundError):
            return LoadedMessage(self, requirement, None)
        if b"\n" in raw.replace(b"\r\n", b""):  # a file written by hand with bare LF
            raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return LoadedMessage(self, requirement, parse_content(raw))

    @classmethod
    def copy_expunged(cls, msg: CachedMessage) -> Self:
        assert isinstance(msg, cls)
        return cls(msg.uid, msg.internal_date, msg.permanent_flags, expunged=True, email_id=msg.email_id,
                   thread_id=msg.thread_id, maildir=msg._maildir, key=msg._key)

    @classmethod
    def to_maildir(cls, append_msg: AppendMessage, maildir_flags: MaildirFlags) -> MaildirMessage:
        """An APPENDed message, into new/ (\\Recent for the first session to see it, RFC 3501 6.3.11)."""
        maildir_msg = MaildirMessage(append_msg.literal)
        maildir_msg.set_flags(maildir_flags.to_maildir(append_msg.flag_set))
        maildir_msg.set_subdir("new")
        maildir_msg.set_date((append_msg.when or datetime.now()).timestamp())
        return maildir_msg

    @classmethod
    def from_maildir(cls, uid: int, maildir_msg: MaildirMessage, maildir: Maildir, key: str,
                     email_id: ObjectId | None, thread_id: ObjectId | None, maildir_flags: MaildirFlags) -> Self:
        flag_set = maildir_flags.from_maildir(maildir_msg.get_flags())
        return cls(uid, datetime.fromtimestamp(maildir_msg.get_date()).astimezone(), flag_set,
                   email_id=email_id, thread_id=thread_id, recent=maildir_msg.get_subdir() == "new",
                   maildir=maildir, key=key)


class LoadedMessage(BaseLoadedMessage):
    """A message's content, parsed, as FETCH reads it."""

    def get_envelope_structure(self) -> Any:
        try:
            return Envelope(self.content.header)
        except ValueError:  # no content (pymap's _NoContent): the empty envelope (RFC 2180 4.1.3)
            return super().get_envelope_structure()

    @classmethod
    def _get_envelope_structure(cls, msg: MessageContent) -> Any:
        return Envelope(msg.header)

    @classmethod
    def _get_params(cls, msg: MessageContent) -> Mapping[str, Any]:
        return msg.body.content_type.params

    @classmethod
    def _get_body_structure(cls, msg: MessageContent) -> BodyStructure:
        """RFC 3501 7.4.2: body-fld-octets is "the size of the body in octets", the part's own header
        excluded (pymap counted it); body-fld-lines likewise counts the body's lines."""
        parsed = msg.header.parsed
        maintype = msg.body.content_type.maintype
        subtype = msg.body.content_type.subtype
        params = cls._get_params(msg)
        disposition = parsed.content_disposition
        language = parsed.content_language
        location = parsed.content_location
        if maintype == "multipart":
            parts = [cls._get_body_structure(part) for part in msg.body.nested]
            return MultipartBodyStructure(subtype, params, disposition, language, location, parts)
        content_id = parsed.content_id
        content_desc = parsed.content_description
        content_encoding = parsed.content_transfer_encoding
        size, lines = len(msg.body), body_lines(msg.body)
        if maintype == "message" and subtype == "rfc822" and msg.body.has_nested:
            sub_msg = msg.body.nested[0]
            return MessageBodyStructure(params, disposition, language, location, content_id, content_desc,
                                        content_encoding, None, size, lines, cls._get_envelope_structure(sub_msg),
                                        cls._get_body_structure(sub_msg))
        if maintype == "text":
            return TextBodyStructure(subtype, params, disposition, language, location, content_id, content_desc,
                                     content_encoding, None, size, lines)
        return ContentBodyStructure(maintype, subtype, params, disposition, language, location, content_id,
                                    content_desc, content_encoding, None, size)
