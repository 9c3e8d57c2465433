"""A growing wait before a login attempt that follows failed ones: guessing passwords gets slow.

Used by the submission hosts' SMTP AUTH (`mail/handlers.py`, through `Services.login_throttle`); a typo
costs nothing. Per connection and per client address, as Postfix's error sleep and Dovecot's
auth_failure_delay. (The IMAP server has its own, `net/imapd/protocol.py`.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..i18n import N_, lazy

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """A growing wait before each login attempt that follows failed ones, per connection and per client
    address (as Postfix's error sleep and Dovecot's auth_failure_delay do): a typo costs nothing, guessing
    a classmate's password costs minutes. The wait is written into the trace, with its reason."""

    FREE = 2  # failures allowed before any wait (typos)
    FIRST_DELAY = 1.0  # seconds before the attempt after the free ones; doubles with each failure
    MAX_DELAY = 16.0
    FORGET_AFTER = 900.0  # seconds without a failure before an address starts afresh

    def __init__(self) -> None:
        self._by_conn: dict[str, int] = {}
        self._by_address: dict[str, tuple[int, float]] = {}

    def delay(self, conn: str, peer: Any) -> float:
        """Seconds to wait before the next attempt on `conn` from `peer` (an address, or (address, port))."""
        address = _address(peer)
        failures = max(self._by_conn.get(conn, 0), self._address_failures(address))
        if failures < self.FREE:
            return 0.0
        return min(self.MAX_DELAY, self.FIRST_DELAY * 2 ** (failures - self.FREE))

    def _address_failures(self, address: str) -> int:
        count, last = self._by_address.get(address, (0, 0.0))
        if count and time.monotonic() - last > self.FORGET_AFTER:
            del self._by_address[address]
            return 0
        return count

    def record(self, conn: str, peer: Any, success: bool) -> None:
        address = _address(peer)
        if success:
            self._by_conn.pop(conn, None)
            self._by_address.pop(address, None)
            return
        self._by_conn[conn] = self._by_conn.get(conn, 0) + 1
        self._by_address[address] = (self._address_failures(address) + 1, time.monotonic())
        if len(self._by_conn) > 4096:  # connections come and go: keep the tables small
            self._by_conn.clear()
        if len(self._by_address) > 4096:
            now = time.monotonic()
            self._by_address = {a: (n, t) for a, (n, t) in self._by_address.items() if now - t <= self.FORGET_AFTER}

    async def before_attempt(self, conn: str, peer: Any, note: Callable[[str], None]) -> None:
        """Wait as long as earlier failures ask (on the lab's loop: other sessions go on meanwhile)."""
        wait = self.delay(conn, peer)
        if wait > 0:
            note(lazy(N_("login attempt after failed ones from {address}: answered after {wait} s (a growing delay "
                         "makes guessing passwords slow)"), address=_address(peer), wait=f"{wait:g}"))
            await asyncio.sleep(wait)


def _address(peer: Any) -> str:
    """The client address of a peer given as (address, port, ...) or as an address."""
    return str(peer[0]) if isinstance(peer, tuple | list) and peer else str(peer or "")
