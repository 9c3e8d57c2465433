"""What the SMTP handlers ask of the lab: the `Postmaster` protocol.

`smtplab.services.Services` implements it (mypy checks that where the lab builds the handlers); a test
can hand the handlers any other object that has these members. The lab's learner facade, `Lab`, does not
implement it, so none of these names shows up in a learner's tab completion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..auth.policy import PolicyServices
from ..net.dsn_parameters import DsnRequest
from ..net.faults import Fault
from ..net.throttle import LoginThrottle
from ..trace.ring import Trace

__all__ = ["Postmaster"]


class Postmaster(PolicyServices, Protocol):
    """What the submission and inbound handlers call (on the lab's loop unless a method says otherwise)."""

    @property
    def trace(self) -> Trace: ...
    @property
    def hosts(self) -> Mapping[str, Any]: ...  # host name -> host (`.address`, `.options`)
    @property
    def login_throttle(self) -> LoginThrottle: ...  # waits after failed AUTH attempts (net/throttle.py)

    def now(self) -> float: ...  # lab (virtual) time
    def check_password(self, address: str, password: str) -> bool: ...
    def user_exists(self, address: str) -> bool: ...
    def peer_name(self, address: str) -> str: ...
    def host_options(self, host: str) -> tuple[str, ...]: ...
    def fault_for(self, host: str, stage: str, recipient: str = "") -> Fault | None: ...
    async def keys_ready(self) -> None: ...
    async def store_local(self, recipients: list[str], content: bytes, folder: str = "INBOX", *,
                          client: object = None) -> list[str]: ...
    def enqueue(self, host: str, sender: str, recipients: list[str], content: bytes, queue_id: str) -> None: ...
    async def enqueue_async(self, host: str, sender: str, recipients: list[str], content: bytes,
                            queue_id: str, dsn: DsnRequest | None = None) -> None: ...
