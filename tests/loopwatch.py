"""How much CPU each step of an asyncio loop takes, measured in the loop's own thread (a test helper).

Wall-clock watchdogs (asyncio's debug mode, `slow_callback_duration`) blame the loop for the time the
operating system did not run its thread: on a loaded machine every step looks slow. CPU time is what a step
itself costs, whatever the load, and a callback that computes for 80 ms still costs 80 ms of it.

A heartbeat task on the loop awaits `asyncio.sleep(0)` in a loop, so it runs once per loop iteration, and
reads the thread's CPU clock each time: the difference between two beats is the CPU of everything the loop
ran in between - one iteration's callbacks, each counted in exactly one window. The worst window is the
worst step. A sampler thread reads the same clock from outside (`pthread_getcpuclockid`) every ~2 ms and,
while a window grows past `stack_after` of CPU, takes the loop thread's stack: a failing test names the code
that held the loop, not only how long it did.

Cyclic garbage collection is counted apart: a collection runs in whichever thread allocates when the
process's count of container objects crosses a threshold, and its cost is the whole process's heap (in a
test: pytest's and every earlier test's objects too), not the work of the step it lands in. `gc.callbacks`
times each collection on the loop thread; the steps are reported without it, the collections on their own.

The heartbeat keeps the loop busy (it never sleeps in select), so a watch costs one core while it runs.
What this cannot see: a step that blocks without computing (an fsync, a blocking socket, time.sleep on the
loop) costs no CPU; tests that hold such work on a gate and check the loop still answers catch those.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
import time
import traceback
from types import TracebackType

__all__ = ["LoopWatch"]

KEEP = 5  # worst windows kept for the report
MAX_STACKS = 50  # stacks kept at most (a passing run takes none or a few)


class LoopWatch:
    """Watch `loop` (running in another thread) between `start()` and `stop()`, or as a context manager."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stack_after: float = 0.02, period: float = 0.002) -> None:
        self.loop = loop
        self.stack_after = stack_after
        self.period = period
        self.ident: int | None = None  # the loop thread's, learnt by the heartbeat itself
        self.steps = 0  # windows measured
        self.worst: list[tuple[float, int]] = []  # (CPU seconds, window), the KEEP largest, largest first
        self.stacks: dict[int, tuple[float, str]] = {}  # window -> (CPU when sampled, the loop thread's stack)
        self.open_window: float | None = None  # CPU of a window still running when stop() gave up waiting
        self.collections: list[tuple[float, int]] = []  # (CPU seconds, generation) of each on the loop thread
        self._gc_began: float | None = None
        self._gc_in_window = 0.0
        # (window number, the loop thread's CPU clock when it began): one tuple, so the sampler reads both at once
        self._mark: tuple[int, float] = (0, 0.0)
        self._stopping = False
        self._beating: concurrent.futures.Future[None] | None = None
        self._started = threading.Event()
        self._sampler_done = threading.Event()
        self._sampler: threading.Thread | None = None

    # --- the measurement ---
    @property
    def worst_step(self) -> float:
        """CPU seconds of the costliest loop step seen, cyclic garbage collection left out (0 before any)."""
        candidates = [cpu for cpu, _ in self.worst[:1]]
        if self.open_window is not None:
            candidates.append(self.open_window)
        return max(candidates, default=0.0)

    async def _beat(self) -> None:
        clock = time.thread_time  # this thread's CPU time, whatever the machine's load
        self.ident = threading.get_ident()
        window = 0
        last = clock()
        self._mark = (window, last)
        self._started.set()
        worst = self.worst
        floor = 0.0  # the smallest of the kept windows, once KEEP are kept
        while not self._stopping:
            await asyncio.sleep(0)  # the rest of this iteration, the select, the next one's earlier callbacks
            now = clock()
            used = now - last - self._gc_in_window
            self._gc_in_window = 0.0
            if used > floor:
                worst.append((used, window))
                worst.sort(reverse=True)
                del worst[KEEP:]
                floor = worst[-1][0] if len(worst) == KEEP else 0.0
            window += 1
            last = now
            self._mark = (window, now)
        self.steps = window

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self.ident:  # another thread's collection holds the GIL, not this CPU
            return
        now = time.thread_time()
        if phase == "start":
            self._gc_began = now
        elif self._gc_began is not None:
            self._gc_in_window += now - self._gc_began
            self.collections.append((now - self._gc_began, info["generation"]))
            self._gc_began = None

    def _sample(self) -> None:
        assert self.ident is not None
        cpu_clock = time.pthread_getcpuclockid(self.ident)
        while not self._sampler_done.wait(self.period):
            mark = self._mark
            used = time.clock_gettime(cpu_clock) - mark[1]
            if used < self.stack_after or mark[0] in self.stacks or len(self.stacks) >= MAX_STACKS:
                continue
            frame = sys._current_frames().get(self.ident)
            if frame is None or self._mark != mark:  # the window ended meanwhile: the stack is another's
                continue
            frames = traceback.extract_stack(frame)
            del frame
            # from the callback the loop ran on: the thread's start and the loop's own frames say nothing
            starts = [i for i, f in enumerate(frames) if f.name == "_run" and f.filename.endswith("events.py")]
            self.stacks[mark[0]] = (used, "".join(traceback.format_list(frames[starts[-1] + 1 if starts else 0:])))

    # --- start / stop ---
    def start(self) -> LoopWatch:
        self._beating = asyncio.run_coroutine_threadsafe(self._beat(), self.loop)
        if not self._started.wait(60):  # a guard against a dead loop, not a time bound on what is measured
            self._beating.cancel()
            raise RuntimeError("the loop did not run the heartbeat: is it running?")
        gc.callbacks.append(self._on_gc)
        if hasattr(time, "pthread_getcpuclockid"):  # the stacks are a diagnostic: without it, no stacks
            self._sampler = threading.Thread(target=self._sample, name="loopwatch-sampler", daemon=True)
            self._sampler.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        """End the watch; the window running now is measured when the loop ends it (or, stuck, as it stands)."""
        self._stopping = True
        assert self._beating is not None
        try:
            self._beating.result(timeout)
        except concurrent.futures.TimeoutError:  # the loop is stuck in one step: that step is the finding
            if self.ident is not None and hasattr(time, "pthread_getcpuclockid"):
                clock = time.pthread_getcpuclockid(self.ident)
                self.open_window = time.clock_gettime(clock) - self._mark[1]
            self._beating.cancel()
        finally:
            if self._on_gc in gc.callbacks:
                gc.callbacks.remove(self._on_gc)
            self._sampler_done.set()
            if self._sampler is not None:
                self._sampler.join()

    def __enter__(self) -> LoopWatch:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- the report ---
    def report(self) -> str:
        """The worst steps in milliseconds of CPU, with the loop thread's stack where the sampler took one."""
        lines = [f"{self.steps} loop steps watched; worst (ms of loop-thread CPU, garbage collection apart): "
                 + ", ".join(f"{cpu * 1000:.1f} (step {window})" for cpu, window in self.worst)]
        if self.collections:
            cpu, generation = max(self.collections)
            lines.append(f"cyclic garbage collection on the loop thread: {len(self.collections)} collections, "
                         f"{sum(c for c, _ in self.collections) * 1000:.1f} ms in all, the longest "
                         f"{cpu * 1000:.1f} ms (generation {generation})")
        if self.open_window is not None:
            lines.append(f"a step still running at the end had used {self.open_window * 1000:.1f} ms")
        for _, window in self.worst:
            if window in self.stacks:
                sampled, stack = self.stacks[window]
                lines.append(f"step {window}, {sampled * 1000:.1f} ms into it (garbage collection included), "
                             f"the loop was in:\n{stack}")
        return "\n".join(lines)
