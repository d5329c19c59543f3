"""tf.data plumbing shared by all data sets: per-worker sharding, shuffling, per-example seeds, batching.

Sharding: `shard=(num_workers, index)` keeps every num_workers-th example starting at `index` (disjoint, covering),
and `batch_size` is then that worker's batch. With a `tf.distribute.InputContext` instead, `batch_size` is the GLOBAL
batch, divided by the number of replicas as `distribute_datasets_from_function` expects, and a training shard is
taken by position: every input pipeline reads the whole data set in the same seeded order (with the same
per-example seeds) and keeps the per-replica batches of its own replicas, so the global batches are those of one
pipeline feeding all the replicas, whatever the number of pipelines (worker processes): a run may be resumed on
another number of processes and train on the same batches. (Each pipeline shuffles the whole set's elements and
skips the others'.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Sharding:
    """This worker's slice of the data set and its batch size."""

    num_workers: int
    index: int
    batch_size: int
    replicas: int = 0  # > 0: the shard is taken by position (see the module docstring) among this many replicas

    @property
    def by_position(self) -> bool:
        """Whether the pipeline keeps its replicas' batches of the global order (else its source is sharded)."""
        return self.replicas > 0 and self.num_workers > 1

    @property
    def source(self) -> slice:
        """The examples of the data set that this pipeline's source reads (all of them when by position)."""
        return slice(None) if self.by_position else slice(self.index, None, self.num_workers)


def resolve_sharding(
    batch_size: int, shard: tuple[int, int] | None, input_context: tf.distribute.InputContext | None,
    training: bool = True,
) -> Sharding:
    """Sharding from `shard` or `input_context` (not both; by position for `training` with `input_context`);
    (1, 0) and `batch_size` when neither is given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if shard is not None and input_context is not None:
        raise ValueError("give either shard or input_context, not both")
    if input_context is not None:
        return Sharding(input_context.num_input_pipelines, input_context.input_pipeline_id,
                        input_context.get_per_replica_batch_size(batch_size),
                        input_context.num_replicas_in_sync if training else 0)
    if shard is None:
        return Sharding(1, 0, batch_size)
    num_workers, index = shard
    if num_workers < 1 or not 0 <= index < num_workers:
        raise ValueError(f"shard must be (num_workers ≥ 1, 0 ≤ index < num_workers), got {shard}")
    return Sharding(num_workers, index, batch_size)


def with_seeds(dataset: tf.data.Dataset, seed: int, sharding: Sharding) -> tf.data.Dataset:
    """Pair every element with its own int64 [2] seed for stateless random ops (different on every worker)."""
    seeds = tf.data.Dataset.random(seed=seed * 1_000_003 + (0 if sharding.by_position else sharding.index)).batch(2)
    return tf.data.Dataset.zip((dataset, seeds))


def finish(
    dataset: tf.data.Dataset,
    preprocess: Callable[[tuple, tf.Tensor | None], tuple[tf.Tensor, tf.Tensor]],
    *,
    training: bool,
    augment: bool,
    sharding: Sharding,
    seed: int,
    repeat: bool,
    shuffle_buffer: int,
) -> tf.data.Dataset:
    """Shuffle (training) → repeat → map `preprocess` in parallel → batch → prefetch.

    Elements are tuples; `preprocess(element, seed)` gets each with its own int64 [2] seed when `augment` (None
    otherwise) and returns (image float32 [H, W, C], label int32 []). Training batches are full (drop_remainder)
    so that shapes are static; evaluation keeps the last, smaller batch.
    """
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if augment:
        dataset = _own_positions(with_seeds(dataset, seed, sharding), sharding)
        dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE)
    else:
        dataset = _own_positions(dataset, sharding)
        dataset = dataset.map(lambda *element: preprocess(element, None),  # element: the tuple's parts
                              num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(sharding.batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def _own_positions(dataset: tf.data.Dataset, sharding: Sharding) -> tf.data.Dataset:
    """When sharding by position: the elements of this pipeline's replicas. Element n of the global order goes to
    replica (n // batch_size) mod replicas; pipeline i feeds replicas i·R/P … (i+1)·R/P − 1 (P pipelines)."""
    if not sharding.by_position:
        return dataset
    batch, replicas, local = sharding.batch_size, sharding.replicas, sharding.replicas // sharding.num_workers

    def own(position: tf.Tensor, element: Any) -> tf.Tensor:
        return tf.equal((position // batch) % replicas // local, sharding.index)

    return dataset.enumerate().filter(own).map(lambda position, element: element)
