"""Running an optimizer step on every replica of the current tf.distribute strategy (the default strategy
included), with all-reduced gradients and statistics and one cross-replica assignment of the new state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

MEAN = tf.distribute.ReduceOp.MEAN


def all_reduce_mean(values: list[tf.Tensor]) -> list[tf.Tensor]:
    """Mean over replicas (identity on one replica); with equal local batches this is the global-batch mean."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1 or not values:
        return values
    return list(context.all_reduce(MEAN, values))


def every_replica(mean_flag: Any, replicas: int) -> Any:
    """Whether every replica's flag (0.0 or 1.0) is 1.0, from their mean over `replicas` (a float or a tensor):
    the mean is then 1, else at most 1 − 1/replicas (tf.distribute reduces by SUM and MEAN only, not MIN)."""
    return mean_flag > 1.0 - 0.5 / replicas


def backing_variable(variable: tf.Variable) -> tf.Variable:
    """The tf.Variable behind a Keras variable (a MirroredVariable under a strategy)."""
    if isinstance(variable, tf.Variable):
        return variable
    return variable.value


def assign_all(variables: Sequence[tf.Variable], values: Sequence[tf.Tensor]) -> None:
    """Assign identical per-replica `values` to `variables` on every replica, from the replica context."""
    targets = [backing_variable(v) for v in variables]

    def assign(strategy: tf.distribute.Strategy, new_values: Sequence[tf.Tensor]) -> None:
        for target, value in zip(targets, new_values, strict=True):
            strategy.extended.update(target, lambda var, val: var.assign(val), args=(value,))

    tf.distribute.get_replica_context().merge_call(assign, args=(list(values),))


def global_example_offset(local_batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(index of this replica's first example in the global batch, global batch size), for a contiguous split."""
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    replica = tf.constant(0) if context is None else context.replica_id_in_sync_group
    local = tf.cast(local_batch, tf.int32)
    return tf.cast(replica, tf.int32) * local, local * replicas


def reduce_metrics(strategy: tf.distribute.Strategy, per_replica: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Collapse per-replica metrics (already identical after all-reduce) to plain tensors."""
    return {name: strategy.reduce(MEAN, value, axis=None) for name, value in per_replica.items()}
