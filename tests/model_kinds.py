"""Tiny models of the kinds Keras users build, each with a fixed synthetic batch, and a K-FAC run over a few steps.

`python -m tests.model_kinds KIND` runs one kind and prints its summary and a JSON line of the losses; the tests
run the crash-prone kinds this way, in a subprocess, so that a crash inside TensorFlow fails one test.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig

BATCH, STEPS, CLASSES, LENGTH, VOCABULARY = 32, 8, 3, 8, 20


def tokens_batch() -> tuple[np.ndarray, np.ndarray]:
    """Token sequences labelled by which of three token ranges is most frequent."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY, size=(BATCH, LENGTH)).astype(np.int32)
    counts = np.stack([((x >= lo) & (x < lo + 7)).sum(axis=1) for lo in (0, 7, 14)], axis=1)
    return x, counts.argmax(axis=1).astype(np.int32)


def series_batch() -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 4 features labelled by the sign pattern of their sums."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, LENGTH, 4)).astype(np.float32)
    return x, (np.sum(x[:, :, :2], axis=(1, 2)) > 0).astype(np.int32) + (x[:, -1, 2] > 0).astype(np.int32)


def images_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(BATCH, 8, 8, 3)).astype(np.float32)
    return x, rng.integers(0, CLASSES, size=BATCH).astype(np.int32)


def transformer() -> keras.Model:
    """An encoder block: MultiHeadAttention, EinsumDense feed-forward with an activation, LayerNormalization."""
    inputs = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, 16)(inputs)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = keras.layers.LayerNormalization()(h + attended)
    ff = keras.layers.EinsumDense("abc,cd->abd", (LENGTH, 32), bias_axes="d", activation="relu")(h)
    ff = keras.layers.EinsumDense("abd,dc->abc", (LENGTH, 16), bias_axes="c")(ff)
    h = keras.layers.LayerNormalization()(h + ff)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling1D()(h)))


def recurrent(layer: type) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        return keras.Sequential([keras.Input((LENGTH, 4)), layer(8), keras.layers.Dense(CLASSES)])

    return build


def text_cnn() -> keras.Model:
    return keras.Sequential([
        keras.Input((LENGTH,), dtype="int32"), keras.layers.Embedding(VOCABULARY, 8),
        keras.layers.Conv1D(8, 3, activation="relu"), keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(CLASSES),
    ])


def separable_net() -> keras.Model:
    return keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu"),
        keras.layers.SeparableConv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(CLASSES),
    ])


def cnn() -> keras.Model:
    return keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(CLASSES),
    ])


KINDS: dict[str, tuple[Callable[[], keras.Model], Callable[[], tuple[np.ndarray, np.ndarray]], str]] = {
    "transformer": (transformer, tokens_batch, "float32"),
    "lstm": (recurrent(keras.layers.LSTM), series_batch, "float32"),
    "gru": (recurrent(keras.layers.GRU), series_batch, "float32"),
    "text_cnn": (text_cnn, tokens_batch, "float32"),
    "separable": (separable_net, images_batch, "float32"),
    "cnn_mixed_float16": (cnn, images_batch, "mixed_float16"),
    "cnn_mixed_bfloat16": (cnn, images_batch, "mixed_bfloat16"),
}


def train(kind: str, steps: int = STEPS) -> tuple[KFAC, list[float]]:
    """K-FAC on the kind's fixed batch; the training losses of every step (the global policy is restored)."""
    build, data, policy = KINDS[kind]
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = build()
        x, y = (tf.constant(v) for v in data())
        # kl_bound "increment": these settings were chosen with it and fit each kind's batch within STEPS updates
        # (the default "update" takes a tenth of the first steps); the bound itself is tested in test_update_options
        optimizer = KFAC(model, KFACConfig(damping=0.1, inverse_every=2, kl_clip=0.01, max_step_size=0.5,
                                           kl_bound="increment"))
        losses = [optimizer.train_step(x, y)["loss"] for _ in range(steps)]
        optimizer.close()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return optimizer, losses


if __name__ == "__main__":
    trained, run_losses = train(sys.argv[1])
    print(trained.summary())
    print(json.dumps({"kind": sys.argv[1], "losses": run_losses}))
