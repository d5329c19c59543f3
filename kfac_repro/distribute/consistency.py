"""A check that data-parallel training equals single-process training on the same global batches: a small
convnet is trained for a few steps on fixed synthetic batches, each replica taking a contiguous share, and the
final weights are written to an .npz file for comparison (run as `python -m kfac_repro.distribute.consistency`).
K-FAC also writes its refreshes (snapshot and hand-over steps), the inverses ("parts") this process computed, and
the inverses installed from fixed random factors after training (divided inversion must equal single-worker
inversion)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.distribute.strategy import make_strategy
from kfac_repro.kfac import KFAC, KFACConfig, SGDConfig, optimizer_for


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
    optimizer: str, steps: int, global_batch: int, local_replicas: int = 1, inversion: str = "sync",
    async_lag: int | None = None, kl_clip_batch: int | None = None,
) -> tuple[dict, list[float], dict]:
    """Final weights (by variable path), per-step losses and (K-FAC, EKFAC) the inversion record of the module
    docstring, under the strategy this process is configured for."""
    strategy = make_strategy(local_replicas)
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(f"global batch {global_batch} is not divisible by {replicas} replicas")
    local = global_batch // replicas
    with strategy.scope():
        model = _model()
        mode: Literal["sync", "async"] = "async" if inversion == "async" else "sync"
        trainer = optimizer_for(model, KFACConfig(damping=0.1, inverse_every=2, inversion=mode, async_lag=async_lag,
                                                  kl_clip_batch=kl_clip_batch,
                                                  eigenvalue_correction=optimizer == "ekfac")
                                if optimizer in ("kfac", "ekfac") else SGDConfig(learning_rate=0.05))
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
    weights = {v.path: v.numpy() for v in model.trainable_variables}
    if not isinstance(trainer, KFAC):
        return weights, losses, {}
    trainer.close()
    return weights, losses, _inversion_record(trainer)


def _inversion_record(trainer: KFAC) -> dict[str, np.ndarray]:
    """Refreshes, this process's parts, and the inverses installed from seeded random PSD factors."""
    history = trainer.refresh.history
    record = {"refresh:snapshot": np.array([r.snapshot_step for r in history], np.int64),
              "refresh:installed": np.array([r.installed_at for r in history], np.int64),
              "owned": np.array(trainer.inversion.local_parts(), dtype=str)}
    rng = np.random.default_rng(2)
    for block in trainer.blocks:
        for variable in block.factors.values():
            size = variable.shape[0]
            root = rng.normal(size=(size, 2 * size)).astype(np.float32)
            variable.assign(root @ root.T / (2 * size) if len(variable.shape) == 2 else np.abs(root[:, 0]))
    trainer.refresh_inverses()
    for block in trainer.blocks:
        record.update({f"inverse:{block.name}/{name}": v.numpy() for name, v in block.inverse.items()})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--optimizer", choices=["kfac", "ekfac", "sgd"], required=True,
                        help="ekfac: K-FAC with eigenvalue_correction")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--local-replicas", type=int, default=1)
    parser.add_argument("--inversion", choices=["sync", "async"], default="sync", help="K-FAC's inverse refresh")
    parser.add_argument("--async-lag", type=int, default=None, help="async: pin the hand-over to this lag")
    parser.add_argument("--kl-clip-batch", type=int, default=None, help="K-FAC's B₀: the KL bound c·B/B₀")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    weights, losses, record = train(args.optimizer, args.steps, args.global_batch, args.local_replicas,
                                    args.inversion, args.async_lag, args.kl_clip_batch)
    np.savez(args.out, losses=np.array(losses), **{f"w:{k}": v for k, v in weights.items()}, **record)


if __name__ == "__main__":
    main()
