"""IMAP folder names to Maildir++ directories: ``Projects/2026`` is ``.Projects.2026/`` of the user's Maildir.

Adapted from pymap 0.36.7 ``pymap/backend/maildir/layout.py`` (c) Ian Good, MIT license: see
:mod:`smtplab.net.imapd`. Changed: only the Maildir++ layout (the one Dovecot and the lab's MX use); a
name is checked before it becomes a path (pymap mapped "." to the provider's directory: ``DELETE "."``
wiped every user's mail); a folder is never renamed onto an existing one nor into itself; the
``maildirfolder`` marker file is created 0600.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from mailbox import Maildir, NoSuchMailboxError

from pymap.exceptions import MailboxError
from pymap.parsing.response import ResponseCode

__all__ = ["InvalidMailboxName", "check_mailbox_name", "MaildirLayout"]

# A folder name part becomes one directory entry `.part` of the user's Maildir (Maildir++). 255 bytes is
# the usual file-name limit; the whole name keeps well under it.
_MAX_NAME_BYTES = 200
_FORBIDDEN = frozenset("\0") | frozenset(chr(c) for c in range(32)) | {"\x7f"}
if os.sep != "/" or os.altsep:  # where "\\" separates paths (Windows), "\\cur" would name INBOX's cur/
    _FORBIDDEN |= frozenset(os.sep + (os.altsep or ""))


class InvalidMailboxName(MailboxError):
    """A mailbox name that is not a name (empty parts, a path, control characters): a tagged NO [CANNOT]."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name, f"Invalid mailbox name: {why}.".encode(), ResponseCode.of(b"CANNOT"))


def check_mailbox_name(name: str, delimiter: str) -> list[str]:
    """The parts of folder `name` split at `delimiter` ("/"), or InvalidMailboxName.

    RFC 3501 5.1 leaves names to the server; this one refuses an empty level ("", "/", "a//b"), a "."
    in a level (on disk it is Maildir++'s own separator, so "." and ".." would leave the Maildir and
    "a.b" would be read back as "a/b"), control characters (RFC 9051 5.1 asks servers to refuse them),
    a path separator of the system (a backslash on Windows; on POSIX ``foo\\bar`` is an ordinary
    name) and a name over 200 bytes.
    """
    if name == "INBOX":
        return []
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise InvalidMailboxName(name[:40], f"longer than {_MAX_NAME_BYTES} bytes")
    parts = name.split(delimiter)
    if any(not part for part in parts):
        raise InvalidMailboxName(name, f"an empty level between {delimiter!r} separators")
    if any(ch in _FORBIDDEN for ch in name):
        raise InvalidMailboxName(name, "no control character or path separator in a folder name")
    if any("." in part for part in parts):
        raise InvalidMailboxName(name, f"no '.' in a folder name (folders nest with {delimiter!r})")
    return parts


class MaildirLayout:
    """The Maildir++ layout: sub-folders are the user's Maildir's entries starting with ``.``::

        .Trash/
        .Important.To-Do/
        .Important.Misc/

    Args:
        path: The root path of the inbox.
        maildir_type: The :class:`~mailbox.Maildir` class to open folders with.
    """

    def __init__(self, path: str, maildir_type: type[Maildir]) -> None:
        self._path = path
        self._maildir = maildir_type

    @property
    def path(self) -> str:
        """The root path of the inbox."""
        return self._path

    @classmethod
    def _split(cls, name: str, delimiter: str) -> Sequence[str]:
        return check_mailbox_name(name, delimiter)

    @classmethod
    def _join(cls, parts: Sequence[str], delimiter: str) -> str:
        return delimiter.join(parts) if parts else "INBOX"

    def _get_path(self, parts: Sequence[str]) -> str:
        return os.path.join(self._path, self._get_subdir(parts))

    @classmethod
    def _get_subdir(cls, parts: Sequence[str]) -> str:
        return "." + ".".join(parts) if parts else ""

    @classmethod
    def _get_parts(cls, subdir: str) -> Sequence[str]:
        return subdir[1:].split(".") if subdir else []

    def get_path(self, name: str, delimiter: str) -> str:
        """The directory of folder `name` (checked: never outside the user's Maildir)."""
        return self._get_path(self._split(name, delimiter))

    def list_folders(self, delimiter: str) -> Sequence[str]:
        """Every folder of the user, INBOX first."""
        return [self._join(parts, delimiter) for parts in self._list_folders()]

    def _list_folders(self) -> Iterable[Sequence[str]]:
        yield []
        for elem in sorted(os.listdir(self._path)):
            if elem.startswith(".") and elem not in (".", "..") and os.path.isdir(os.path.join(self._path, elem)):
                parts = self._get_parts(elem)
                if all(parts):  # a stray ".x." made by hand is no folder name
                    yield parts

    def get_folder(self, name: str, delimiter: str) -> Maildir:
        """The existing folder `name`; FileNotFoundError if there is none."""
        path = self.get_path(name, delimiter)
        try:
            return self._maildir(path, create=False)
        except NoSuchMailboxError as exc:
            raise FileNotFoundError(path) from exc

    def add_folder(self, name: str, delimiter: str) -> None:
        """Create folder `name`; FileExistsError if it is there already.

        Maildir++ keeps every level flat beside the others, so a parent level need not exist
        (RFC 3501 6.3.3 lets the server create it or not; LIST shows it \\HasNoChildren-correct).
        """
        path = self.get_path(name, delimiter)
        if os.path.isdir(path):
            raise FileExistsError(path)
        self._maildir(path, create=True)
        os.close(os.open(os.path.join(path, "maildirfolder"), os.O_WRONLY | os.O_CREAT, 0o600))

    def remove_folder(self, name: str, delimiter: str) -> None:
        """Remove folder `name` and its messages; FileNotFoundError if there is none."""
        path = self.get_path(name, delimiter)
        if not os.path.isdir(path):
            raise FileNotFoundError(path)
        for root, dirs, files in os.walk(path, topdown=False):
            for entry in files:
                os.remove(os.path.join(root, entry))
            for entry in dirs:
                os.rmdir(os.path.join(root, entry))
        os.rmdir(path)

    def rename_folder(self, source_name: str, dest_name: str, delimiter: str) -> None:
        """Rename folder `source_name` and its sub-folders (RFC 3501 6.3.5).

        Raises FileNotFoundError when there is no source, FileExistsError when the destination (or
        the new name of one of the sub-folders) exists, and OSError(EINVAL) for a rename into itself.
        """
        source = self._get_subdir(self._split(source_name, delimiter))
        dest = self._get_subdir(self._split(dest_name, delimiter))
        if not os.path.isdir(os.path.join(self._path, source)):
            raise FileNotFoundError(source_name)
        if dest == source or dest.startswith(source + "."):
            raise OSError(errno.EINVAL, f"cannot rename {source_name!r} into itself")
        moves = [(elem, dest + elem[len(source):]) for elem in sorted(os.listdir(self._path))
                 if elem == source or elem.startswith(source + ".")]
        for _, new in moves:
            if os.path.exists(os.path.join(self._path, new)):
                raise FileExistsError(new)
        for old, new in moves:
            os.rename(os.path.join(self._path, old), os.path.join(self._path, new))
