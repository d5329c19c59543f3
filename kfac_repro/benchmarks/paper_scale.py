"""`bench paper-scale`: each paper-profile arm at full model size, a few updates on one small batch of learnable
synthetic data (random images labelled by a fixed linear teacher), in a process of its own.

What it shows: the untrained model's first loss (≈ ln(classes)), whether the arm's optimizer lowers the loss on the
batch it sees (fitting one batch is the smallest learnable task), seconds per update after the first (which traces
the graph and computes the first inverses) and the process's peak resident memory.

A batch of B examples instead of the spec's B₀ changes what a step size means, so the arm is adapted (our choice):
SGD's learning rate is scaled by B/B₀ (the linear scaling rule; at B = 16 the gradient's squared norm on the
untrained AlexNet is 65× that at B₀ = 2048, so the spec's rate diverges within 3 updates), BN chunks are capped at
B, and the run has one worker. K-FAC keeps its settings: its step size comes from the KL bound.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfac_repro.specs.resolve import ArmConfig


@dataclass(frozen=True)
class PaperScaleResult:
    """One arm's check: losses of each update on the fixed batch, seconds per update after the first, peak MB."""

    spec: str
    arm: str
    model: str
    method: str
    batch_size: int
    losses: tuple[float, ...]
    seconds_per_update: float
    first_update_seconds: float
    peak_mb: float


def small_batch_overrides(arm: ArmConfig, batch_size: int) -> list[str]:
    """`--set` overrides that adapt a resolved arm to `batch_size` examples on one worker (module docstring)."""
    spec_batch = int(arm.training["batch_size"])
    overrides = [f"training.batch_size={batch_size}", "distribution.workers=1", "data.name=synthetic"]
    if "learning_rate" in arm.optimizer:
        overrides.append(f"optimizer.learning_rate={float(arm.optimizer['learning_rate']) * batch_size / spec_batch!r}")
    chunk = arm.model.get("bn_chunk_size")
    if chunk is not None and int(chunk) > batch_size:
        overrides.append(f"model.bn_chunk_size={batch_size}")
    return overrides


def check_arm(spec: str, arm_name: str, arm: ArmConfig, updates: int) -> PaperScaleResult:
    """`updates` updates of the arm (already adapted by `small_batch_overrides`) on one fixed synthetic batch."""
    import keras

    from kfac_repro.benchmarks.arm_costs.measure import build_arm_model
    from kfac_repro.data.registry import make_dataset
    from kfac_repro.kfac import KFAC, optimizer_for
    from kfac_repro.runner.experiment import optimizer_config

    keras.utils.set_random_seed(0)
    method, config = optimizer_config(arm.optimizer, 0)
    model, shape, classes = build_arm_model(arm)
    optimizer = optimizer_for(model, config)
    batch_size = int(arm.training["batch_size"])
    x, y = next(iter(make_dataset("synthetic", "train", batch_size, image_size=shape[0], num_classes=classes)))
    losses, seconds = [], []
    try:
        for _ in range(updates):
            start = time.perf_counter()
            losses.append(float(optimizer.train_step(x, y)["loss"]))
            seconds.append(time.perf_counter() - start)
    finally:
        if isinstance(optimizer, KFAC):
            optimizer.close()
    later = seconds[1:] or seconds
    return PaperScaleResult(spec=spec, arm=arm_name, model=str(arm.model["name"]), method=method,
                            batch_size=batch_size, losses=tuple(losses),
                            seconds_per_update=statistics.median(later), first_update_seconds=seconds[0],
                            peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def table(results: list[PaperScaleResult]) -> str:
    """The printed table: one row per arm; first and last loss, lowest loss, seconds per update, peak MB."""
    header = (f"{'spec':26}{'arm':16}{'model':10}{'method':7}{'batch':>6}{'first loss':>11}{'last loss':>10}"
              f"{'lowest':>8}{'s/update':>9}{'first s':>8}{'peak MB':>9}")
    rows = [f"{r.spec:26}{r.arm:16}{r.model:10}{r.method:7}{r.batch_size:6d}{r.losses[0]:11.3f}{r.losses[-1]:10.3f}"
            f"{min(r.losses):8.3f}{r.seconds_per_update:9.2f}{r.first_update_seconds:8.1f}{r.peak_mb:9.0f}"
            for r in results]
    return "\n".join([header, *rows])
