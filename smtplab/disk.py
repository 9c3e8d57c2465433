"""The lab's disk thread: durable writes off the event loop, committed in groups.

Accepted mail must be on disk before the 250 (RFC 5321 section 6.1): the message file is fsync'd, then
renamed into place, then its folder is fsync'd so the rename survives a crash too. Doing that on the
loop would stall every session behind one slow disk, so one thread does it. Under load, every write
waiting when the thread looks is done in one batch and each folder is fsync'd once for the whole batch,
then the loop is woken once: a group commit, as databases and mail servers do. A message alone still
goes straight through (a batch of one).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .files import write_private

__all__ = ["DiskThread", "fsync_directory", "remove_quietly", "write_durably", "remove_stale_tmp", "write_message_file"]

T = TypeVar("T")
_HOSTNAME = socket.gethostname().replace("/", "_").replace(":", "_") or "smtplab"
_names = itertools.count(1)  # next() on it is atomic in CPython: unique names across threads


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries durable (a rename into it), where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; NTFS journals renames itself
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: str | os.PathLike[str]) -> None:
    """Remove a file a failed write left behind, if it is there (cleaning up must not hide the failure)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def write_durably(path: str | os.PathLike[str], data: bytes, *, fsync_folder: bool = False) -> None:
    """Replace `path` with `data` as one step, fsync'd: a new 0600 file beside it renamed over it (see
    files.write_private). A reader or a crash sees the old file or the new one, never half. With
    `fsync_folder`, the rename is made durable too (else the caller fsyncs the folder, e.g. once a batch)."""
    write_private(path, data, durable=True)
    if fsync_folder:
        fsync_directory(os.path.dirname(os.fspath(path)) or ".")


def remove_stale_tmp(folder: str | os.PathLike[str]) -> list[str]:
    """Remove the `*.tmp` files a crash left in `folder` (a write that never reached its rename) and
    return their names. Call it at start, before anything writes there."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if name.endswith(".tmp"):
            remove_quietly(os.path.join(folder, name))
            removed.append(name)
    return removed


_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class DiskThread:
    """One thread that runs file writes for an asyncio loop and fsyncs folders once per batch.

    `await disk.run(fn, *args)` runs `fn(*args)` on the thread and returns its result once the folders
    it asked for with `fsync_later` are durable too.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._folders: dict[str, None] = {}  # folders to fsync at the end of the current batch
        self._after: list[Callable[[], Any]] = []  # to run once those folders are durable
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        if not self._thread.is_alive():
            raise RuntimeError("the lab's disk thread has stopped (the lab is stopping)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, loop, future))
        return await future

    def fsync_later(self, folder: str | os.PathLike[str]) -> None:
        """From a job on this thread: fsync `folder` before the batch's callers are answered."""
        if threading.current_thread() is not self._thread:
            raise RuntimeError("fsync_later is for jobs running on the disk thread")
        self._folders[os.fspath(folder)] = None

    def after_batch(self, fn: Callable[[], Any]) -> None:
        """From a job on this thread: run `fn()` once the batch's folders are fsync'd (e.g. drop a note
        that must outlive what the batch removes)."""
        if threading.current_thread() is not self._thread:
            raise RuntimeError("after_batch is for jobs running on the disk thread")
        self._after.append(fn)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def close(self) -> None:
        """Finish the writes already asked for, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(30)

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while True:  # everything already waiting joins this commit
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            outcomes: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Any, BaseException | None]] = []
            for fn, args, loop, future in batch:
                try:
                    outcomes.append((loop, future, fn(*args), None))
                except BaseException as exc:  # handed to the caller, who says what went wrong
                    outcomes.append((loop, future, None, exc))
            folders, self._folders = self._folders, {}
            for folder in folders:
                fsync_directory(folder)
            after, self._after = self._after, []
            for fn in after:
                try:
                    fn()
                except Exception:  # tidying only: what it leaves is cleaned at the next start
                    pass
            _answer(outcomes)


def _answer(outcomes: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Wake each loop once for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for loop, future, result, error in outcomes:
        by_loop.setdefault(loop, []).append((future, result, error))
    for loop, results in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, results)
        except RuntimeError:  # that loop is closed: nobody waits for these any more
            pass


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in results:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def write_message_file(root: str, subdir: str, data: bytes, info: str = "", mtime: float | None = None,
                       before_rename: Callable[[str], None] | None = None) -> str:
    """Write one message file into the Maildir folder `root` (tmp/, fsync, rename into `subdir`).

    Returns the file's name in `subdir` (its key, plus ":" and `info` when flags are given). The bytes
    are written exactly as given. The folder itself is not fsync'd: the caller does (at once or in a
    batch). A failed write leaves nothing behind in tmp/.
    """
    now = time.time()
    key = f"{int(now)}.M{int(now * 1e6) % 1_000_000:06d}P{os.getpid()}Q{next(_names):06d}.{_HOSTNAME}"
    name = f"{key}:{info}" if info else key
    tmp = os.path.join(root, "tmp", key)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # accepted mail must survive a crash (RFC 5321 section 6.1)
        finally:
            os.close(fd)
        if mtime is not None:  # a Maildir message's date is its file's mtime
            os.utime(tmp, (mtime, mtime))
        if before_rename is not None:  # e.g. the delivery ledger notes the name the copy is about to take
            before_rename(name)
        os.rename(tmp, os.path.join(root, subdir, name))
    except BaseException:  # e.g. the disk is full: no half message left behind in tmp/
        remove_quietly(tmp)
        raise
    return name
