"""`model.fit` step time with kfac_repro.keras.KFAC (its defaults, inverse refreshes included) against Adam, on the
README's MLP and a small CNN, on Fashion-MNIST, all in one process so that the ratios are comparable. The training
loss after the timed steps is reported too (the same steps and batches for both optimizers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from kfac_repro.data.fashion_mnist import load_fashion_mnist
from kfac_repro.keras import KFAC


@dataclass(frozen=True)
class FitTiming:
    """Milliseconds per step of `fit` (median over epochs after a warm-up epoch), and the final training loss."""

    model: str
    optimizer: str
    ms_per_step: float
    loss: float


def readme_mlp() -> keras.Model:
    """The README's MLP: 784 → 128 (ReLU) → 10 logits."""
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])


def small_cnn() -> keras.Model:
    """Two 5×5 conv layers (16, 32 channels, ReLU, 2×2 max-pooling) → 10 logits."""
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 5, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 5, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)])


MODELS: dict[str, Callable[[], keras.Model]] = {"mlp": readme_mlp, "cnn": small_cnn}


def time_fit(models: list[str], batch_size: int, steps: int, epochs: int,
             progress: Callable[[str], None] = lambda _: None) -> list[FitTiming]:
    """For each model, K-FAC then Adam: one warm-up epoch (tracing, first inversion) and `epochs` timed epochs
    of `steps` steps each on the same Fashion-MNIST examples."""
    (x, y), _ = load_fashion_mnist()
    count = batch_size * steps
    x = (x[:count, :, :, None] / np.float32(255.0)).astype("float32")
    y = y[:count].astype("int32")
    timings = []
    for name in models:
        for label, make in (("K-FAC (defaults)", KFAC), ("Adam (1e-3)", lambda _: keras.optimizers.Adam(1e-3))):
            progress(f"{name}, {label}")
            keras.utils.set_random_seed(0)
            model = MODELS[name]()
            model.compile(optimizer=make(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
            seconds = []
            for _ in range(epochs):
                start = time.perf_counter()
                history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
                seconds.append(time.perf_counter() - start)
            timings.append(FitTiming(name, label, 1000 * float(np.median(seconds)) / steps,
                                     float(history.history["loss"][-1])))
    return timings
