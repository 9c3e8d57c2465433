"""The thread the lab's servers run in: one asyncio loop, and the thread pools its blocking work uses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .disk import DiskThread
from .errors import LabTimeout
from .i18n import _

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self, name: str, smtp_threads: int = 1) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix=f"{name}-io"))
        # Mailbox and spool writes (file creation + fsync) run on a thread of their own, not on the loop:
        # one slow disk must not stall every other session; nor in the default executor, which the relay's
        # SMTP clients fill while they wait for the very MX that needs the disk to answer them.
        self.disk = DiskThread(f"{name}-disk")
        # The relay's SMTP clients (smtplib, blocking) get threads of their own too: they wait for MX
        # hosts on this very loop, which may need the default executor (policy checks) to answer them.
        # `smtp_threads`: as many as the relay's attempts in flight (the lab passes its limit).
        self.smtp = concurrent.futures.ThreadPoolExecutor(smtp_threads, thread_name_prefix=f"{name}-smtp")
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run `coro` on the loop and return its result; after `timeout` seconds it is cancelled."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("blocking lab call made from the lab's own loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # the work stops on the loop too, instead of running on unseen
            raise LabTimeout(
                _("the lab did not finish within {timeout:g} s and the work was cancelled; if a host has a "
                  "fault with a delay, remove it (host.clear_faults()), else try again or restart the lab"
                  ).format(timeout=timeout)
            ) from None

    def close(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_default_executor()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
        self.disk.close()
        self.smtp.shutdown(wait=True)
        self.loop.close()
