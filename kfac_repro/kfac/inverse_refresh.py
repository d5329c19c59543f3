"""When new inverses are installed: synchronously every T steps, or asynchronously (paper §3.1).

Asynchronous: at step s a snapshot of every factor is taken and inverted in a background thread (numpy's
LAPACK releases the GIL, so it overlaps the TF steps); the result is installed at exactly step s + lag, waiting
for it only if it is late, and the next snapshot is taken then. Installing at a fixed step is the deterministic
hand-over: every replica and every worker switches preconditioners at the same step. All blocks are refreshed
together. Staleness at step k is k − s, the steps since the snapshot in use was taken.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

Snapshot = dict[str, dict]
Inverses = dict[str, dict]


class SyncRefresh:
    """Recompute the inverses from the current factors at every step that is a multiple of `every`."""

    def __init__(self, every: int):
        self.every = every

    def before_step(self, step: int, snapshot: Callable[[], Snapshot], invert: Callable[[Snapshot], Inverses],
                    install: Callable[[Inverses, int], None]) -> None:
        if step > 0 and step % self.every == 0:  # step 0 uses the optimizer's initial inversion
            install(invert(snapshot()), step)

    def close(self) -> None:
        """Nothing runs in the background."""


class AsyncRefresh:
    """Invert in a background thread; install at submit step + lag.

    Without a given lag, it is set once at step 2 as ⌈inversion time / step time⌉ (step 1 timed; step 0 includes
    tracing), from `inversion_seconds` (the optimizer's first, synchronous inversion), and `agree` makes every
    worker use the same value (replica 0's).
    """

    def __init__(self, lag: int | None, agree: Callable[[int], int] = lambda lag: lag):
        self.lag = lag
        self.inversion_seconds = 0.0
        self.waited_seconds = 0.0
        self._agree = agree
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfac-inverses")
        self._pending: Future | None = None
        self._submitted_at = 0
        self._step_started: float | None = None

    def before_step(self, step: int, snapshot: Callable[[], Snapshot], invert: Callable[[Snapshot], Inverses],
                    install: Callable[[Inverses, int], None]) -> None:
        now = time.perf_counter()
        if self.lag is None and self._step_started is not None and step >= 2:
            step_seconds = max(now - self._step_started, 1e-9)
            self.lag = self._agree(max(1, math.ceil(self.inversion_seconds / step_seconds)))
        self._step_started = now
        if self._pending is None:
            self._submit(step, snapshot, invert)
        elif self.lag is not None and step >= self._submitted_at + self.lag:
            start = time.perf_counter()
            result = self._pending.result()
            self.waited_seconds += time.perf_counter() - start
            install(result, self._submitted_at)
            self._submit(step, snapshot, invert)

    def _submit(self, step: int, snapshot: Callable[[], Snapshot], invert: Callable[[Snapshot], Inverses]) -> None:
        self._submitted_at = step
        self._pending = self._pool.submit(invert, snapshot())

    def close(self) -> None:
        """Stop the background thread (an inversion in flight is finished, its result dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = None
