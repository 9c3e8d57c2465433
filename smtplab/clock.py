"""The lab's virtual clock: real time plus an offset a notebook cell can advance.

Retry intervals and queue lifetimes are hours long in real MTAs; a learner should not wait for them.
`advance()` moves the offset forward and wakes every listener (the relay queue) so due work runs at once.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .disk import remove_quietly, write_durably
from .errors import BadDuration
from .i18n import _

__all__ = ["VirtualClock", "parse_duration", "ClockError", "MAX_ADVANCE", "MAX_OFFSET"]


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
        raise BadDuration(_("give a duration, e.g. '5m', '1h30m', '2d' or a number of seconds"))
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
            _("cannot read {text!r} as a duration: write a number with a unit, e.g. '30s', '5m', "
              "'5 minutes', '1h30m', '2d' (or a number of seconds)").format(text=text))
    return total


# One advance() may move the clock by at most this much: a queue lifetime is days, a course needs weeks at
# most; anything beyond ten years is a typo (e.g. milliseconds given as seconds) that would break dates.
MAX_ADVANCE = 10 * 365 * 86400.0
# The clock as a whole stays within a century ahead, far from the year 9999 where datetime ends.
MAX_OFFSET = 100 * 365 * 86400.0


class ClockError(BadDuration):
    """The lab clock cannot move by that amount (not a number, backwards, or absurdly far), or its saved
    offset cannot be read."""


def check_advance(seconds: float, offset: float = 0.0) -> float:
    """Return `seconds` if the clock may move forward by it from `offset`; raise ClockError otherwise."""
    if math.isnan(seconds) or math.isinf(seconds):
        raise ClockError(_("cannot advance the lab clock by {seconds}: give a finite duration such as 90, '5m', "
                           "'2h' or '1d'").format(seconds=seconds))
    if seconds < 0:
        raise ClockError(_("the lab clock only moves forward: {seconds:g} s is negative; give a positive duration "
                           "such as '5m' (to start again from real time, start a new lab)").format(seconds=seconds))
    if seconds > MAX_ADVANCE:
        raise ClockError(_("{seconds:g} s is more than ten years: advance by a duration a queue could wait "
                           "(minutes, hours, days: e.g. '5m', '4h', '5d')").format(seconds=seconds))
    if offset + seconds > MAX_OFFSET:
        raise ClockError(_("the lab clock is already {days:.0f} days ahead: it may not run more than a "
                           "century ahead of real time; start a new lab to begin again").format(days=offset / 86400))
    return seconds


def load_offset(path: Path) -> float:
    """Read a clock offset saved by `save_offset` (0 when there is none yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return 0.0
    except (OSError, ValueError) as exc:
        raise ClockError(_("cannot read the lab clock from {path} ({error}); remove that file to start the "
                           "clock again from real time").format(path=path, error=exc)) from None
    offset = data.get("offset") if isinstance(data, dict) else None
    if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise ClockError(_("{path} holds no valid clock offset ({offset!r}); remove that file to start the clock "
                           "again from real time").format(path=path, offset=offset))
    return float(offset)


def save_offset(path: Path, offset: float) -> None:
    """Record the offset durably (0600, fsync'd, renamed into place): spool times are lab times, so after
    a restart the clock must go on from where it was, or a 5-minute retry would wait a real day."""
    write_durably(path, json.dumps({"offset": offset}).encode(), fsync_folder=True)


def _seconds(delta: float | timedelta | str) -> float:
    """Turn 90, timedelta(minutes=5) or a duration text (see parse_duration) into seconds."""
    if isinstance(delta, timedelta):
        return delta.total_seconds()
    if isinstance(delta, bool) or not isinstance(delta, (int, float, str)):
        raise BadDuration(_("give seconds, a timedelta or a text like '5m', not {type}").format(
            type=type(delta).__name__))
    if isinstance(delta, (int, float)):
        return float(delta)
    return parse_duration(delta)


class VirtualClock:
    """Tell lab time; advance it without sleeping."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._state: Path | None = None  # where the offset is kept across restarts (None: not kept)

    def keep_in(self, path: str | os.PathLike[str]) -> None:
        """Go on from the offset saved in `path` (if any), and save it there at every advance."""
        state = Path(path)
        remove_quietly(f"{state}.tmp")  # a save a crash interrupted: the file itself is whole
        offset = load_offset(state)
        with self._lock:
            self._state = state
            self._offset = offset

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
        with self._lock:
            check_advance(seconds, self._offset)
            if self._state is not None:
                save_offset(self._state, self._offset + seconds)  # on disk first: no jump a restart forgets
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
