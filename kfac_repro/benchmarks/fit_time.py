"""`model.fit` step time with kfac_repro.keras.KFAC (its defaults, their amortisation and inverse refreshes
included, and any other settings asked for) against Adam, at one or more batch sizes, on a small CNN or any of the
Keras suite's tasks (`keras_suite.models.TASKS`: the README's MLP, the CNN with BatchNormalization, the residual
CNN, the deep autoencoder, the sequence model; full width, their own data and loss), all in one process, every
optimizer's and batch size's epochs in turns, so that the ratios are comparable. The training loss after the
timed epochs is reported too (the same steps and batches for both optimizers)."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kfac_repro.benchmarks.keras_suite.models import TASKS
from kfac_repro.benchmarks.keras_suite.plan import ERROR_METRIC, SCALES, TASK_NAMES
from kfac_repro.benchmarks.step_time import in_turns, whole_periods
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


@dataclass(frozen=True)
class FitModel:
    """A model `bench fit` times: its builder, its compiled loss, its first `count` training examples and its
    compiled metrics (accuracy for classifiers, as the suite compiles them)."""

    build: Callable[[], keras.Model]
    loss: Callable[[], keras.losses.Loss]
    data: Callable[[int], tuple[np.ndarray, np.ndarray]]
    metrics: tuple[str, ...] = ("accuracy",)


def _task(name: str) -> FitModel:
    """The Keras suite's task `name` at full width, on the training split of its seed-0 data (its first `count`
    examples, cycled where the split is shorter: the 20 000 generated sequences make 19 steps of batch 1024)."""
    task = TASKS[name]

    def data(count: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = task.data(0, SCALES["full"])[0]
        cycle = np.arange(count) % len(x)
        return x[cycle], y[cycle]

    return FitModel(functools.partial(task.build, 1.0), task.loss, data, ("accuracy",) if ERROR_METRIC[name] else ())


MODELS: dict[str, FitModel] = {"cnn": FitModel(small_cnn, TASKS["mlp"].loss, _task("mlp").data),
                               **{name: _task(name) for name in TASK_NAMES}}


def _kfac(model: keras.Model, settings: Mapping[str, Any]) -> keras.optimizers.Optimizer:
    return KFAC(model, **settings)


def epoch_steps(steps: int, variants: Sequence[Mapping[str, Any]]) -> int:
    """Steps per timed epoch: at least `steps`, and whole refresh periods of every K-FAC arm (`step_time.
    whole_periods`), so that an epoch's median counts inversions as often as training does."""
    return whole_periods(steps, (KFAC(None, **settings).refresh_period for settings in variants))


def time_fit(models: list[str], batch_sizes: Sequence[int], steps: int, epochs: int,
             progress: Callable[[str], None] = lambda _: None,
             variants: Sequence[Mapping[str, Any]] = (DEFAULTS,)) -> list[FitTiming]:
    """`fit_in_turns` of each model on its first `batch_size` × `steps` training examples."""
    return [t for name in models
            for t in fit_in_turns(name, *MODELS[name].data(max(batch_sizes) * steps), batch_sizes, steps, epochs,
                                  progress, variants)]


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
            model = MODELS[name].build()
            model.compile(optimizer=make(model), loss=MODELS[name].loss(), metrics=list(MODELS[name].metrics))
            key = f"{label}, batch {batch}"

            def epoch(model: keras.Model = model, key: str = key, count: int = batch * steps, batch: int = batch
                      ) -> None:
                history = model.fit(x[:count], y[:count], batch_size=batch, epochs=1, shuffle=False, verbose=0)
                losses[key] = float(history.history["loss"][-1])

            fits[key], arms[key] = epoch, (label, batch)
    times = in_turns(fits, epochs, warmup=1)
    return [FitTiming(name, *arms[key], 1000 * statistics.median(seconds) / steps, losses[key],
                      1000 * min(seconds) / steps, 1000 * max(seconds) / steps) for key, seconds in times.items()]
