"""A check that data-parallel training equals single-process training on the same global batches: a small
convnet is trained for a few steps on fixed synthetic batches, each replica taking a contiguous share, and the
final weights are written to an .npz file for comparison (run as `python -m kfac_repro.distribute.consistency`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.distribute.strategy import make_strategy
from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="tanh", name="hidden"),
        keras.layers.Dense(4, name="logits"),
    ])


def train(
    optimizer: str, steps: int, global_batch: int, local_replicas: int = 1, async_lag: int | None = None
) -> tuple[dict, list[float]]:
    """Final weights (by variable path) and per-step losses under the strategy this process is configured for."""
    strategy = make_strategy(local_replicas)
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(f"global batch {global_batch} is not divisible by {replicas} replicas")
    local = global_batch // replicas
    with strategy.scope():
        model = _model()
        inversion: Literal["sync", "async"] = "sync" if async_lag is None else "async"
        trainer = (KFAC(model, KFACConfig(damping=0.1, inverse_every=2, inversion=inversion, async_lag=async_lag))
                   if optimizer == "kfac" else SGD(model, SGDConfig(learning_rate=0.05)))
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(steps):
        x = rng.normal(size=(global_batch, 8, 8, 3)).astype(np.float32)
        y = rng.integers(0, 4, size=global_batch).astype(np.int32)

        def share(context: tf.distribute.InputContext, data: np.ndarray) -> tf.Tensor:
            start = context.replica_id_in_sync_group * local
            return tf.constant(data[start : start + local])

        xs = strategy.experimental_distribute_values_from_function(lambda c, d=x: share(c, d))
        ys = strategy.experimental_distribute_values_from_function(lambda c, d=y: share(c, d))
        losses.append(trainer.train_step(xs, ys)["loss"])
    if isinstance(trainer, KFAC):
        trainer.close()
    return {v.path: v.numpy() for v in model.trainable_variables}, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--optimizer", choices=["kfac", "sgd"], required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--local-replicas", type=int, default=1)
    parser.add_argument("--async-lag", type=int, default=None, help="K-FAC with asynchronous inversion, this lag")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    weights, losses = train(args.optimizer, args.steps, args.global_batch, args.local_replicas, args.async_lag)
    np.savez(args.out, losses=np.array(losses), **{f"w:{k}": v for k, v in weights.items()})


if __name__ == "__main__":
    main()
