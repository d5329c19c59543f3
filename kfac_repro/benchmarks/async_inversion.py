"""Does asynchronous inversion pay off? The CIFAR-10 net of Fig. 2 (cifar10-async, paper profile: its K-FAC
settings) on one fixed random batch, timed in one process: the mean update time of free-running asynchronous
inversion (the inversion on `inversion_threads` LAPACK threads, TensorFlow on the other cores) and of synchronous
refresh every `inverse_every` steps, each divided by the mean time of an update that never inverts; also the
refresh interval the asynchronous arm achieved and its mean staleness."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

SPEC, PROFILE = "cifar10-async", "paper"


@dataclass(frozen=True)
class AsyncTiming:
    """Mean seconds per update of each arm; the async arm's refreshes within the timed steps."""

    never_seconds: float
    async_seconds: float
    sync_seconds: float
    sync_every: int
    steps: int
    refreshes: int
    mean_staleness: float


def measure_async(batch_size: int = 512, steps: int = 60, warmup: int = 3, inversion_threads: int = 1,
                  progress: Callable[[str], None] = lambda _: None) -> AsyncTiming:
    """Time the three arms; TensorFlow's thread pools must already be sized (`reserve_inversion_cores`)."""

    from kfac_repro.benchmarks.step_time import NEVER, random_batch
    from kfac_repro.kfac import KFAC, KFACConfig
    from kfac_repro.models.cifar10_net import cifar10_net
    from kfac_repro.runner.experiment import optimizer_config
    from kfac_repro.specs import load_spec

    arm = load_spec(SPEC, PROFILE, arms=["async-gpu1"]).arms["async-gpu1"]
    _, base = optimizer_config(arm.optimizer, seed=0)
    assert isinstance(base, KFACConfig)
    x, y = random_batch(batch_size, (32, 32, 3), 10)

    def mean_seconds(config: KFACConfig) -> tuple[float, KFAC, list[float]]:
        optimizer = KFAC(cifar10_net(), config)
        for _ in range(warmup):
            optimizer.train_step(x, y)
        staleness = []
        start = time.perf_counter()
        for _ in range(steps):
            staleness.append(optimizer.train_step(x, y)["inverse_staleness"])
        seconds = (time.perf_counter() - start) / steps
        optimizer.close()
        return seconds, optimizer, staleness

    progress("K-FAC, never inverting")
    never, _, _ = mean_seconds(dataclasses.replace(base, inversion="sync", inverse_every=NEVER))
    progress("K-FAC, asynchronous inversion (free-running)")
    asynchronous, optimizer, staleness = mean_seconds(
        dataclasses.replace(base, inversion="async", async_lag=None, inversion_threads=inversion_threads))
    history = optimizer.refresh.history
    refreshes = sum(1 for r in history if r.installed_at >= warmup)
    progress(f"K-FAC, synchronous inversion every {base.inverse_every} steps")
    sync, _, _ = mean_seconds(dataclasses.replace(base, inversion="sync", inversion_threads=inversion_threads))
    return AsyncTiming(never, asynchronous, sync, base.inverse_every, steps, refreshes,
                       sum(staleness) / len(staleness))
