"""`bench gpu`: the paper profile's costs on whatever device TensorFlow finds (a GPU if there is one, else the
CPU), in one process, the methods timed in turns (`step_time.in_turns`), written to a `gpu.table` CSV as measured.

In this order, cheapest and most wanted first (a spent budget skips the rest): the float32 and bfloat16 rates of a
square matrix product (`arithmetic_floor.matmul_rate`); the Keras `fit` step of K-FAC and Adam on the Keras suite's
BN-CNN (`keras_suite.models.bn_cnn`; synthetic 28×28×1 data, epochs in turns); then for ResNet-50, AlexNet and GoogLeNet
(the K-FAC arm of `gpu.table.PAPER_MODELS`' specs, resolved for the scale's profile) on one fixed batch of synthetic
ImageNet-shaped data at the paper's per-GPU batch (the spec's batch ÷ its workers, the paper's GPU count: 512/8 = 64,
2048/8 = 256, 256/4 = 64; `paper_scale.small_batch_overrides` adapts the arm to it): seconds per update of SGD (momentum
0.9, the same model), of K-FAC with statistics every step and no inversion in float32 and in bfloat16 products, and of
K-FAC exactly as the profile configures it (statistics every `stats_every` steps on `stats_batch_size` examples,
inverses asynchronous as in the paper: the amortised update), each the median over `repeats` blocks of `Scale.block`
updates after a warm-up block; one full inversion of the every-step optimizer's factors on the host (LAPACK) and on the
device (tf.linalg, `inversion_device: accelerator`), median of `repeats` after one; the device's peak memory.

Why it fits in 8 minutes on one H100 at full scale (estimates made before any GPU run; the first one checks them):
an update of these models at these batches takes tens of milliseconds on an H100 (ResNet-50 at batch 64: SGD about
0.1 s, K-FAC under 0.3 s with its statistics pass), so a timed round of four methods × 20 updates takes under 15 s,
and `repeats` = 3 rounds plus the warm-up round under a minute per model; the inversions (host: a few seconds for
ResNet-50's 4609-wide factors on 16 cores) under 30 s per model. Tracing the four optimizers' graphs costs the
same at any size and is the largest part: on this project's shared 2-core CPU (load about 4, so half a core) the
warm-up of tiny ResNet-50 took about 4.5 minutes and of tiny GoogLeNet about 75 s; a GPU host's core, unshared,
should take a third of that or less, about 1.5 minutes for ResNet-50. All in, about 5-6 minutes, and the default
budget of 450 s stops the run cleanly before 8 minutes in any case, keeping what it measured (GoogLeNet, measured
last, is what a slow run loses).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.benchmarks.arithmetic_floor import matmul_rate
from kfac_repro.benchmarks.arm_costs.measure import build_arm_model
from kfac_repro.benchmarks.fit_time import fit_in_turns
from kfac_repro.benchmarks.gpu.table import (
    AMORTISED,
    DEVICE_INVERSION,
    EVERY_STEP,
    EVERY_STEP_BF16,
    FIT_ADAM,
    FIT_KFAC,
    HOST_INVERSION,
    NOT_AVAILABLE,
    PAPER_MODELS,
    PEAK_MEMORY,
    PRODUCT_BF16,
    PRODUCT_F32,
    SGD,
    Row,
)
from kfac_repro.benchmarks.paper_scale import small_batch_overrides
from kfac_repro.benchmarks.step_time import NEVER, in_turns, random_batch
from kfac_repro.kfac import KFAC, KFACConfig, SGDConfig
from kfac_repro.kfac import SGD as SGDOptimizer
from kfac_repro.kfac.inversion.divided import BlockInversion, FactorSource
from kfac_repro.runner.experiment import optimizer_config
from kfac_repro.specs import load_spec

if TYPE_CHECKING:
    from kfac_repro.specs.resolve import ArmConfig

ARM = "kfac"
Measurement = tuple[str, Callable[[], list[Row]]]


@dataclass(frozen=True)
class Scale:
    """How big: the spec profile whose models are measured, updates per timed block, the side of the timed matrix
    product, the fit's batch and steps per epoch, and the largest batch tried (a multiple of the per-GPU batch)."""

    profile: str
    block: int
    product_size: int
    fit_batch: int
    fit_steps: int
    largest: int


SCALES = {
    "full": Scale("paper", 20, 8192, 128, 20, 8),  # largest: the spec's whole batch on one GPU for ResNet-50, AlexNet
    "tiny": Scale("smoke", 2, 256, 16, 2, 2),  # the smoke profile's models: 32×32, width ×0.125, 10 classes; seconds
}


def device_name() -> str:
    """The GPUs TensorFlow sees, by name, else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def driver_version() -> str:
    """The NVIDIA driver's version from nvidia-smi, n/a without it."""
    if shutil.which("nvidia-smi") is None:
        return NOT_AVAILABLE
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return NOT_AVAILABLE
    return found[0] if found else NOT_AVAILABLE


