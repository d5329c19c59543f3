"""Fit a small model with kfac_repro.keras.KFAC on Fashion-MNIST (class-weighted, with KFACDiagnostics) under
MirroredStrategy with N local CPU replicas (or the default strategy for N = 1) and save its weights, losses and
diagnostics: `python tests/keras_replicas.py N OUT.npz [sync|async]`.
Run as its own process, because logical CPU devices must be set before TensorFlow starts."""

import sys

import numpy as np
import tensorflow as tf


def main(replicas: int, out: str, inversion: str) -> None:
    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras

    from kfac_repro.data.fashion_mnist import load_fashion_mnist
    from kfac_repro.keras import KFAC, KFACDiagnostics

    (x, y), _ = load_fashion_mnist()
    x, y = (x[:256, :, :, None] / np.float32(255.0)).astype("float32"), y[:256].astype("int32")
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)]) if replicas > 1 \
        else tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == replicas
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile(optimizer=KFAC(model, inverse_every=3, inversion=inversion),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0, callbacks=[KFACDiagnostics()],
                        class_weight={label: 0.5 + 0.1 * label for label in range(10)})
    logged = {key: np.array(values) for key, values in history.history.items() if key.startswith(("loss", "kfac_"))
              and "seconds" not in key}
    np.savez(out, **logged, **{v.path: np.array(v) for v in model.weights})


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "sync")
