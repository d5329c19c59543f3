"""Hyper-parameters of the K-FAC and SGD optimizers, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


def _check(condition: bool, name: str, expected: str, value: object) -> None:
    if not condition:
        raise ValueError(f"{name}: expected {expected}, found {value!r}")


@dataclass(frozen=True)
class Schedule:
    """value_k = initial · rate^⌊k / every⌋ (constant when `every` is None); the paper decays by 0.96."""

    initial: float
    rate: float = 1.0
    every: int | None = None

    def __post_init__(self) -> None:
        _check(self.initial > 0, "initial", "a number > 0", self.initial)
        _check(0 < self.rate <= 1, "rate", "a number in (0, 1]", self.rate)
        _check(self.every is None or self.every > 0, "every", "a positive step count or None", self.every)


@dataclass(frozen=True)
class KFACConfig:
    """K-FAC as in Ba, Grosse & Martens (2017); defaults follow the paper where it gives values.

    Step size η = min(η_max, √(c / vᵀg)) (Eq. 14); `kl_bound` "update" adds (1 − μ)·η·v to the momentum buffer so
    that the update it sums to in steady state, η·v, meets the bound (Ba's released code); "increment" adds η·v,
    whose momentum sum is 1/(1 − μ) times larger (KL ≈ c/(1 − μ)²). `decay_target` says whether c ("kl", the
    paper) or η_max ("lr", Fig. 8's decayLR) follows the schedule decay_rate^⌊k / decay_every⌋.
    """

    damping: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    kl_clip: float = 0.01
    max_step_size: float = 1.0
    kl_bound: Literal["update", "increment"] = "increment"
    decay_rate: float = 0.96
    decay_every: int | None = None
    decay_target: Literal["kl", "lr"] = "kl"
    stats_decay: float = 0.95
    stats_every: int = 1
    stats_batch_size: int | None = None  # None: stats from the training pass; m: a separate pass on x[:m]
    inverse_every: int = 20
    inversion: Literal["sync", "async"] = "sync"
    async_lag: int | None = None
    inversion_threads: int | None = None
    inversion_device: Literal["host", "accelerator"] = "host"
    conv_factors: Literal["cheap", "kfc"] = "cheap"
    sequence_factors: Literal["expand", "reduce"] = "expand"
    inverse_dtype: Literal["float32", "float64"] = "float32"  # Cholesky precision; float64 retried on failure
    fisher_targets: Literal["sample", "exact"] = "sample"
    likelihood: Literal["categorical", "gaussian"] = "categorical"
    from_logits: bool = True
    exact_block_max: int = 1024
    doubly_factored: tuple[str, ...] = ()
    doubly_factored_min_inputs: int | None = None
    skip_layers: tuple[str, ...] = ()
    polyak_decay: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "doubly_factored", tuple(self.doubly_factored))
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        _check(self.damping > 0, "damping", "a number > 0", self.damping)
        _check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        _check(0 <= self.momentum < 1, "momentum", "a number in [0, 1)", self.momentum)
        _check(self.kl_clip > 0, "kl_clip", "a number > 0", self.kl_clip)
        _check(self.max_step_size > 0, "max_step_size", "a number > 0", self.max_step_size)
        _check(self.kl_bound in ("update", "increment"), "kl_bound", "'update' or 'increment'", self.kl_bound)
        Schedule(1.0, self.decay_rate, self.decay_every)
        _check(self.decay_target in ("kl", "lr"), "decay_target", "'kl' or 'lr'", self.decay_target)
        _check(0 <= self.stats_decay < 1, "stats_decay", "a number in [0, 1)", self.stats_decay)
        _check(self.stats_every >= 1, "stats_every", "an integer >= 1", self.stats_every)
        _check(self.stats_batch_size is None or self.stats_batch_size >= 1, "stats_batch_size",
               "an integer >= 1 or None", self.stats_batch_size)
        _check(self.inverse_every >= 1, "inverse_every", "an integer >= 1", self.inverse_every)
        _check(self.inversion in ("sync", "async"), "inversion", "'sync' or 'async'", self.inversion)
        _check(self.async_lag is None or self.async_lag >= 1, "async_lag", "an integer >= 1 or None", self.async_lag)
        _check(self.inversion_threads is None or self.inversion_threads >= 1, "inversion_threads",
               "an integer >= 1 or None", self.inversion_threads)
        _check(self.inversion_device in ("host", "accelerator"), "inversion_device", "'host' or 'accelerator'",
               self.inversion_device)
        _check(self.conv_factors in ("cheap", "kfc"), "conv_factors", "'cheap' or 'kfc'", self.conv_factors)
        _check(self.sequence_factors in ("expand", "reduce"), "sequence_factors", "'expand' or 'reduce'",
               self.sequence_factors)
        _check(self.inverse_dtype in ("float32", "float64"), "inverse_dtype", "'float32' or 'float64'",
               self.inverse_dtype)
        _check(self.fisher_targets in ("sample", "exact"), "fisher_targets", "'sample' or 'exact'",
               self.fisher_targets)
        _check(self.likelihood in ("categorical", "gaussian"), "likelihood", "'categorical' or 'gaussian'",
               self.likelihood)
        _check(self.exact_block_max >= 0, "exact_block_max", "an integer >= 0", self.exact_block_max)
        _check(self.doubly_factored_min_inputs is None or self.doubly_factored_min_inputs >= 1,
               "doubly_factored_min_inputs", "an integer >= 1 or None", self.doubly_factored_min_inputs)
        _check_polyak(self.polyak_decay)

    def kl_schedule(self) -> Schedule:
        if self.decay_target == "kl":
            return Schedule(self.kl_clip, self.decay_rate, self.decay_every)
        return Schedule(self.kl_clip)

    def max_step_schedule(self) -> Schedule:
        if self.decay_target == "lr":
            return Schedule(self.max_step_size, self.decay_rate, self.decay_every)
        return Schedule(self.max_step_size)


@dataclass(frozen=True)
class SGDConfig:
    """SGD with momentum: θ ← θ − v, v ← μ v + η_k (∇L + wd θ), η_k = learning_rate · lr_decay_rate^⌊k/every⌋."""

    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay_rate: float = 1.0
    lr_decay_every: int | None = None
    likelihood: Literal["categorical", "gaussian"] = "categorical"
    from_logits: bool = True
    polyak_decay: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, "learning_rate", "a number > 0", self.learning_rate)
        _check(0 <= self.momentum < 1, "momentum", "a number in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        Schedule(self.learning_rate, self.lr_decay_rate, self.lr_decay_every)
        _check_polyak(self.polyak_decay)

    def lr_schedule(self) -> Schedule:
        return Schedule(self.learning_rate, self.lr_decay_rate, self.lr_decay_every)


def _check_polyak(decay: float | None) -> None:
    _check(decay is None or 0 <= decay < 1, "polyak_decay", "a number in [0, 1) or None", decay)
