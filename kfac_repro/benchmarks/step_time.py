"""Step-time benchmark: SGD against K-FAC variants (statistics every step, no inversion) and one full inversion,
on the same model and batch, all measured in one process so that the ratios are comparable."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig

NEVER = 10**9


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
        ("K-FAC, no statistics (preconditioning only)", KFACConfig(inverse_every=NEVER, stats_every=NEVER)),
        ("K-FAC, KFC conv factors, stats every step", KFACConfig(conv_factors="kfc", inverse_every=NEVER)),
        (f"K-FAC, KFC, stats every step on {quarter} of the batch",
         KFACConfig(conv_factors="kfc", inverse_every=NEVER, stats_batch_size=quarter)),
    ]


def median_seconds(run: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_step_times(
    build_model: Callable[[], keras.Model],
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    repeats: int = 10,
    warmup: int = 3,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[list[Timing], dict[str, int]]:
    """Time SGD, each K-FAC variant and one inversion on one fixed random batch (no input pipeline); also the
    bytes a replica all-reduces (of the last variant's optimizer)."""
    keras.utils.set_random_seed(0)
    x = tf.random.normal((batch_size, *input_shape))
    y = tf.random.uniform((batch_size,), 0, num_classes, dtype=tf.int32)

    progress("SGD step")
    sgd = SGD(build_model(), SGDConfig(learning_rate=0.01))
    sgd_seconds = median_seconds(functools.partial(sgd.train_step, x, y), repeats, warmup)
    timings = [Timing("SGD step, momentum 0.9", sgd_seconds, 1.0)]
    for what, config in kfac_variants(batch_size):
        progress(what)
        optimizer = KFAC(build_model(), config)
        seconds = median_seconds(functools.partial(optimizer.train_step, x, y), repeats, warmup)
        timings.append(Timing(what, seconds, seconds / sgd_seconds))
    progress("inversion")
    inversion = median_seconds(optimizer.refresh_inverses, max(3, repeats // 3), 1)
    timings.append(Timing("one full inversion (all blocks, Cholesky)", inversion, inversion / sgd_seconds))
    return timings, optimizer.communication_bytes()
