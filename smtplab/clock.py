"""The lab's virtual clock: real time plus an offset a notebook cell can advance.

Retry intervals and queue lifetimes are hours long in real MTAs; a learner should not wait for them.
`advance()` moves the offset forward and wakes every listener (the relay queue) so due work runs at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

__all__ = ["VirtualClock"]


def _seconds(delta: float | timedelta | str) -> float:
    """Turn 90, timedelta(minutes=5) or '5m' / '2h' / '1d' / '30s' into seconds."""
    if isinstance(delta, timedelta):
        return delta.total_seconds()
    if isinstance(delta, (int, float)):
        return float(delta)
    text = delta.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


class VirtualClock:
    """Tell lab time; advance it without sleeping."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """Return the lab time as a POSIX timestamp (real time + offset)."""
        return time.time() + self._offset

    def datetime(self) -> datetime:
        """Return the lab time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)

    @property
    def offset(self) -> float:
        """Seconds the lab clock runs ahead of the real clock."""
        return self._offset

    def advance(self, delta: float | timedelta | str) -> float:
        """Move lab time forward by `delta` (seconds, timedelta or '5m', '2h', '1d').

        Work that became due (retries, bounces) runs right away; returns the new lab time.
        """
        seconds = _seconds(delta)
        if seconds < 0:
            raise ValueError("the lab clock only moves forward: give a positive duration")
        with self._lock:
            self._offset += seconds
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return self.now()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (from the advancing thread) each time the clock jumps."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def __repr__(self) -> str:
        return f"<VirtualClock {self.datetime():%Y-%m-%d %H:%M:%S} UTC, +{self._offset:.0f}s>"
