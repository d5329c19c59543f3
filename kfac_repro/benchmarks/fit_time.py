"""`model.fit` step time with kfac_repro.keras.KFAC (its defaults, inverse refreshes included) against Adam, on the
README's MLP, a small CNN and a small CNN with BatchNormalization, on Fashion-MNIST (or any arrays of its shape), all
in one process, the two optimizers' epochs in turns, so that the ratios are comparable. The training loss after the
timed epochs is reported too (the same steps and batches for both optimizers)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from kfac_repro.benchmarks.step_time import in_turns
from kfac_repro.data.fashion_mnist import load_fashion_mnist
from kfac_repro.keras import KFAC


@dataclass(frozen=True)
class FitTiming:
    """Milliseconds per step of `fit` (median over epochs after a warm-up epoch, and the range), and the final
    training loss."""

    model: str
    optimizer: str
    ms_per_step: float
    loss: float
    low_ms: float
    high_ms: float


def readme_mlp() -> keras.Model:
    """The README's MLP: 784 → 128 (ReLU) → 10 logits."""
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])


def small_cnn() -> keras.Model:
    """Two 5×5 conv layers (16, 32 channels, ReLU, 2×2 max-pooling) → 10 logits."""
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 5, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 5, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)])


def bn_cnn() -> keras.Model:
    """Two 3×3 conv layers (16, 32 channels), each followed by BatchNormalization, ReLU and 2×2 max-pooling → 10
    logits."""
    layers = [keras.Input((28, 28, 1))]
    for filters in (16, 32):
        layers += [keras.layers.Conv2D(filters, 3, use_bias=False), keras.layers.BatchNormalization(),
                   keras.layers.ReLU(), keras.layers.MaxPooling2D()]
    return keras.Sequential([*layers, keras.layers.Flatten(), keras.layers.Dense(10)])


MODELS: dict[str, Callable[[], keras.Model]] = {"mlp": readme_mlp, "cnn": small_cnn, "bn-cnn": bn_cnn}


def time_fit(models: list[str], batch_size: int, steps: int, epochs: int,
             progress: Callable[[str], None] = lambda _: None) -> list[FitTiming]:
    """`fit_in_turns` of each model on the first `batch_size` × `steps` Fashion-MNIST training examples."""
    (x, y), _ = load_fashion_mnist()
    count = batch_size * steps
    x = (x[:count, :, :, None] / np.float32(255.0)).astype("float32")
    return [t for name in models for t in fit_in_turns(name, x, y[:count].astype("int32"), batch_size, epochs,
                                                      progress)]


def fit_in_turns(name: str, x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int,
                 progress: Callable[[str], None] = lambda _: None) -> list[FitTiming]:
    """Model `name` (`MODELS`) compiled with K-FAC and, separately, with Adam: one warm-up epoch each (tracing,
    first inversion), then `epochs` timed epochs over (x, y), one of each optimizer in turn."""
    progress(f"{name}, K-FAC (defaults) and Adam (1e-3), epochs in turns")
    fits, losses = {}, {}
    for label, make in (("K-FAC (defaults)", KFAC), ("Adam (1e-3)", lambda _: keras.optimizers.Adam(1e-3))):
        keras.utils.set_random_seed(0)
        model = MODELS[name]()
        model.compile(optimizer=make(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])

        def epoch(model: keras.Model = model, label: str = label) -> None:
            history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
            losses[label] = float(history.history["loss"][-1])

        fits[label] = epoch
    steps = -(-len(x) // batch_size)
    times = in_turns(fits, epochs, warmup=1)
    return [FitTiming(name, label, 1000 * statistics.median(seconds) / steps, losses[label],
                      1000 * min(seconds) / steps, 1000 * max(seconds) / steps) for label, seconds in times.items()]
