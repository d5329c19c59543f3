"""`model.fit` step time with kfac_repro.keras.KFAC (its defaults, their amortisation and inverse refreshes
included, and any other settings asked for) against Adam, at one or more batch sizes, on the README's MLP, a small
CNN and the Keras suite's CNN with BatchNormalization (`keras_suite_models`: its task (b)), on Fashion-MNIST (or any
arrays of its shape), all in one process, every optimizer's and batch size's epochs in turns, so that the ratios are
comparable. The training loss after the timed epochs is reported too (the same steps and batches for both
optimizers)."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kfac_repro.benchmarks.keras_suite_models import bn_cnn, readme_mlp
from kfac_repro.benchmarks.step_time import in_turns
from kfac_repro.data.fashion_mnist import load_fashion_mnist
from kfac_repro.keras import KFAC

KFAC_LABEL, ADAM_LABEL = "K-FAC (defaults)", "Adam (1e-3)"
DEFAULTS: Mapping[str, Any] = {}  # the settings of K-FAC's default arm


def kfac_label(settings: Mapping[str, Any]) -> str:
    """'K-FAC (defaults)', or 'K-FAC stats_every=5 inverse_every=20' for an arm with settings."""
    return " ".join(["K-FAC", *(f"{key}={value}" for key, value in settings.items())]) if settings else KFAC_LABEL


@dataclass(frozen=True)
class FitTiming:
    """Milliseconds per step of `fit` at a batch size (median over epochs after a warm-up epoch, and the range),
    and the final training loss."""

    model: str
    optimizer: str
    batch_size: int
    ms_per_step: float
    loss: float
    low_ms: float
    high_ms: float


def small_cnn() -> keras.Model:
    """Two 5×5 conv layers (16, 32 channels, ReLU, 2×2 max-pooling) → 10 logits."""
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 5, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 5, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)])


MODELS: dict[str, Callable[[], keras.Model]] = {"mlp": readme_mlp, "cnn": small_cnn, "bn-cnn": bn_cnn}


def _kfac(model: keras.Model, settings: Mapping[str, Any]) -> keras.optimizers.Optimizer:
    return KFAC(model, **settings)


def time_fit(models: list[str], batch_sizes: Sequence[int], steps: int, epochs: int,
             progress: Callable[[str], None] = lambda _: None,
             variants: Sequence[Mapping[str, Any]] = (DEFAULTS,)) -> list[FitTiming]:
    """`fit_in_turns` of each model on the first `batch_size` × `steps` Fashion-MNIST training examples."""
    (x, y), _ = load_fashion_mnist()
    count = max(batch_sizes) * steps
    x = (x[:count, :, :, None] / np.float32(255.0)).astype("float32")
    return [t for name in models for t in fit_in_turns(name, x, y[:count].astype("int32"), batch_sizes, steps,
                                                      epochs, progress, variants)]


def fit_in_turns(name: str, x: np.ndarray, y: np.ndarray, batch_sizes: Sequence[int], steps: int, epochs: int,
                 progress: Callable[[str], None] = lambda _: None,
                 variants: Sequence[Mapping[str, Any]] = (DEFAULTS,)) -> list[FitTiming]:
    """Model `name` (`MODELS`) compiled with K-FAC (once per settings in `variants`, KFAC's keyword arguments) and,
    separately, with Adam, for each batch size b: one warm-up epoch each (tracing, first inversion), then `epochs`
    timed epochs of `steps` steps over the first b × `steps` examples of (x, y), one epoch of every optimizer and
    batch size in turn."""
    optimizers: list[tuple[str, Callable[[keras.Model], keras.optimizers.Optimizer]]] = [
        (kfac_label(settings), functools.partial(_kfac, settings=settings)) for settings in variants]
    optimizers.append((ADAM_LABEL, lambda _: keras.optimizers.Adam(1e-3)))
    progress(f"{name}, {', '.join(label for label, _ in optimizers)}, batch {' and '.join(map(str, batch_sizes))}, "
             "epochs in turns")
    fits: dict[str, Callable[[], None]] = {}
    arms: dict[str, tuple[str, int]] = {}
    losses: dict[str, float] = {}
    for batch in batch_sizes:
        if len(x) < batch * steps:
            raise ValueError(f"bench fit: {len(x)} examples cannot make {steps} steps of batch {batch}")
        for label, make in optimizers:
            keras.utils.set_random_seed(0)
            model = MODELS[name]()
            model.compile(optimizer=make(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            key = f"{label}, batch {batch}"

            def epoch(model: keras.Model = model, key: str = key, count: int = batch * steps, batch: int = batch
                      ) -> None:
                history = model.fit(x[:count], y[:count], batch_size=batch, epochs=1, shuffle=False, verbose=0)
                losses[key] = float(history.history["loss"][-1])

            fits[key], arms[key] = epoch, (label, batch)
    times = in_turns(fits, epochs, warmup=1)
    return [FitTiming(name, *arms[key], 1000 * statistics.median(seconds) / steps, losses[key],
                      1000 * min(seconds) / steps, 1000 * max(seconds) / steps) for key, seconds in times.items()]
