"""Computing the damped inverses of every Fisher block, divided among the replicas, and installing them on all.

The unit of work is one inverse variable of one block ("part", e.g. fc6's "A_inverse"): part p is computed by
replica `owners[p]` (greedy longest-first on its cost, `FisherBlock.inverse_costs`, `inversion.assignment`); a
process computes the parts of its own replicas only. Installing shares them through the strategy's collectives: each
process first writes its parts into its copies of the inverse variables, then every replica contributes its own
parts and zeros elsewhere to one all-reduced sum, which every replica assigns. x + 0 = x exactly, so the result
equals single-worker inversion bit for bit. An inverse is opaque here: whatever `compute_inverse` returns and
`install_inverse` writes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.base import Arrays, FisherBlock
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.inversion.assignment import assign_work
from kfac_repro.kfac.inversion.resources import host_threads, run_parts
from kfac_repro.kfac.linalg.device import on_device
from kfac_repro.kfac.replicas import assign_all

FactorSource = Mapping[str, Mapping[str, tf.Variable | np.ndarray]]  # block name → factor name → its values


class InversionSharingError(RuntimeError):
    """The collective that shares the inverses failed: a worker holding assigned inverses is gone."""


@dataclass(frozen=True)
class Computed:
    """This process's share of one refresh: block name → its inverses computed here, from the factors of
    `snapshot_step`."""

    snapshot_step: int
    inverses: dict[str, Arrays]
    seconds: float


class BlockInversion:
    """The parts' assignment to replicas, their computation (`compute`, any thread) and sharing (`install`)."""

    def __init__(self, blocks: list[FisherBlock], config: KFACConfig, strategy: tf.distribute.Strategy,
                 divided: bool = True):
        """`divided` False: this process computes every part, on its first replica's device (`fit` across
        processes, `keras.refresh`)."""
        self.blocks = blocks
        self.damping = config.damping + config.weight_decay
        self.dtype = config.inverse_dtype
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync if divided else 1
        self.parts = [(block, name) for block in blocks for name in block.inverse]
        self.costs = [block.inverse_costs()[name] for block, name in self.parts]
        self._cost = {(block.name, name): cost for (block, name), cost in zip(self.parts, self.costs, strict=True)}
        self.owners = assign_work(self.costs, self.replicas)
        local = _local_replica_ids(strategy) if divided else [0]
        devices = _worker_devices(strategy)[: len(local)]
        on_accelerator = config.inversion_device == "accelerator"
        self.local_devices = {r: (d if on_accelerator else None) for r, d in zip(local, devices, strict=True)}
        self._local: dict[str, dict[str, str | None]] = {}  # block name → {part: device} computed here
        for (block, name), owner in zip(self.parts, self.owners, strict=True):
            if owner in self.local_devices:
                self._local.setdefault(block.name, {})[name] = self.local_devices[owner]
        self.threads = host_threads(config.inversion_threads)
        variables = [block.inverse[name] for block, name in self.parts]
        self._shared = [(v, owner) for v, owner in zip(variables, self.owners, strict=True) if v.shape.num_elements()]
        self._share = tf.function(self._share_replica, autograph=False) if self.replicas > 1 else None

    def local_parts(self) -> list[str]:
        """The parts this process computes, as "<block>/<inverse>"."""
        return [f"{block}/{part}" for block, parts in self._local.items() for part in parts]

    def local_cost(self) -> float:
        """The summed cost of this process's parts."""
        return sum(c for c, owner in zip(self.costs, self.owners, strict=True) if owner in self.local_devices)

    def compute(self, factors: FactorSource, snapshot_step: int, damping: float | None = None) -> Computed:
        """`compute_inverse` of this process's parts from `factors` (block name → factor variables), spread over
        `threads` cores (`run_parts`), with `damping` (by default `self.damping`, λ + wd; an adapted λ changes it
        between refreshes)."""
        damping = self.damping if damping is None else damping
        start = time.perf_counter()
        keys: list[tuple[str, str]] = []
        parts: list[tuple[float, Callable[[], np.ndarray]]] = []
        for block in self.blocks:
            mine = self._local.get(block.name)
            if not mine:
                continue
            arrays = {name: host_array(value) for name, value in factors[block.name].items()}
            recipes = block.inverse_recipes(arrays, damping, self.dtype)  # the damping split once per block
            for part, device in mine.items():
                keys.append((block.name, part))
                parts.append((self._cost[block.name, part], functools.partial(_on, device, recipes[part])))
        inverses: dict[str, Arrays] = {}
        for (block_name, part), inverse in zip(keys, run_parts(parts, self.threads), strict=True):
            inverses.setdefault(block_name, {})[part] = inverse
        return Computed(snapshot_step, inverses, time.perf_counter() - start)

    def install(self, computed: Computed) -> None:
        """Install every block's inverse on every replica (a collective: every worker calls it at the same step)."""
        for block in self.blocks:
            if block.name in computed.inverses:
                block.install_inverse(computed.inverses[block.name])
        if self._share is None:
            return
        try:
            self.strategy.run(self._share)
        except tf.errors.OpError as error:
            raise InversionSharingError(
                f"sharing the inverses of the factors of step {computed.snapshot_step} failed: a worker holding "
                f"assigned inverses is gone or unreachable ({type(error).__name__}: {error.message})") from error

    def _share_replica(self) -> None:
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group
        mine = [tf.where(tf.equal(replica, owner), var, tf.zeros_like(var)) for var, owner in self._shared]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, mine)
        assign_all([var for var, _ in self._shared], summed)


def host_array(value: tf.Variable | np.ndarray) -> np.ndarray:
    """A factor's values on the host (a variable read now)."""
    return value if isinstance(value, np.ndarray) else np.asarray(value.numpy())


def _on(device: str | None, recipe: Callable[[], np.ndarray]) -> np.ndarray:
    """`recipe()` with its factorisation on `device` (None: the host), in the calling thread."""
    with on_device(device):
        return recipe()


def _local_replica_ids(strategy: tf.distribute.Strategy) -> list[int]:
    """The replica ids (in sync group) that live in this process, in the order of worker_devices (all of them in
    one process: no eager call, so that a strategy may be asked inside a traced step)."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1 or len(strategy.extended.worker_devices) == replicas:
        return list(range(replicas))
    ids = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(context.replica_id_in_sync_group))
    return [int(value.numpy()) for value in strategy.experimental_local_results(ids)]


def _worker_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """This process's replica devices (the default strategy: the first GPU, else the CPU)."""
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return ["/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"]
    return list(strategy.extended.worker_devices)
