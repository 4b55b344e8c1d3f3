"""Admission control for answers: a few computed at once, a bounded queue behind them, 503 + Retry-After beyond.

Without it every request waits its turn for the CPU: at 32 clients an answer took 76 s (benchs/results/bench_load.md),
long after any customer gave up. A request is refused at once when the queue is full or when its expected wait (the
answers ahead of it times the recent answer time, over the slots) exceeds ``max_wait_s``; one that was admitted to the
queue but still finds no slot within ``max_wait_s`` is refused then. Retry-After says when a slot is likely free.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

from starlette.concurrency import run_in_threadpool


class Overloaded(Exception):
    """Every answer slot is busy and the queue is full (or too slow): 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class AdmissionGate:
    def __init__(self, slots: int, queue: int, max_wait_s: float):
        if slots < 1 or queue < 0 or max_wait_s <= 0:
            raise ValueError("admission needs slots >= 1, queue >= 0 and max_wait_s > 0")
        self.slots, self.queue, self.max_wait_s = slots, queue, max_wait_s
        self._free = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self.waiting = 0
        self.active = 0
        self.rejected = 0
        self._recent = deque(maxlen=32)   # seconds a slot was held, newest last

    def typical_seconds(self) -> float:
        """Median time a slot is held lately (1 s before anything was measured)."""
        with self._lock:
            recent = sorted(self._recent)
        return recent[len(recent) // 2] if recent else 1.0

    def _retry_after(self, ahead: int) -> int:
        return max(1, math.ceil((ahead + 1) * self.typical_seconds() / self.slots))

    def _refuse(self, why: str, ahead: int) -> Overloaded:
        with self._lock:
            self.rejected += 1
        return Overloaded(f"kbqa is answering at capacity ({why}); retry shortly", self._retry_after(ahead))

    def enter(self) -> "Ticket":
        """A slot, waiting for one if the queue allows (blocks: call it from a worker thread)."""
        if self._free.acquire(blocking=False):
            return self._admitted()
        typical = self.typical_seconds()
        with self._lock:
            ahead = self.waiting
            expected = (ahead + 1) * typical / self.slots
            if ahead >= self.queue or expected > self.max_wait_s:
                full = ahead >= self.queue
            else:
                full = None
                self.waiting += 1
        if full is not None:
            raise self._refuse(f"{ahead} waiting, queue of {self.queue}" if full
                               else f"expected wait {expected:.1f} s over {self.max_wait_s:g} s", ahead)
        try:
            got = self._free.acquire(timeout=self.max_wait_s)
        finally:
            with self._lock:
                self.waiting -= 1
        if not got:
            raise self._refuse(f"no slot within {self.max_wait_s:g} s", self.waiting)
        return self._admitted()

    def _admitted(self) -> "Ticket":
        with self._lock:
            self.active += 1
        return Ticket(self)

    def _leave(self, seconds: float) -> None:
        with self._lock:
            self.active -= 1
            self._recent.append(seconds)
        self._free.release()


class Ticket:
    """One held slot; ``release`` is idempotent (a stream releases from its end and from its clean-up)."""

    def __init__(self, gate: AdmissionGate):
        self._gate, self._start, self._released = gate, time.perf_counter(), False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._gate._leave(time.perf_counter() - self._start)

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


async def admit(gate: AdmissionGate) -> Ticket:
    """A slot for one answer; the wait (bounded by the gate) happens on a worker thread, not the event loop."""
    return await run_in_threadpool(gate.enter)
