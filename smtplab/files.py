"""Files and folders only their owner can read: the lab directory holds passwords, TLS and DKIM keys, mail.

On a shared host (JupyterHub: many Unix users, one machine) anything world-readable is read. So every
folder the lab makes is created 0700 and every file 0600 *at creation*: a file created with the default
mode and narrowed afterwards can be opened by another user in between, and an open file stays readable.
The umask can only take bits away, so these modes hold under any umask.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import warnings
from pathlib import Path

from .errors import LabDirectoryError
from .i18n import N_, _

__all__ = ["make_private_dir", "warn_if_exposed", "write_private", "open_private_fd", "exposed", "directory_error",
           "DIR_MODE", "FILE_MODE"]

DIR_MODE = 0o700
FILE_MODE = 0o600
_BINARY = getattr(os, "O_BINARY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

# What a full, read-only or forbidden lab directory looks like from a system call.
_DIRECTORY_ERRNOS = {errno.EROFS: N_("it is on a read-only file system"),
                     errno.EACCES: N_("you may not write there"),
                     errno.EPERM: N_("you may not write there"),
                     errno.ENOSPC: N_("its disk is full"),
                     errno.EDQUOT: N_("your disk quota is used up"),
                     errno.EFBIG: N_("a file there reached its size limit"),
                     errno.ENOTDIR: N_("part of its path is a file, not a folder")}


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create the folder `path` and any missing parents, each 0700; an existing folder is kept as it is."""
    path = Path(path)
    missing: list[Path] = []
    for parent in (path, *path.parents):
        if parent.is_dir():
            break
        missing.append(parent)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
    return path


def open_private_fd(path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """Open (create) `path` as a 0600 file and return the descriptor; O_EXCL by default, so the file
    is ours and new: an existing file (maybe made with another mode) is never reused."""
    return os.open(path, flags | _BINARY | _NOFOLLOW, FILE_MODE)


def write_private(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = False) -> None:
    """Replace `path` with `data` in a new 0600 file (written beside it, then renamed over it).

    Readers see the old or the new content, never half of it; an older file with a wider mode is
    replaced, not rewritten in place, so the new content is never readable by others. `durable`
    fsyncs the file before the rename.
    """
    path = os.fspath(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"  # one writer per name, whatever the threads
    try:
        os.unlink(tmp)  # left by a crash of a process with this id: never opened again as is
    except FileNotFoundError:
        pass
    fd = open_private_fd(tmp)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def exposed(root: str | os.PathLike[str]) -> list[str]:
    """Every file or folder under `root` (itself included) that group or others may read, write or
    enter, as 'mode path' lines: what a classmate on the same host could reach. Empty is the goal."""
    found = []
    for base, dirs, files in os.walk(root):
        for name in [""] + dirs + files if base == os.fspath(root) else dirs + files:
            path = os.path.join(base, name) if name else base
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            if mode & 0o077:
                found.append(f"{stat.filemode(mode)} {os.path.relpath(path, root)}")
    return found


def directory_error(exc: OSError, directory: Path) -> LabDirectoryError | None:
    """The learner-facing error for `exc` when it says the lab directory cannot be written (else None)."""
    reason = _DIRECTORY_ERRNOS.get(exc.errno or 0)
    if reason is None or (exc.filename is not None and not _inside(os.fsdecode(exc.filename), directory)):
        return None
    return LabDirectoryError(
        _("the lab cannot write in its directory {directory}: {reason} ({error}). "
          "Give a folder you own with free space, e.g. `--dir ~/smtplab` or `smtplab.start(directory=...)`.").format(
            directory=directory, reason=_(reason), error=exc.strerror))


def _inside(path: str, directory: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(directory))
    except ValueError:
        return Path(os.path.abspath(directory)).is_relative_to(os.path.abspath(path))  # a parent of it
    return True


def warn_if_exposed(directory: Path) -> None:
    """Warn when a lab directory the user made is open to other users (the lab never widens or narrows it)."""
    try:
        mode = directory.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        warnings.warn(_(
            "the lab directory {directory} can be entered by other users (mode {mode:o}): the lab's own folders "
            "and files in it are private (0700/0600), but names of files are visible. `chmod 700 {directory}` "
            "closes it.").format(directory=directory, mode=mode), RuntimeWarning, stacklevel=4)
