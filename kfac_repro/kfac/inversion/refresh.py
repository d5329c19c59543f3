"""The refresh engine: carries out a `RefreshPolicy` (`inversion.policy`) over one `BlockInversion`, for both
front ends (the host loop calls `before_step`; `fit` reaches the same calls through `keras.refresh`).

At a boundary `plan` says whether to start an inversion, install the pending one, and start again after it
(see `inversion.policy`). Asynchronous policies snapshot the factors into variables and invert them in a
background thread (LAPACK runs without the GIL, `lapack`, so it overlaps the TF steps); every worker takes the
same decisions at the same boundary: pinned ones depend on the step only, free-running ones on a flag that every
step all-reduces ("my share is finished"), read at the next boundary. Staleness at step k is k − s for the snapshot
s in use. The snapshot and its step are checkpointed, so a resumed run inverts the same snapshot and (pinned)
installs it at the same step as the uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kfac_repro.kfac.inversion.divided import BlockInversion, Computed, FactorSource, host_array
from kfac_repro.kfac.inversion.policy import RefreshPolicy

log = logging.getLogger("kfac_repro.kfac")


@dataclass(frozen=True)
class Refresh:
    """One installed refresh: the snapshot's step, the step it was installed before, the inversion's seconds."""

    snapshot_step: int
    installed_at: int
    seconds: float


class InverseRefresh:
    """The pending inversion, its background thread, the snapshot and the record of installed refreshes."""

    def __init__(self, inversion: BlockInversion, policy: RefreshPolicy):
        self.inversion = inversion
        self.policy = policy
        self.history: list[Refresh] = []
        self.waited_seconds = 0.0
        self.snapshot = {b.name: {n: tf.Variable(tf.zeros_like(v), trainable=False, name=f"{v.name.split(':')[0]}_snap")
                                  for n, v in b.factors.items()} for b in inversion.blocks} if policy.background else {}
        self.snapshot_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="snapshot_step")
        self._pool = self._new_pool()
        self._pending: Future[Computed] | None = None  # None while pending: to be computed at `take` (restored)
        self._pending_step: int | None = None
        self._source: FactorSource | None = None
        self._last = -1
        self._all_ready: Callable[[], bool] = _never

    # ---- the boundary, for both front ends ------------------------------------------------------------------
    def plan(self, step: int, all_ready: bool) -> tuple[bool, bool, bool]:
        """(start an inversion, install the pending one, start again after installing) at the boundary before
        `step`, as the policy decides."""
        pending, last = self._pending_step, self._last
        first = pending is None and self.policy.start(step, last)
        if first:
            pending, last = step, step
        take = pending is not None and self.policy.due(step, pending, all_ready)
        return first, take, take and self.policy.start(step, last)

    def start(self, step: int, factors: FactorSource) -> None:
        """Start inverting `factors` (the snapshot of `step`): in the background or now, as the policy says."""
        self._last, self._pending_step, self._source = step, step, factors
        if self._pool is not None:
            self._pending = self._pool.submit(self.inversion.compute, factors, step, self.inversion.damping)
        else:
            self._pending = Future()
            self._pending.set_result(self.inversion.compute(factors, step))

    def ready(self) -> bool:
        """This worker's share of the pending inversion is finished."""
        return self._pending is not None and self._pending.done()

    def take(self, step: int, snapshot: FactorSource | None = None) -> Computed:
        """The pending result, for installing before `step` (waited for if late). `snapshot`: the factors it must be
        the inverses of; when this process is not inverting them (a restored run), they are inverted now."""
        assert self._pending_step is not None
        if snapshot is not None and (self._pending is None or not _same(self._source, snapshot)):
            result = self.inversion.compute(snapshot, self._pending_step)
        else:
            assert self._pending is not None
            begin = time.perf_counter()
            result = self._pending.result()
            self.waited_seconds += time.perf_counter() - begin
        self._pending, self._pending_step, self._source = None, None, None
        refresh = Refresh(result.snapshot_step, step, result.seconds)
        self.history.append(refresh)
        log.info("inverses of step %d installed at step %d (staleness %d; this worker's share took %.3f s)",
                 refresh.snapshot_step, step, step - refresh.snapshot_step, refresh.seconds)
        return result

    def invert_now(self, step: int, factors: FactorSource | None = None) -> Computed:
        """The inverses of `factors` (by default the current ones), computed now for installing before `step`
        outside the policy (the first step's); a synchronous policy then refreshes at this step no more."""
        if self._pending_step is None:
            self._last = step
        return self.inversion.compute(factors or {b.name: b.factors for b in self.inversion.blocks}, step)

    def adopt(self, snapshot_step: int) -> None:
        """A checkpoint says the snapshot of `snapshot_step` is being inverted: if this process is not, its
        inverses are computed when taken."""
        if self.policy.background and snapshot_step >= 0 and self._pending_step is None:
            self._pending_step, self._last = snapshot_step, snapshot_step

    # ---- the host loop --------------------------------------------------------------------------------------
    def before_step(self, step: int) -> int | None:
        """Carry out the boundary before `step` (eager); returns the snapshot step installed, if any."""
        first, take, again = self.plan(step, self._all_ready())
        if first:
            self._snapshot_and_start(step)
        installed = None
        if take:
            computed = self.take(step)
            self.inversion.install(computed)
            installed = computed.snapshot_step
        if again:
            self._snapshot_and_start(step)
        return installed

    def locally_ready(self) -> bool:
        """This worker's share is finished (sent with the next step; only free-running policies listen)."""
        return self.policy.background and self.ready()

    def after_step(self, all_ready: Callable[[], bool]) -> None:
        """`all_ready()`: every worker reported its share finished in the step just done (read only at the next
        boundary, so a step is not waited for otherwise)."""
        self._all_ready = all_ready

    def checkpoint_state(self) -> dict[str, object]:
        if not self.policy.background:
            return {}
        snapshot = [self.snapshot[b.name] for b in self.inversion.blocks]  # by position, as the factors
        return {"snapshot": snapshot, "snapshot_step": self.snapshot_step}

    def restored(self) -> None:
        """Restart the inversion of the checkpointed snapshot (it was in flight when the checkpoint was taken)."""
        self.close()
        self._pool = self._new_pool()
        self._last = -1
        snapshot_step = int(self.snapshot_step.numpy())
        if self.policy.background and snapshot_step >= 0:
            self.start(snapshot_step, self.snapshot)

    def close(self) -> None:
        """Stop the background thread (an inversion in flight is finished, its result dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending, self._pending_step, self._source = None, None, None
        self._all_ready = _never

    def _new_pool(self) -> ThreadPoolExecutor | None:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfac-inverses") if self.policy.background \
            else None

    def _snapshot_and_start(self, step: int) -> None:
        if not self.policy.background:
            self.start(step, {b.name: b.factors for b in self.inversion.blocks})
            return
        for block in self.inversion.blocks:
            for name, var in block.factors.items():
                self.snapshot[block.name][name].assign(var)
        self.snapshot_step.assign(step)
        self.start(step, self.snapshot)


def _same(a: FactorSource | None, b: FactorSource) -> bool:
    """Whether two factor sources hold the same values (variables read now)."""
    if a is None or a.keys() != b.keys():
        return False
    return all(np.array_equal(host_array(a[block][name]), host_array(value)) for block, factors in b.items()
               for name, value in factors.items())


def _never() -> bool:
    return False

