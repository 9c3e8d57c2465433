"""The lab's virtual clock: real time plus an offset a notebook cell can advance.

Retry intervals and queue lifetimes are hours long in real MTAs; a learner should not wait for them.
`advance()` moves the offset forward and wakes every listener (the relay queue) so due work runs at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from .errors import BadDuration

__all__ = ["VirtualClock", "parse_duration"]


_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*,?")


def parse_duration(text: str) -> float:
    """Read a duration a learner would write: "90", "5m", "5 minutes", "1h30m", "2 hours 15 min", "2d".

    A number alone is seconds. Raises BadDuration (saying what is understood) for anything else.
    """
    words = text.strip().lower()
    if not words:
        raise BadDuration("give a duration, e.g. '5m', '1h30m', '2d' or a number of seconds")
    total, position = 0.0, 0
    while position < len(words):
        match = _PART.match(words, position)
        if match is None or match.end() == position:
            break
        number, unit = match.groups()
        if unit not in _UNITS and unit:
            break
        if not unit and match.end() < len(words):  # "5 3m": a bare number only alone or last
            break
        total += float(number) * _UNITS.get(unit, 1)
        position = match.end()
    if position != len(words):
        raise BadDuration(
            f"cannot read {text!r} as a duration: write a number with a unit, e.g. '30s', '5m', "
            "'5 minutes', '1h30m', '2d' (or a number of seconds)")
    return total


def _seconds(delta: float | timedelta | str) -> float:
    """Turn 90, timedelta(minutes=5) or a duration text (see parse_duration) into seconds."""
    if isinstance(delta, timedelta):
        return delta.total_seconds()
    if isinstance(delta, bool) or not isinstance(delta, (int, float, str)):
        raise BadDuration(f"give seconds, a timedelta or a text like '5m', not {type(delta).__name__}")
    if isinstance(delta, (int, float)):
        return float(delta)
    return parse_duration(delta)


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
        return datetime.fromtimestamp(self.now(), tz=UTC)

    @property
    def offset(self) -> float:
        """Seconds the lab clock runs ahead of the real clock."""
        return self._offset

    def advance(self, delta: float | timedelta | str) -> float:
        """Move lab time forward by `delta` (seconds, timedelta or '5m', '5 minutes', '1h30m', '2d').

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
