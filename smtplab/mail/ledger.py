"""The delivery ledger: which relayed message already has its copy in which mailbox.

On the Internet SMTP delivers at least once: if a connection drops after the receiving MX stored a
message but before the sender read its 250, the sender tries again and the recipient gets the message
twice (RFC 5321 section 6.1 accepts that, RFC 1047 described it). A crash of the sending MTA in the same
window does the same: its queue never recorded the 250. In the lab the relay and every MX live in one
process and share one directory, so the lab does better: the MX notes, per (relay queue id, recipient),
the Maildir file it makes, *before* that file is renamed into place and before it answers 250. A retry of
the same queue id for the same recipient (after a `kill -9`, say) finds the note and the file, and is
answered 250 without a second copy. Once the relay has durably recorded the whole message as done (its
spool files removed), the notes go too.

The note names the file it is about to publish: found with its file, the copy is there; found without
it, the rename never happened (the crash came between) and the copy is made now. So a crash at any
moment leaves 0 lost, 0 partial and 0 duplicated copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from ..disk import remove_quietly, remove_stale_tmp, write_durably
from ..files import make_private_dir

__all__ = ["DeliveryLedger"]

_QUEUE_ID = re.compile(r"[A-Za-z0-9-]{1,40}")


class DeliveryLedger:
    """Notes of relayed deliveries, one small file (0600) per (queue id, recipient), in a 0700 folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        make_private_dir(directory)
        remove_stale_tmp(directory)  # a note a crash left half-written was never relied on

    def _path(self, queue_id: str, recipient: str) -> Path | None:
        if not _QUEUE_ID.fullmatch(queue_id):
            return None  # not an id the relay gives: no note (a path must never come from the wire)
        digest = hashlib.sha256(recipient.lower().encode("utf-8", "surrogateescape")).hexdigest()[:24]
        return self.directory / f"{queue_id}.{digest}"

    def holds(self, queue_id: str, recipient: str) -> bool:
        """True if the copy of `queue_id` for `recipient` is already in its mailbox (new/ or cur/)."""
        path = self._path(queue_id, recipient)
        if path is None:
            return False
        try:
            note = json.loads(path.read_bytes())
            root, name = str(note["root"]), str(note["name"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if os.path.exists(os.path.join(root, "new", name)):
            return True
        key = name.split(":", 1)[0]  # a reader moved it to cur/ and added flags after the ':'
        try:
            return any(n == key or n.startswith(key + ":") for n in os.listdir(os.path.join(root, "cur")))
        except OSError:
            return False

    def note(self, queue_id: str, recipient: str, root: str, name: str,
             fsync_folder: Callable[[Path], None] | None = None) -> None:
        """Record, before the rename that publishes it, the file `name` in Maildir folder `root` that holds
        the copy for `recipient`. `fsync_folder` makes the note's rename durable (else it is done at once)."""
        path = self._path(queue_id, recipient)
        if path is None:
            return
        data = json.dumps({"queue_id": queue_id, "recipient": recipient, "root": root, "name": name}).encode()
        write_durably(path, data, fsync_folder=fsync_folder is None)
        if fsync_folder is not None:
            fsync_folder(self.directory)

    def forget(self, queue_id: str, recipients: Iterable[str]) -> None:
        """Drop the notes of a message the relay has finished with (it will never try it again)."""
        for recipient in recipients:
            path = self._path(queue_id, recipient)
            if path is not None:
                remove_quietly(path)

    def prune(self, queued: Callable[[str], bool]) -> int:
        """Drop every note whose queue id is no longer queued (a crash came before `forget`); at start."""
        dropped = 0
        for name in os.listdir(self.directory):
            queue_id = name.split(".", 1)[0]
            if not queued(queue_id):
                remove_quietly(self.directory / name)
                dropped += 1
        return dropped
