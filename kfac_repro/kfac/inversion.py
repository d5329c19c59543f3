"""Computing the inverses of every Fisher block, divided among the replicas, and installing them on all of them.

Block b is inverted by replica `owners[b]` (greedy longest-first on Σ d³ of its factors, `inversion_assignment`);
a process computes the blocks of its own replicas only. Installing shares them through the strategy's
collectives: each process first writes its blocks into its copies of the inverse variables, then every replica
contributes its own blocks and zeros elsewhere to one all-reduced sum, which every replica assigns. x + 0 = x
exactly, so the result equals single-worker inversion bit for bit. A block's inverse is opaque here: whatever
`compute_inverse` returns and `install_inverse` writes into `block.inverse`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks import FisherBlock
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.inversion_assignment import assign_blocks, block_cost
from kfac_repro.kfac.inversion_resources import limit_lapack_threads, on_device
from kfac_repro.kfac.replicas import assign_all

FactorSource = Mapping[str, Mapping[str, tf.Variable]]


class InversionSharingError(RuntimeError):
    """The collective that shares the inverses failed: a worker holding assigned blocks is gone."""


@dataclass(frozen=True)
class Computed:
    """This process's share of one refresh: the inverses of its blocks, from the factors of `snapshot_step`."""

    snapshot_step: int
    inverses: dict[str, object]
    seconds: float


class BlockInversion:
    """The blocks' assignment to replicas, their computation (`compute`, any thread) and sharing (`install`)."""

    def __init__(self, blocks: list[FisherBlock], config: KFACConfig, strategy: tf.distribute.Strategy):
        self.blocks = blocks
        self.damping = config.damping + config.weight_decay
        self.dtype = config.inverse_dtype
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        self.costs = [block_cost(b.factor_shapes) for b in blocks]
        self.owners = assign_blocks(self.costs, self.replicas)
        local = _local_replica_ids(strategy)
        devices = _worker_devices(strategy)
        on_accelerator = config.inversion_device == "accelerator"
        self.local_devices = {r: (d if on_accelerator else None) for r, d in zip(local, devices, strict=True)}
        if config.inversion_threads is not None:
            limit_lapack_threads(config.inversion_threads)
        self._shared = [(v, owner) for block, owner in zip(blocks, self.owners, strict=True)
                        for v in block.inverse.values() if v.shape.num_elements()]
        self._share = tf.function(self._share_replica, autograph=False) if self.replicas > 1 else None

    def local_blocks(self) -> list[str]:
        """Names of the blocks this process inverts."""
        return [b.name for b, o in zip(self.blocks, self.owners, strict=True) if o in self.local_devices]

    def compute(self, factors: FactorSource, snapshot_step: int) -> Computed:
        """`compute_inverse` of this process's blocks from `factors` (block name → factor variables)."""
        start = time.perf_counter()
        inverses: dict[str, object] = {}
        for block, owner in zip(self.blocks, self.owners, strict=True):
            if owner in self.local_devices:
                arrays = {name: np.asarray(var.numpy()) for name, var in factors[block.name].items()}
                with on_device(self.local_devices[owner]):
                    inverses[block.name] = block.compute_inverse(arrays, self.damping, self.dtype)
        return Computed(snapshot_step, inverses, time.perf_counter() - start)

    def install(self, computed: Computed) -> None:
        """Install every block's inverse on every replica (a collective: every worker calls it at the same step)."""
        for block in self.blocks:
            if block.name in computed.inverses:
                block.install_inverse(computed.inverses[block.name])  # type: ignore[arg-type]
        if self._share is None:
            return
        try:
            self.strategy.run(self._share)
        except tf.errors.OpError as error:
            raise InversionSharingError(
                f"sharing the inverses of the factors of step {computed.snapshot_step} failed: a worker holding "
                f"assigned blocks is gone or unreachable ({type(error).__name__}: {error.message})") from error

    def _share_replica(self) -> None:
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group
        mine = [tf.where(tf.equal(replica, owner), var, tf.zeros_like(var)) for var, owner in self._shared]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, mine)
        assign_all([var for var, _ in self._shared], summed)


def _local_replica_ids(strategy: tf.distribute.Strategy) -> list[int]:
    """The replica ids (in sync group) that live in this process, in the order of worker_devices."""
    if strategy.num_replicas_in_sync == 1:
        return [0]
    ids = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(context.replica_id_in_sync_group))
    return [int(value.numpy()) for value in strategy.experimental_local_results(ids)]


def _worker_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """This process's replica devices (the default strategy: the first GPU, else the CPU)."""
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return ["/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"]
    return list(strategy.extended.worker_devices)
