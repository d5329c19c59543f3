"""Step-time benchmarks, all measured in one process on one fixed random batch so that the ratios are comparable:
SGD against K-FAC variants (statistics every step, no inversion) and one full inversion on a conv net; and the
update of K-FAC as it trains (factors every step, inverses every few steps) against SGD on an MLP.

The methods take turns (a step of each, or a refresh period of each, round after round): a machine that drifts
(clock, caches, a neighbour) then slows every method alike, instead of whichever was timed first or last."""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import keras
import tensorflow as tf

from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig

NEVER = 10**9  # a refresh or statistics period that never comes while timing


def random_batch(batch_size: int, input_shape: tuple[int, ...], num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """One fixed batch (Keras seeded with 0): standard normal inputs and uniform integer labels."""
    keras.utils.set_random_seed(0)
    x = tf.random.normal((batch_size, *input_shape))
    return x, tf.random.uniform((batch_size,), 0, num_classes, dtype=tf.int32)


@dataclass(frozen=True)
class Timing:
    """Median seconds of one measured operation, and its ratio to the SGD step."""

    what: str
    seconds: float
    ratio: float


def kfac_variants(batch_size: int) -> list[tuple[str, KFACConfig]]:
    """The K-FAC configurations timed against SGD (inverses never refreshed during timing)."""
    quarter = max(1, batch_size // 4)
    return [
        ("K-FAC, cheap conv factors, stats every step", KFACConfig(conv_factors="cheap", inverse_every=NEVER)),
        (f"K-FAC, cheap, stats every step on {quarter} of the batch",
         KFACConfig(conv_factors="cheap", inverse_every=NEVER, stats_batch_size=quarter)),
        ("K-FAC, cheap, stats every step, bfloat16 products",
         KFACConfig(conv_factors="cheap", inverse_every=NEVER, product_dtype="bfloat16")),
        ("K-FAC, no statistics (preconditioning only)", KFACConfig(inverse_every=NEVER, stats_every=NEVER)),
        ("K-FAC, KFC conv factors, stats every step", KFACConfig(conv_factors="kfc", inverse_every=NEVER)),
        (f"K-FAC, KFC, stats every step on {quarter} of the batch",
         KFACConfig(conv_factors="kfc", inverse_every=NEVER, stats_batch_size=quarter)),
        ("K-FAC, KFC, stats every step, bfloat16 products",
         KFACConfig(conv_factors="kfc", inverse_every=NEVER, product_dtype="bfloat16")),
    ]


def median_seconds(run: Callable[[], object], repeats: int, warmup: int) -> float:
    return timed(run, repeats, warmup)[0]


def timed(run: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float, float]:
    """(median, min, max) seconds of `repeats` calls of `run` after `warmup` untimed ones."""
    times = in_turns({"run": run}, repeats, warmup)["run"]
    return statistics.median(times), min(times), max(times)


def whole_periods(steps: int, periods: Iterable[int]) -> int:
    """The least multiple of every period in `periods` that is at least `steps`: a timed stretch of that many steps
    holds each periodic refresh exactly as often as training does, whatever step it starts at."""
    period = math.lcm(*periods)
    return period * math.ceil(steps / period)


def in_turns(runs: Mapping[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each timed call of every run: `warmup` untimed rounds, then `repeats` rounds in which every run
    is called once, in order."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_seconds(run))
    return times


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure_step_times(
    build_model: Callable[[], keras.Model],
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    repeats: int = 10,
    warmup: int = 3,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[list[Timing], dict[str, int]]:
    """Time SGD and each K-FAC variant in turns, then one inversion, on one fixed random batch (no input
    pipeline); also the bytes a replica all-reduces (of the last variant's optimizer)."""
    x, y = random_batch(batch_size, input_shape, num_classes)
    sgd = SGD(build_model(), SGDConfig(learning_rate=0.01))
    runs: dict[str, Callable[[], object]] = {"SGD step, momentum 0.9": functools.partial(sgd.train_step, x, y)}
    for what, config in kfac_variants(batch_size):
        optimizer = KFAC(build_model(), config)
        runs[what] = functools.partial(optimizer.train_step, x, y)
    progress(f"SGD and {len(runs) - 1} K-FAC variants, in turns")
    medians = {what: statistics.median(times) for what, times in in_turns(runs, repeats, warmup).items()}
    sgd_seconds = medians["SGD step, momentum 0.9"]
    timings = [Timing(what, seconds, seconds / sgd_seconds) for what, seconds in medians.items()]
    progress("inversion")
    inversion = median_seconds(optimizer.refresh_inverses, max(3, repeats // 3), 1)
    timings.append(Timing("one full inversion (all blocks, Cholesky)", inversion, inversion / sgd_seconds))
    return timings, optimizer.communication_bytes()


MLP_WIDTHS = (784, 1000, 500, 250, 30, 10)


def deep_mlp(widths: tuple[int, ...] = MLP_WIDTHS) -> keras.Model:
    """The MLP of the K-FAC papers' autoencoder encoder as a classifier: tanh hidden layers, linear logits."""
    inputs = keras.Input((widths[0],))
    x = inputs
    for index, width in enumerate(widths[1:-1]):
        x = keras.layers.Dense(width, activation="tanh", name=f"dense{index}")(x)
    return keras.Model(inputs, keras.layers.Dense(widths[-1], name="logits")(x))


def update_variants(inverse_every: int) -> list[tuple[str, KFACConfig]]:
    """The K-FAC configurations `measure_update_times` times as they train: float32 products and bfloat16 ones."""
    config = KFACConfig(stats_every=1, inverse_every=inverse_every)
    return [("K-FAC", config), ("K-FAC, bfloat16 products,", dataclasses.replace(config, product_dtype="bfloat16"))]


def measure_update_times(
    build_model: Callable[[], keras.Model],
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    inverse_every: int = 10,
    repeats: int = 10,
    warmup: int = 3,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Timing]:
    """SGD's update against K-FAC's as it trains (`update_variants`: factors every step, synchronous inverses every
    `inverse_every` steps): the median update without and with an inversion, and the mean over whole refresh
    periods (amortised). Timed over ⌈repeats / inverse_every⌉ periods (at least two) after a warm-up period, SGD
    and each K-FAC variant taking turns period by period."""
    x, y = random_batch(batch_size, input_shape, num_classes)
    sgd = SGD(build_model(), SGDConfig(learning_rate=0.01))
    variants = [(label, KFAC(build_model(), config)) for label, config in update_variants(inverse_every)]
    progress("warm-up: tracing, the first inversion and the first periodic refresh")
    for _ in range(max(warmup, inverse_every + 1)):
        sgd.train_step(x, y)
    for _, kfac in variants:
        for _ in range(inverse_every + 1):
            kfac.train_step(x, y)
    progress(f"SGD and {len(variants)} K-FAC variants, in turns by refresh period")
    sgd_times: list[float] = []
    plain: dict[str, list[float]] = {label: [] for label, _ in variants}
    inverting: dict[str, list[float]] = {label: [] for label, _ in variants}
    for _ in range(max(2, math.ceil(repeats / inverse_every))):
        sgd_times += [_seconds(functools.partial(sgd.train_step, x, y)) for _ in range(inverse_every)]
        for label, kfac in variants:
            for _ in range(inverse_every):
                refreshes = int(kfac.iterations.numpy()) % inverse_every == 0
                times = inverting[label] if refreshes else plain[label]
                times.append(_seconds(functools.partial(kfac.train_step, x, y)))
    for _, kfac in variants:
        kfac.close()
    sgd_seconds = statistics.median(sgd_times)
    timings = [Timing("SGD update, momentum 0.9", sgd_seconds, 1.0)]
    for label, _ in variants:
        for what, seconds in (
            ("update without inversion", statistics.median(plain[label])),
            ("update with inversion", statistics.median(inverting[label])),
            (f"amortised (inverses every {inverse_every})", statistics.fmean(plain[label] + inverting[label])),
        ):
            timings.append(Timing(f"{label} {what}", seconds, seconds / sgd_seconds))
    return timings