def build_info() -> str:
    """TensorFlow's version and build (CUDA, cuDNN, ... as `tf.sysconfig.get_build_info()` gives them), and whether
    float32 products may run in TensorFloat-32 (TensorFlow's default on Ampere and later GPUs)."""
    info = {**tf.sysconfig.get_build_info(),
            "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled()}
    return f"TensorFlow {tf.__version__}; " + "; ".join(f"{k}={v}" for k, v in sorted(info.items()))


def paper_arm(model: str, profile: str) -> ArmConfig:
    """The K-FAC arm of `model`'s spec in `profile`, adapted to one GPU's share of the batch (module docstring)."""
    spec = PAPER_MODELS[model]
    arm = load_spec(spec, profile=profile, arms=(ARM,)).arms[ARM]
    batch = max(1, int(arm.training["batch_size"]) // int(arm.distribution["workers"]))
    return load_spec(spec, profile=profile, overrides=small_batch_overrides(arm, batch), arms=(ARM,)).arms[ARM]


def _gpu() -> str | None:
    """The device whose memory is reported: the first GPU, None without one."""
    return "GPU:0" if tf.config.list_logical_devices("GPU") else None


def _spread(model: str, batch: int, quantity: str, seconds: list[float], per: int = 1) -> Row:
    return Row(model, batch, quantity, statistics.median(seconds) / per, min(seconds) / per, max(seconds) / per,
               "seconds", len(seconds))


def _failed(model: str, batch: int, quantity: str, why: str) -> Row:
    return Row(model, batch, quantity, None, None, None, "seconds", 0, f"failed: {why}")


def largest_fitting(start: int, most: int, fits: Callable[[int], bool]) -> int | None:
    """The largest of 2·start, 4·start, ... up to `most` for which `fits` holds, trying them in turn and stopping at
    the first that does not; None when 2·start does not fit (or exceeds `most`)."""
    found, batch = None, 2 * start
    while batch <= most and fits(batch):
        found, batch = batch, 2 * batch
    return found


class ModelProfile:
    """One model's optimizers on one fixed batch; `updates` builds them, `inversions` and `memory` reuse them;
    `largest` looks for the largest batch that fits (optional, after them)."""

    def __init__(self, model: str, scale: Scale, repeats: int):
        self.model, self.scale, self.repeats = model, scale, repeats
        self.arm = paper_arm(model, scale.profile)
        self.batch = int(self.arm.training["batch_size"])
        self.block = scale.block
        self.kfacs: dict[str, KFAC] = {}

    def _runs(self, batch: int, quantities: tuple[str, ...]) -> dict[str, Callable[[], object]]:
        """A block of updates of each method in `quantities` (SGD and the K-FAC quantities) on one fixed batch of
        `batch` examples, each on a new model; the device's peak memory counts from here."""
        if (gpu := _gpu()) is not None:
            tf.config.experimental.reset_memory_stats(gpu)
        keras.utils.set_random_seed(0)
        _, shape, classes = build_arm_model(self.arm)
        x, y = random_batch(batch, shape, classes)
        _, paper = optimizer_config(self.arm.optimizer, 0)
        if not isinstance(paper, KFACConfig):
            raise TypeError(f"{PAPER_MODELS[self.model]} arm {ARM!r} is not K-FAC")
        every_step = dataclasses.replace(paper, stats_every=1, inverse_every=NEVER, inversion="sync")
        configs = {EVERY_STEP: every_step, EVERY_STEP_BF16: dataclasses.replace(every_step, product_dtype="bfloat16"),
                   AMORTISED: paper}
        self.kfacs = {q: KFAC(build_arm_model(self.arm)[0], configs[q]) for q in quantities if q in configs}
        steps = {q: k.train_step for q, k in self.kfacs.items()}
        if SGD in quantities:
            steps[SGD] = SGDOptimizer(build_arm_model(self.arm)[0], SGDConfig(learning_rate=0.01)).train_step
        self.block = max(self.scale.block, paper.inverse_every if paper.inversion == "sync" else 1)

        def updates(step: Callable[[tf.Tensor, tf.Tensor], object]) -> None:
            for _ in range(self.block):
                step(x, y)

        return {q: functools.partial(updates, steps[q]) for q in quantities}

    def _timed(self, batch: int, runs: dict[str, Callable[[], object]]) -> list[Row]:
        """Seconds per update of each run, blocks in turns after a warm-up block each; a method whose warm-up
        fails (a factor not positive definite at its first inversion) gets a row saying so."""
        failed = {}
        for quantity, run in list(runs.items()):
            try:
                run()
            except FloatingPointError as error:
                failed[quantity] = str(error)
                del runs[quantity]
        times = in_turns(runs, self.repeats, warmup=0)
        return [_spread(self.model, batch, q, seconds, self.block) for q, seconds in times.items()] + \
            [_failed(self.model, batch, q, why) for q, why in failed.items()]

    def updates(self) -> list[Row]:
        """Seconds per update of SGD and the three K-FAC optimizers at the paper's per-GPU batch (`_timed`)."""
        return self._timed(self.batch, self._runs(self.batch, (SGD, EVERY_STEP, EVERY_STEP_BF16, AMORTISED)))

    def largest(self) -> list[Row]:
        """The largest batch, doubling from the paper's per-GPU batch up to `Scale.largest` times it, at which a
        block of K-FAC's amortised updates runs without exhausting the device's memory; there, SGD's and that
        update's seconds (`_timed`) and the peak memory. Each batch tried traces its graphs anew."""

        def fits(batch: int) -> bool:
            try:
                self._runs(batch, (AMORTISED,))[AMORTISED]()
            except tf.errors.ResourceExhaustedError:
                return False
            finally:
                self.close()
            return True

        batch = largest_fitting(self.batch, self.batch * self.scale.largest, fits)
        if batch is None:
            return [Row(self.model, 2 * self.batch, AMORTISED, None, None, None, "seconds", 0,
                        "failed: exhausted the device's memory")]
        return self._timed(batch, self._runs(batch, (SGD, AMORTISED))) + self.memory(batch)

    def inversions(self) -> list[Row]:
        """One full inversion of the every-step optimizer's factors on the host and on the device, in turns."""
        kfac = self.kfacs[EVERY_STEP]
        if kfac.inverse_iteration < 0:
            why = f"{EVERY_STEP} failed"
            return [_failed(self.model, self.batch, q, why) for q in (HOST_INVERSION, DEVICE_INVERSION)]
        factors = {b.name: b.factors for b in kfac.blocks}
        device = BlockInversion(kfac.blocks, dataclasses.replace(kfac.config, inversion_device="accelerator"),
                                kfac.strategy)
        runs = {q: functools.partial(_invert, inversion, factors)
                for q, inversion in ((HOST_INVERSION, kfac.inversion), (DEVICE_INVERSION, device))}
        times = in_turns(runs, self.repeats, warmup=1)
        return [_spread(self.model, self.batch, q, seconds) for q, seconds in times.items()]

    def memory(self, batch: int | None = None) -> list[Row]:
        """The device's peak memory since the optimizers of `batch` (default: the paper's) were built (n/a on a
        CPU); then they are released."""
        gpu = _gpu()
        peak = None if gpu is None else float(tf.config.experimental.get_memory_info(gpu)["peak"])
        self.close()
        return [Row(self.model, batch or self.batch, PEAK_MEMORY, peak, peak, peak, "bytes", 1)]

    def close(self) -> None:
        for kfac in self.kfacs.values():
            kfac.close()
        self.kfacs = {}
        keras.backend.clear_session()
        gc.collect()


def _invert(inversion: BlockInversion, factors: FactorSource) -> None:
    inversion.install(inversion.compute(factors, 0))


def product_rates(scale: Scale, repeats: int) -> list[Row]:
    """Multiply-adds per second of a square product in float32 and in bfloat16 (`arithmetic_floor.matmul_rate`)."""
    size = scale.product_size
    return [Row("product", size, quantity, rate, None, None, "multiply-adds/s", repeats)
            for quantity, rate in ((PRODUCT_F32, matmul_rate(tf.float32, size, repeats)),
                                   (PRODUCT_BF16, matmul_rate(tf.bfloat16, size, repeats)))]


def fit_steps(scale: Scale, repeats: int, progress: Callable[[str], None]) -> list[Row]:
    """Seconds per `fit` step of K-FAC and Adam on the Keras suite's BN-CNN (`fit_time.MODELS`), synthetic data,
    epochs in turns."""
    rng = np.random.default_rng(0)
    count = scale.fit_batch * scale.fit_steps
    x = rng.standard_normal((count, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, count).astype("int32")
    timings = fit_in_turns("bn-cnn", x, y, [scale.fit_batch], scale.fit_steps, repeats, progress)
    return [Row("bn-cnn", scale.fit_batch, FIT_KFAC if t.optimizer.startswith("K-FAC") else FIT_ADAM,
                t.ms_per_step / 1000, t.low_ms / 1000, t.high_ms / 1000, "seconds", repeats) for t in timings]


def measurements(models: tuple[str, ...], scale: Scale, repeats: int, progress: Callable[[str], None],
                 largest: bool = False) -> tuple[list[Measurement], list[ModelProfile]]:
    """The measurements in the order they run (products, the fit, each model's updates, inversions and memory, and
    with `largest` its largest batch), named for the progress lines, and the model profiles, to `close` if the run
    stops early."""
    found: list[Measurement] = [
        (f"float32 and bfloat16 {scale.product_size}² products", functools.partial(product_rates, scale, repeats)),
        (f"bn-cnn fit, batch {scale.fit_batch}: K-FAC and Adam", functools.partial(fit_steps, scale, repeats,
                                                                                    progress))]
    profiles = []
    for model in models:
        profile = ModelProfile(model, scale, repeats)
        profiles.append(profile)
        where = f"{model}, batch {profile.batch}"
        found += [(f"{where}: SGD, K-FAC every step (float32, bfloat16), K-FAC amortised, in turns", profile.updates),
                  (f"{where}: one inversion on the host and on the device", profile.inversions),
                  (f"{where}: peak device memory", profile.memory)]
        if largest:
            found.append((f"{model}: the largest batch that fits, up to {scale.largest}× {profile.batch}; SGD and "
                          "K-FAC amortised there, in turns", profile.largest))
    return found, profiles
