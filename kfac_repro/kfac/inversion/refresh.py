"""When new inverses are installed: synchronously every T steps, or asynchronously (paper §3.1).

Asynchronous: at a step boundary every worker copies the factors into snapshot variables and a background thread
inverts its share of them (LAPACK runs without the GIL, `lapack`, so it overlaps the TF steps). The result is
installed at a step boundary that every worker agrees on, and the next snapshot is taken at that same boundary,
so the inversion starts again as soon as its result is in use:
- free-running (`async_lag` None): each step carries this worker's "my share is finished" flag in the step's
  existing all-reduce; the step after the one in which every worker reported finished is the hand-over. No extra
  host synchronisation, and every worker reads the same reduced flag, so all switch at the same step;
- pinned (`async_lag` L): the snapshot of step s is installed at exactly s + L, waiting for it if it is late
  (reproducible: the schedule does not depend on timing).
Staleness at step k is k − s for the snapshot s in use. The snapshot and its step are checkpointed, so a resumed
run inverts the same snapshot and (pinned) installs it at the same step as the uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import tensorflow as tf

from kfac_repro.kfac.inversion.divided import BlockInversion, Computed

log = logging.getLogger("kfac_repro.kfac")


@dataclass(frozen=True)
class Refresh:
    """One installed refresh: the snapshot's step, the step it was installed before, the inversion's seconds."""

    snapshot_step: int
    installed_at: int
    seconds: float


class SyncRefresh:
    """Recompute the inverses from the current factors at every step that is a multiple of `every`."""

    def __init__(self, inversion: BlockInversion, every: int):
        self.inversion = inversion
        self.every = every
        self.history: list[Refresh] = []

    def before_step(self, step: int) -> int | None:
        """Install new inverses if this step refreshes; returns the snapshot step installed, if any."""
        if step > 0 and step % self.every == 0:  # step 0 uses the optimizer's initial inversion
            computed = self.inversion.compute(_factors(self.inversion), step)
            self.inversion.install(computed)
            return _record(self.history, computed, step)
        return None

    def locally_ready(self) -> bool:
        return False

    def after_step(self, all_ready: Callable[[], bool]) -> None:
        """Nothing is pending between steps."""

    def checkpoint_state(self) -> dict[str, object]:
        return {}

    def restored(self) -> None:
        """Nothing to restart."""

    def close(self) -> None:
        """Nothing runs in the background."""


class AsyncRefresh:
    """Invert snapshots in a background thread; install at an agreed step boundary (see the module docstring)."""

    def __init__(self, inversion: BlockInversion, lag: int | None):
        self.inversion = inversion
        self.lag = lag
        self.history: list[Refresh] = []
        self.waited_seconds = 0.0
        self.snapshot = {b.name: {n: tf.Variable(tf.zeros_like(v), trainable=False, name=f"{v.name.split(':')[0]}_snap")
                                  for n, v in b.factors.items()} for b in inversion.blocks}
        self.snapshot_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="snapshot_step")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfac-inverses")
        self._pending: Future[Computed] | None = None
        self._snapshot_at = -1
        self._all_ready = _never

    def before_step(self, step: int) -> int | None:
        """Install the pending result if this is the hand-over step (and start the next inversion);
        returns the snapshot step installed, if any."""
        if self._pending is None:
            self._start(step)
            return None
        pinned = self.lag is not None and step >= self._snapshot_at + self.lag
        if not (pinned or (self.lag is None and self._all_ready())):
            return None
        result = self._wait()
        self.inversion.install(result)
        self._start(step)
        return _record(self.history, result, step)

    def locally_ready(self) -> bool:
        """This worker's share of the pending inversion is finished (sent with the next step)."""
        return self._pending is not None and self._pending.done()

    def after_step(self, all_ready: Callable[[], bool]) -> None:
        """`all_ready()`: every worker reported its share finished in the step just done (then the next step
        boundary is the hand-over); read only at that boundary, so a step is not waited for otherwise."""
        self._all_ready = all_ready

    def checkpoint_state(self) -> dict[str, object]:
        snapshot = [self.snapshot[b.name] for b in self.inversion.blocks]  # by position, as the factors
        return {"snapshot": snapshot, "snapshot_step": self.snapshot_step}

    def restored(self) -> None:
        """Restart the inversion of the checkpointed snapshot (it was in flight when the checkpoint was taken)."""
        self.close()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfac-inverses")
        self._snapshot_at = int(self.snapshot_step.numpy())
        if self._snapshot_at >= 0:
            self._submit(self._snapshot_at)

    def close(self) -> None:
        """Stop the background thread (an inversion in flight is finished, its result dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = None
        self._all_ready = _never

    def _start(self, step: int) -> None:
        for block in self.inversion.blocks:
            for name, var in block.factors.items():
                self.snapshot[block.name][name].assign(var)
        self.snapshot_step.assign(step)
        self._snapshot_at = step
        self._submit(step)

    def _submit(self, step: int) -> None:
        self._all_ready = _never
        self._pending = self._pool.submit(self.inversion.compute, self.snapshot, step)

    def _wait(self) -> Computed:
        assert self._pending is not None
        start = time.perf_counter()
        result = self._pending.result()
        self.waited_seconds += time.perf_counter() - start
        return result


def _factors(inversion: BlockInversion) -> Mapping[str, Mapping[str, tf.Variable]]:
    return {b.name: b.factors for b in inversion.blocks}


def _record(history: list[Refresh], computed: Computed, step: int) -> int:
    refresh = Refresh(computed.snapshot_step, step, computed.seconds)
    history.append(refresh)
    log.info("inverses of step %d installed at step %d (staleness %d; this worker's share took %.3f s)",
             refresh.snapshot_step, step, step - refresh.snapshot_step, refresh.seconds)
    return computed.snapshot_step



def _never() -> bool:
    return False
