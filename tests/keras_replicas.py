"""Fit a small model with kfac_repro.keras.KFAC on Fashion-MNIST (class-weighted, with KFACDiagnostics) under
MirroredStrategy with N local CPU replicas (or the default strategy for N = 1) and save its weights (before and
after), losses and diagnostics: `python tests/keras_replicas.py N OUT.npz [--inversion async]
[--policy mixed_float16] [--accumulate K] [--inversion-device accelerator]`; also where each inverse was computed,
and the inverses installed last. Run as its own process (`launch`), because logical CPU devices must be set before
TensorFlow starts."""

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def launch(replicas: int, out: Path, *options: str, **popen: Any) -> subprocess.Popen:
    """Start the fit in its own process, importing this checkout's kfac_repro (not an installed copy)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, __file__, str(replicas), str(out), *options], env=env, **popen)


def main(replicas: int, out: str, inversion: str, policy: str, accumulate: int | None, device: str) -> None:
    import tensorflow as tf

    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras

    from kfac_repro.data.fashion_mnist import load_fashion_mnist
    from kfac_repro.keras import KFAC, KFACDiagnostics
    from kfac_repro.kfac.inversion import divided

    devices: list[str] = []  # the device each inverse was computed on (None: the host), one entry per computation
    compute_on = divided._on

    def recorded(device: str | None, recipe: Any) -> Any:
        devices.append(str(device))
        return compute_on(device, recipe)

    divided._on = recorded

    keras.mixed_precision.set_global_policy(policy)
    (x, y), _ = load_fashion_mnist()
    x, y = (x[:256, :, :, None] / np.float32(255.0)).astype("float32"), y[:256].astype("int32")
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)]) if replicas > 1 \
        else tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == replicas
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(10)])
        optimizer = KFAC(model, inverse_every=3, inversion=inversion, gradient_accumulation_steps=accumulate,
                         inversion_device=device)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    initial = {f"initial:{v.path}": np.array(v) for v in model.weights}
    history = model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0, callbacks=[KFACDiagnostics()],
                        class_weight={label: 0.5 + 0.1 * label for label in range(10)})
    logged = {key: np.array(values) for key, values in history.history.items() if key.startswith("kfac_")
              and "seconds" not in key}
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    inversion = optimizer._binding.refresh.engine.inversion
    inverses = {f"inverse:{b.name}/{n}": np.array(v) for b in optimizer.preconditioner.blocks
                for n, v in b.inverse.items()}
    np.savez(out, loss=np.array(history.history["loss"]), updates=np.array(int(optimizer.iterations.numpy())),
             **logged, **initial, **inverses, **{v.path: np.array(v) for v in model.weights},
             devices=np.array(devices), owners=np.array(inversion.owners),
             replica_devices=np.array([str(inversion.local_devices[r]) for r in sorted(inversion.local_devices)]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("replicas", type=int)
    parser.add_argument("out")
    parser.add_argument("--inversion", default="sync")
    parser.add_argument("--policy", default="float32")
    parser.add_argument("--accumulate", type=int)
    parser.add_argument("--inversion-device", default="host")
    args = parser.parse_args()
    main(args.replicas, args.out, args.inversion, args.policy, args.accumulate, args.inversion_device)
