"""The bridge from `fit`'s traced train step to the refresh engine that the host loop uses
(`kfac_repro.kfac.inversion.refresh`): the same policy, the same inversion, the same decisions at the same steps.

At each step's boundary (traced, in cross-replica context), host functions (`tf.numpy_function`) run the engine:
on the first step (no inverses yet) `invert_now`; then `plan` (the step, the previous step's all-reduced readiness
flag, the checkpointed snapshot step), and, as planned, `start` (the current factors passed in; asynchronous
policies also copy them into the snapshot variables), `take` (its inverses assigned to the inverse variables) and
`start` again. Only these host calls copy factors or inverses. The inversion is divided among the replicas as in
the host loop (`BlockInversion`: each inverse assigned to one replica, computed on its device with
`inversion_device: accelerator`, spread over the host's cores, `inversion_threads`); in one process (the default
strategy, MirroredStrategy) every replica is local, so this process computes all the shares and installs them
without a collective. Across processes each would compute only its own and the shares would have to be
all-reduced inside the traced step; Keras 3.15.1's `fit` does not run across processes at all (keras-team/keras#20585,
checked by tests/test_distributed.py), so that is not built, and a process whose strategy has replicas elsewhere
inverts every block (`divided=False`). A restored
checkpoint whose snapshot this process is not inverting is inverted when taken, so a resumed `fit` installs exactly
the inverses of the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.base import Arrays, FisherBlock
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.inversion.divided import BlockInversion, Computed
from kfac_repro.kfac.inversion.policy import policy_for
from kfac_repro.kfac.inversion.refresh import InverseRefresh
from kfac_repro.kfac.preconditioner import Preconditioner


class GraphRefresh:
    """Runs the refresh engine from inside a traced step (see the module docstring)."""

    def __init__(self, preconditioner: Preconditioner, config: KFACConfig):
        self.blocks = preconditioner.blocks
        strategy = tf.distribute.get_strategy()
        inversion = BlockInversion(self.blocks, config, strategy, divided=_one_process(strategy))
        self.engine = InverseRefresh(inversion, policy_for(config))
        self.background = self.engine.policy.background
        self._factors = [(b.name, name, var) for b in self.blocks for name, var in b.factors.items()]
        self._snapshot = [self.engine.snapshot[block][name] for block, name, _ in self._factors] \
            if self.background else []
        self._inverses = [var for b in self.blocks for var in b.inverse.values()]
        self.inverse_source = tf.Variable(-1, dtype=tf.int64, trainable=False, name="inverse_source")
        self.all_ready = tf.Variable(False, trainable=False, name="inverses_all_ready")

    @property
    def variables(self) -> list[tf.Variable]:
        """State a checkpoint must hold: the step of the factors in use, the asynchronous snapshot and its step."""
        extra = [*self._snapshot, self.engine.snapshot_step] if self.background else []
        return [self.inverse_source, *extra]

    @property
    def uninitialised(self) -> tf.Tensor:
        """No inverses installed yet: the first step inverts its own statistics first (as the host loop)."""
        return self.inverse_source < 0

    def boundary(self, step: tf.Tensor, first: tf.Tensor) -> None:
        """The boundary before `step` (traced, cross-replica): the first inversion if `first`, then the plan; each
        stage waits for the one before (host calls are not ordered otherwise)."""
        done = tf.cond(first, lambda: self._install(step, self._host_call(self._invert_now, step, self._current())),
                       _no)
        with tf.control_dependencies([done]):
            planned = tf.numpy_function(self._plan, [step, self.all_ready, self.engine.snapshot_step],
                                        [tf.bool, tf.bool, tf.bool], stateful=True)
        start, take, again = (tf.reshape(flag, []) for flag in planned)
        done = tf.cond(start, lambda: self._start(step), _no)
        with tf.control_dependencies([done]):
            done = tf.cond(take, lambda: self._install(step, self._host_call(self._take, step, self._snapshot)), _no)
        with tf.control_dependencies([done]):
            tf.cond(again, lambda: self._start(step), _no)

    def local_ready(self) -> tf.Tensor:
        """1.0 if this process's pending inversion is finished (free-running policies listen), as float32."""
        return tf.reshape(tf.numpy_function(lambda: np.float32(self.engine.locally_ready()), [], tf.float32,
                                            stateful=True), [])

    def close(self) -> None:
        """Stop the background thread (an inversion in flight is finished, its result dropped)."""
        self.engine.close()

    # ---- traced pieces ---------------------------------------------------------------------------------------
    def _current(self) -> list[tf.Tensor]:
        return [tf.convert_to_tensor(var) for _, _, var in self._factors]

    def _start(self, step: tf.Tensor) -> tf.Tensor:
        current = self._current()
        if self.background:
            for variable, value in zip(self._snapshot, current, strict=True):
                variable.assign(value)
            self.engine.snapshot_step.assign(step)
        started = tf.numpy_function(self._host_start, [step, *current], tf.bool, stateful=True)
        return tf.reshape(started, [])

    def _host_call(self, function: Any, step: tf.Tensor, factors: list) -> list[tf.Tensor]:
        inputs = [step, *(tf.convert_to_tensor(f) for f in factors)]
        return tf.numpy_function(function, inputs, [tf.int64, *(v.dtype for v in self._inverses)], stateful=True)

    def _install(self, step: tf.Tensor, values: list[tf.Tensor]) -> tf.Tensor:
        source, inverses = values[0], values[1:]
        for variable, value in zip(self._inverses, inverses, strict=True):
            variable.assign(tf.reshape(value, variable.shape))
        self.inverse_source.assign(tf.reshape(source, []))
        return tf.constant(True)

    # ---- host side ------------------------------------------------------------------------------------------
    def _plan(self, step: np.ndarray, all_ready: np.ndarray, snapshot_step: np.ndarray) -> list[np.ndarray]:
        self.engine.adopt(int(snapshot_step))
        return [np.array(flag) for flag in self.engine.plan(int(step), bool(all_ready))]

    def _host_start(self, step: np.ndarray, *factors: np.ndarray) -> np.ndarray:
        self.engine.start(int(step), self._as_snapshot(factors))
        return np.array(True)

    def _invert_now(self, step: np.ndarray, *factors: np.ndarray) -> list[np.ndarray]:
        return self._flatten(self.engine.invert_now(int(step), self._as_snapshot(factors)))

    def _take(self, step: np.ndarray, *snapshot: np.ndarray) -> list[np.ndarray]:
        return self._flatten(self.engine.take(int(step), self._as_snapshot(snapshot) if snapshot else None))

    def _as_snapshot(self, arrays: Any) -> dict[str, dict[str, np.ndarray]]:
        snapshot: dict[str, dict[str, np.ndarray]] = {}
        for (block, name, _), array in zip(self._factors, arrays, strict=True):
            snapshot.setdefault(block, {})[name] = np.array(array)  # a copy: the input's buffer is TensorFlow's
        return snapshot

    def _flatten(self, computed: Computed) -> list[np.ndarray]:
        """The snapshot step, then the values `install_inverse` would assign, aligned with the inverse variables."""
        values = [np.array(computed.snapshot_step, np.int64)]
        for block in self.blocks:
            values += _values_installed(block, computed.inverses[block.name])
        return values


def _one_process(strategy: tf.distribute.Strategy) -> bool:
    """Every replica of `strategy` lives in this process."""
    replicas = strategy.num_replicas_in_sync
    return replicas == 1 or len(strategy.extended.worker_devices) == replicas


def _no() -> tf.Tensor:
    return tf.constant(False)


class _Recorder:
    """Stands in for an inverse variable: keeps what is assigned to it."""

    def __init__(self, variable: tf.Variable):
        self.value = np.zeros(variable.shape, variable.dtype.as_numpy_dtype)

    def assign(self, value: Any) -> None:
        self.value = np.asarray(value, self.value.dtype)


def _values_installed(block: FisherBlock, inverse: Arrays) -> list[np.ndarray]:
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
