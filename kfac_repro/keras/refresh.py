"""Inverse refreshes inside `fit`'s traced train step.

Every T = `inverse_every` steps (step 0 included) the step calls, once per step (cross-replica), a host function
through `tf.numpy_function` and assigns the inverses it returns:
- sync: the inverses of the factors as they are now (this step's statistics included);
- async: the inverses of the snapshot taken at the previous refresh, computed in a background thread during the
  T steps in between (waited for only if late), and the current factors are submitted next; at step 0, with no
  snapshot yet, the current factors are inverted synchronously. The snapshot is kept in variables, so a restored
  checkpoint installs exactly the inverses an uninterrupted run would have (recomputed if this process did not
  compute them).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.base import Arrays, FisherBlock
from kfac_repro.kfac.preconditioner import Preconditioner


class GraphRefresh:
    """Refresh the preconditioner's inverses from inside a traced step (see the module docstring)."""

    def __init__(self, preconditioner: Preconditioner, every: int, asynchronous: bool):
        self.preconditioner = preconditioner
        self.every = every
        self.asynchronous = asynchronous
        blocks = preconditioner.blocks
        self._factors = [(b.name, name, var) for b in blocks for name, var in b.factors.items()]
        self._inverses = [var for b in blocks for var in b.inverse.values()]
        self.snapshot = [tf.Variable(tf.zeros(var.shape), trainable=False, name=f"snapshot_{name}")
                         for _, name, var in self._factors] if asynchronous else []
        self.snapshot_taken = tf.Variable(False, trainable=False, name="snapshot_taken")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfac-inverses") if asynchronous else None
        self._submitted: tuple[list[np.ndarray], Future] | None = None

    @property
    def variables(self) -> list[tf.Variable]:
        """State a checkpoint must hold (the async snapshot)."""
        return [*self.snapshot, self.snapshot_taken] if self.asynchronous else []

    def maybe_refresh(self, step: tf.Tensor) -> None:
        """At a step that is a multiple of T, install new inverses (traced, in cross-replica context)."""
        tf.cond(tf.equal(step % self.every, 0), self._refresh, lambda: tf.constant(False))

    def _refresh(self) -> tf.Tensor:
        current = [tf.convert_to_tensor(var) for _, _, var in self._factors]
        inputs = [self.snapshot_taken, *self.snapshot, *current] if self.asynchronous else current
        values = tf.numpy_function(self._host, inputs, [var.dtype for var in self._inverses], stateful=True)
        for variable, value in zip(self._inverses, values, strict=True):
            variable.assign(tf.reshape(value, variable.shape))
        if self.asynchronous:
            for variable, value in zip(self.snapshot, current, strict=True):
                variable.assign(value)
            self.snapshot_taken.assign(True)
        return tf.constant(True)

    # ---- host side ------------------------------------------------------------------------------------------
    def _host(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if not self.asynchronous:
            return self._flatten(self.preconditioner.invert(self._as_snapshot(arrays)))
        n = len(self._factors)
        taken, snapshot, current = bool(arrays[0]), list(arrays[1 : n + 1]), list(arrays[n + 1 :])
        result = self._inverses_of(snapshot) if taken else self.preconditioner.invert(self._as_snapshot(current))
        assert self._pool is not None
        self._submitted = ([a.copy() for a in current],
                           self._pool.submit(self.preconditioner.invert, self._as_snapshot(current)))
        return self._flatten(result)

    def _inverses_of(self, snapshot: list[np.ndarray]) -> dict[str, Arrays]:
        """The background result for this snapshot, or a synchronous inversion (after a restore)."""
        if self._submitted is not None:
            submitted, future = self._submitted
            if all(np.array_equal(a, b) for a, b in zip(submitted, snapshot, strict=True)):
                return future.result()
        return self.preconditioner.invert(self._as_snapshot(snapshot))

    def _as_snapshot(self, arrays: Any) -> dict[str, dict[str, np.ndarray]]:
        snapshot: dict[str, dict[str, np.ndarray]] = {}
        for (block, name, _), array in zip(self._factors, arrays, strict=True):
            snapshot.setdefault(block, {})[name] = np.asarray(array)
        return snapshot

    def _flatten(self, inverses: dict[str, Arrays]) -> list[np.ndarray]:
        """The values `install_inverse` would assign, aligned with the inverse variables (see `_values_installed`)."""
        values: list[np.ndarray] = []
        for block in self.preconditioner.blocks:
            values += _values_installed(block, inverses[block.name])
        return values

    def close(self) -> None:
        """Stop the background thread (an inversion in flight is finished, its result dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._submitted = None


class _Recorder:
    """Stands in for an inverse variable: keeps what is assigned to it."""

    def __init__(self, variable: tf.Variable):
        self.value = np.zeros(variable.shape, np.float32)

    def assign(self, value: Any) -> None:
        self.value = np.asarray(value, np.float32)


def _values_installed(block: FisherBlock, inverse: dict) -> list[np.ndarray]:
    """The arrays `block.install_inverse(inverse)` assigns to its inverse variables, in their order, recorded by
    letting it install into stand-ins (so this follows however a block represents its inverse)."""
    real = block.inverse
    recorders = {name: _Recorder(var) for name, var in real.items()}
    block.inverse = recorders
    try:
        block.install_inverse(inverse)
    finally:
        block.inverse = real
    return [recorders[name].value for name in real]
