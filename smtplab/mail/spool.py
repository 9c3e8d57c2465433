"""The relay queue on disk: for each queued message its bytes (`ID.eml`) and its envelope and state
(`ID.json`), both 0600 and fsync'd before the 250 that accepts the message (RFC 5321 section 6.1).

A lab started again on the same directory recovers what waits (`recover`); a crash leaves nothing half
queued. The relay (relay.py) decides what happens to a message; this module only keeps it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from ..disk import DiskThread, fsync_directory, remove_quietly, remove_stale_tmp, write_durably
from ..files import make_private_dir
from .ledger import DeliveryLedger
from .queue import QueueEntry, RecipientStatus, is_done

__all__ = ["Spool"]


class Spool:
    """The spool directory of the relay queue (written from the disk thread, or the caller's thread)."""

    def __init__(self, directory: Path, disk: DiskThread, ledger: DeliveryLedger) -> None:
        self.directory = directory
        make_private_dir(directory)
        self._disk = disk
        self._ledger = ledger  # the MX side's notes of copies made: pruned once a message is done

    def recover(self) -> list[QueueEntry]:
        """Read the spool after a stop or a crash (disk thread): clean what a crash left, keep what waits.

        A `.tmp` is a write that never reached its rename; a message without its envelope never got its
        250 (the envelope is written second); a finished message is only waiting to be pruned; a ledger
        note of a message no longer queued was left between the relay's last record and its pruning.
        """
        remove_stale_tmp(self.directory)
        entries = []
        for path in sorted(self.directory.glob("*.json")):
            entry = self.load(path)
            if entry is None:
                continue
            if is_done(entry):
                self.prune(entry)
            else:
                entries.append(entry)
        envelopes = {p.stem for p in self.directory.glob("*.json")}
        for message in self.directory.glob("*.eml"):
            if message.stem not in envelopes:
                remove_quietly(message)
        fsync_directory(self.directory)
        self._ledger.prune(lambda queue_id: queue_id in envelopes)
        return entries

    def write(self, entry: QueueEntry, content: bytes,
              fsync_folder: Callable[[Path], None] = fsync_directory) -> None:
        """Put a new message in the queue durably: the 250 that follows promises the message survives
        a crash (RFC 5321 section 6.1). The message, then its envelope, each fsync'd and 0600; then the
        folder. The envelope comes second: a message without one was never acknowledged."""
        message = self.directory / f"{entry.queue_id}.eml"
        write_durably(message, content)
        try:
            write_durably(self.directory / f"{entry.queue_id}.json", self.state_bytes(entry))
        except BaseException:  # without its envelope the message is not queued: nothing half-queued stays
            remove_quietly(message)
            raise
        fsync_folder(self.directory)

    def has(self, queue_id: str) -> bool:
        return (self.directory / f"{queue_id}.json").exists()

    def save(self, entry: QueueEntry) -> None:
        """Write an entry's state after an attempt (disk thread; the folder is fsync'd with the batch)."""
        write_durably(self.directory / f"{entry.queue_id}.json", self.state_bytes(entry))
        self._disk.fsync_later(self.directory)

    def state_bytes(self, entry: QueueEntry) -> bytes:
        data = {k: v for k, v in asdict(entry).items() if k not in ("running", "started", "dsns")}
        return json.dumps(data, indent=1).encode()

    def read(self, queue_id: str) -> bytes:
        return (self.directory / f"{queue_id}.eml").read_bytes()

    def prune(self, entry: QueueEntry) -> None:
        """A finished message leaves the spool (its envelope first: the message alone means nothing) and,
        once that is durable, its ledger notes go: no retry of it can come any more."""
        remove_quietly(self.directory / f"{entry.queue_id}.json")
        remove_quietly(self.directory / f"{entry.queue_id}.eml")
        recipients = [r.address for r in entry.recipients]
        if threading.current_thread() is self._disk.thread:
            self._disk.fsync_later(self.directory)
            self._disk.after_batch(partial(self._ledger.forget, entry.queue_id, recipients))
        else:
            fsync_directory(self.directory)
            self._ledger.forget(entry.queue_id, recipients)

    def load(self, path: Path) -> QueueEntry | None:
        try:
            data = json.loads(path.read_text())
            data["recipients"] = [RecipientStatus(**r) for r in data["recipients"]]
            for key in ("running", "started", "dsns"):
                data.pop(key, None)
            entry = QueueEntry(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not (self.directory / f"{entry.queue_id}.eml").exists():
            return None
        entry.recipients = [replace(r, state="queued") if r.state in ("mx-lookup", "connecting") else r
                            for r in entry.recipients]
        return entry
