"""The one change the lab makes inside pymap's parser, applied on first use and only to pymap 0.36.7.

pymap decodes a mailbox name's modified UTF-7 (RFC 3501 5.1.3) with ``modutf7_decode``, which loops
forever on a ``&`` shift never closed by ``-`` (``SELECT "&AGE"``: one command froze the lab's whole
loop, every server with it) and lets a bad base64 run raise out of the parser (the session ended in
``* BYE [SERVERBUG]``). The parser module (``pymap.parsing.specials.mailbox``) looks the function up
by name, and no hook or subclass reaches it, so the lab replaces that one name with
:func:`decode_mailbox_name`, which answers a malformed name as the parse error it is (a tagged BAD).

:func:`apply` checks pymap's version and that the name still holds pymap's own function with the
source the lab read (a SHA-256 of it), and refuses with :class:`PymapMismatch` otherwise: a pymap
upgrade must be read again before the lab touches it.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from typing import Any

from ...errors import LibraryMismatch
from ...i18n import _

__all__ = ["PymapMismatch", "apply", "check", "decode_mailbox_name"]

PYMAP_VERSION = "0.36.7"
# sha256 of inspect.getsource(pymap.parsing.modutf7.modutf7_decode) in pymap 0.36.7.
_SOURCE_SHA256 = "fb8d4115fd410ee5b4075acbe94c931389a43c15cf0e8f6570d3dc87a91a3356"

_applied = False
_lock = threading.Lock()
_SHIFTED = re.compile(rb"&([A-Za-z0-9+,]*)-")


class PymapMismatch(LibraryMismatch):
    """The installed pymap is not the one the lab's IMAP server was written against."""


def decode_mailbox_name(data: bytes) -> str:
    """Modified UTF-7 (RFC 3501 5.1.3) to text; NotParseable for a malformed name (a tagged BAD)."""
    from pymap.parsing.exceptions import NotParseable

    parts: list[str] = []
    i, n = 0, len(data)
    while i < n:
        amp = data.find(b"&", i)
        if amp < 0:
            parts.append(data[i:].decode("latin-1"))  # pymap's reading of bytes outside "&...-"
            break
        parts.append(data[i:amp].decode("latin-1"))
        match = _SHIFTED.match(data, amp)
        if match is None:  # "&" not closed by "-", or not base64 inside: malformed
            raise NotParseable(memoryview(data))
        encoded = match.group(1)
        if not encoded:
            parts.append("&")  # "&-"
        else:
            try:
                parts.append(("+" + encoded.decode("ascii").replace(",", "/") + "-").encode().decode("utf-7"))
            except UnicodeDecodeError as exc:
                raise NotParseable(memoryview(data)) from exc
        i = match.end()
    return "".join(parts)


def _source_digest(function: Any) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (OSError, TypeError):
        return None


def check(version: str, current: Any, original: Any) -> None:
    """PymapMismatch unless pymap is `PYMAP_VERSION` and `current` is its own, unchanged `original`."""
    if version != PYMAP_VERSION:
        raise PymapMismatch(_("smtplab's IMAP server needs pymap {pymap_version}, found {version}: install the pinned "
                              "version (pip install pymap=={pymap_version})").format(
            pymap_version=PYMAP_VERSION, version=version))
    if current is not original or _source_digest(current) != _SOURCE_SHA256:
        raise PymapMismatch(_("pymap.parsing.specials.mailbox.modutf7_decode is not pymap 0.36.7's own: reinstall "
                              "pymap==0.36.7 (pip install --force-reinstall pymap==0.36.7)"))


def apply() -> None:
    """Install :func:`decode_mailbox_name` in pymap's mailbox-name parser (once; checked)."""
    global _applied
    with _lock:
        if _applied:
            return
        from pymap.__about__ import __version__
        from pymap.parsing import modutf7
        from pymap.parsing.specials import mailbox

        check(__version__, mailbox.modutf7_decode, modutf7.modutf7_decode)
        mailbox.modutf7_decode = decode_mailbox_name  # type: ignore[assignment]
        _applied = True
