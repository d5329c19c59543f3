"""Hyper-parameters of the K-FAC and SGD optimizers, validated on construction.

Each setting is declared once, here: its type (the annotation: a number, an integer, a flag, a `Literal` of
choices, a tuple of names; `| None` when None is a value), its default, its bounds and its meaning (`setting()`).
`settings(config_type)` lists them as `Setting`s, the one declaration of a value shared with the experiment specs'
fields; construction checks every value against them, and the specs take their optimizer schema and reference
from them (kfac_repro/specs/schema.py).
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

MAX_STEPS = 10**9  # upper bounds no machine could run beyond (a typo such as 1e20 is refused)
MAX_BATCH = 1 << 20
MAX_THREADS = 4096

ProductDtype = Literal["float32", "bfloat16"]  # precision of K-FAC's per-step products (kfac/blocks/precision.py)


def _check(condition: bool, name: str, expected: str, value: object) -> None:
    if not condition:
        raise ValueError(f"{name}: expected {expected}, found {value!r}")


@dataclass(frozen=True)
class Setting:
    """One declared value: its `kind` (int, float, bool, str, or tuple: of names), meaning, default, `choices`,
    range (`minimum`/`maximum` inclusive, `above`/`below` exclusive) and whether None is a value (`nullable`).
    The configs below declare theirs with `setting()` (`settings()` reads them back); the experiment specs' fields
    are Settings too (kfac_repro/specs/fields.py), worded for YAML."""

    kind: type
    doc: str
    default: Any = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    nullable: bool = False

    NULL: ClassVar[str] = "None"
    KINDS: ClassVar[dict[type, str]] = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                                        tuple: "a tuple of names"}

    def expected(self) -> str:
        """What the setting accepts, in words: 'a number in [0, 1)', "'sync' or 'async'"."""
        text = self.choices_text() if self.choices else self.KINDS[self.kind] + self.range_text()
        return text + (f" or {self.NULL}" if self.nullable else "")

    def choices_text(self) -> str:
        quoted = [repr(choice) for choice in self.choices or ()]
        return ", ".join(quoted[:-1]) + " or " + quoted[-1]

    def range_text(self) -> str:
        """The range in words, to follow 'a number': ' in [0, 1)', ' > 0', '' when unbounded."""
        low = ((_number(self.minimum), "[", ">=") if self.minimum is not None else
               (_number(self.above), "(", ">") if self.above is not None else None)
        high = ((_number(self.maximum), "]", "<=") if self.maximum is not None else
                (_number(self.below), ")", "<") if self.below is not None else None)
        if low and high:
            return f" in {low[1]}{low[0]}, {high[0]}{high[1]}"
        bound = low or high
        return f" {bound[2]} {bound[0]}" if bound else ""

    def admits(self, value: Any) -> bool:
        """`value` is of the kind (an integer for a number too; a list or tuple of strings for names), among the
        choices and in the range; None only if nullable."""
        if value is None:
            return self.nullable
        if isinstance(value, bool) or self.kind is bool:
            return isinstance(value, bool) and self.kind is bool
        if self.kind is int:
            return isinstance(value, numbers.Integral) and self._in_range(float(value))
        if self.kind is float:
            return isinstance(value, numbers.Real) and math.isfinite(value) and self._in_range(float(value))
        if self.kind is tuple:
            return isinstance(value, tuple | list) and all(isinstance(item, str) for item in value)
        return isinstance(value, self.kind) and (self.choices is None or value in self.choices)

    def _in_range(self, value: float) -> bool:
        return ((self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)
                and (self.above is None or value > self.above) and (self.below is None or value < self.below))


def _number(bound: float) -> str:
    """A bound in words: whole numbers in full (1048576, not 1.04858e+06)."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def setting(default: Any, doc: str, *, minimum: float | None = None, maximum: float | None = None,
            above: float | None = None, below: float | None = None) -> Any:
    """A config field: its default, its meaning and (numbers) its range; `settings()` reads it back."""
    return field(default=default, metadata={"doc": doc, "range": (minimum, maximum, above, below)})


def settings(config_type: type) -> dict[str, Setting]:
    """The declared settings of a config dataclass, in declaration order: the kind from the annotation (a
    `Literal` gives the choices; `| None`, nullable), the rest from `setting()`."""
    hints = typing.get_type_hints(config_type)
    declared = {}
    for item in fields(config_type):
        kind, nullable = hints[item.name], False
        if isinstance(kind, types.UnionType):
            (kind,), nullable = [a for a in typing.get_args(kind) if a is not type(None)], True
        choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
        kind = str if choices else (typing.get_origin(kind) or kind)
        minimum, maximum, above, below = item.metadata.get("range", (None,) * 4)
        declared[item.name] = Setting(kind, item.metadata.get("doc", ""), item.default, choices, minimum, maximum,
                                      above, below, nullable)
    return declared


def _validate(config: Any) -> None:
    """ValueError naming the first setting whose value is out of its declared type's choices or bounds."""
    for name, declared in settings(type(config)).items():
        value = getattr(config, name)
        _check(declared.admits(value), name, declared.expected(), value)


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


def _likelihood() -> Any:
    return setting("categorical", "the output distribution of the model")


def _from_logits() -> Any:
    return setting(True, "the model outputs logits (not probabilities)")


def _momentum() -> Any:
    return setting(0.9, "momentum μ (the paper: 0.9 for every method)", minimum=0, below=1)


def _weight_decay() -> Any:
    return setting(0.0, "L2 coefficient (K-FAC: also folded into the damping)", minimum=0)


def _polyak_decay() -> Any:
    return setting(None, "decay of the exponential Polyak average of the weights used for evaluation (null: raw "
                   "weights)", minimum=0, below=1)


def _seed() -> Any:
    return setting(0, "seed of the sampled Fisher targets and other draws")


@dataclass(frozen=True)
class KFACConfig:
    """K-FAC as in Ba, Grosse & Martens (2017); defaults follow the paper where it gives values.

    Step size η = min(η_max, √(c / vᵀg)) (Eq. 14); `kl_bound` "update" adds (1 − μ)·η·v to the momentum buffer so
    that the update it sums to in steady state, η·v, meets the bound (Ba's released code); "increment" adds η·v,
    whose momentum sum is 1/(1 − μ) times larger (KL ≈ c/(1 − μ)²). `decay_target` says whether c ("kl", the
    paper) or η_max ("lr", Fig. 8's decayLR) follows the schedule decay_rate^⌊k / decay_every⌋.
    """

    damping: float = setting(1e-3, "λ: factored Tikhonov damping (the initial λ when adapted)", above=0)
    damping_adaptation_every: int | None = setting(
        None, "adapt λ every T steps (Levenberg–Marquardt, Martens & Grosse 2015 §6.5; host loop only): on the "
        "step's batch ρ = (h(θ+δ) − h(θ)) / (½δᵀ(F + wd)δ + ∇hᵀδ), F the exact Fisher; λ ← ωλ if ρ > 3/4, λ/ω if "
        "ρ < 1/4, ω = (19/20)^T, clipped to [damping_min, damping_max] (null: λ fixed)", minimum=1,
        maximum=MAX_STEPS)
    damping_min: float = setting(1e-8, "the smallest adapted λ", above=0)
    damping_max: float = setting(1e4, "the largest adapted λ", above=0)
    weight_decay: float = _weight_decay()
    momentum: float = _momentum()
    kl_clip: float = setting(0.01, "c₀: bound on the update's squared Fisher norm, η = min(η_max, √(c/vᵀg)) "
                             "(Eq. 14)", above=0)
    kl_clip_batch: int | None = setting(
        None, "B₀: the global batch at which c holds; a batch of B examples is bounded by c·B/B₀, so that where the "
        "bound sets η it grows in proportion to B (null: c at every batch)", minimum=1)
    max_step_size: float = setting(1.0, "η_max: the largest step size", above=0)
    kl_bound: Literal["update", "increment"] = setting(
        "update", "update: the bound holds for the momentum-summed update (the buffer receives (1 − μ)·η·v, as "
        "in Ba's released code); increment: for η·v before momentum (our earlier rule: the update's KL reaches "
        "c/(1 − μ)²)")
    decay_rate: float = setting(0.96, "ζ: c (or η_max) is multiplied by ζ every `decay_every` steps", above=0,
                                maximum=1)
    decay_every: int | None = setting(None, "steps between decays (null: no decay)", minimum=1, maximum=MAX_STEPS)
    decay_target: Literal["kl", "lr"] = setting("kl", "kl: decay c (the paper); lr: decay η_max with c fixed "
                                                "(Fig. 8's decayLR)")
    stats_decay: float = setting(0.95, "largest decay of the factors' moving averages, min(1 − 1/k, ·)", minimum=0,
                                 below=1)
    stats_every: int = setting(1, "steps between statistics updates", minimum=1, maximum=MAX_STEPS)
    stats_batch_size: int | None = setting(
        None, "statistics from a separate pass on this many examples, standing in for the dedicated stats worker "
        "(null: from the training pass)", minimum=1, maximum=MAX_BATCH)
    inverse_every: int = setting(20, "steps between inverse refreshes (sync inversion)", minimum=1,
                                 maximum=MAX_STEPS)
    inversion: Literal["sync", "async"] = setting("sync", "sync: refresh every `inverse_every` steps; async: "
                                                  "background inversions, used stale")
    async_lag: int | None = setting(None, "async: steps between a factor snapshot and its inverse's use (null: the "
                                    "next step after every worker has finished its share)", minimum=1,
                                    maximum=MAX_STEPS)
    inversion_threads: int | None = setting(
        None, "cores of the host inversion; the runner gives TensorFlow the other cores (null: all cores, no "
        "reservation)", minimum=1, maximum=MAX_THREADS)
    inversion_device: Literal["host", "accelerator"] = setting(
        "host", "host: numpy LAPACK; accelerator: tf.linalg on each replica's device")
    conv_factors: Literal["cheap", "kfc"] = setting("cheap", "conv blocks: cheap (App. A) or kfc")
    sequence_factors: Literal["expand", "reduce"] = setting(
        "expand", "Dense/EinsumDense applied over sequence positions: expand or reduce (Eschenhagen et al. 2023; "
        "convolutions follow conv_factors)")
    eigenvalue_correction: bool = setting(
        False, "EKFAC (George et al. 2018) for the A ⊗ G blocks of Dense and Conv2D layers: each refresh "
        "eigendecomposes A and G; each statistics step re-estimates s = E_n[(U_Aᵀ ∇W_n U_G)²] from per-example "
        "gradients; the step is U_A [(U_Aᵀ ∇W U_G) / (s + λ)] U_Gᵀ (kfac_repro/kfac/blocks/eigenbasis.py); "
        "other blocks stay K-FAC's")
    inverse_dtype: Literal["float32", "float64"] = setting(
        "float32", "precision of the damped factors' Cholesky inverses (float32 retried in float64 on failure)")
    product_dtype: ProductDtype = setting(  # noqa: RUF009 (a Literal alias: ruff cannot tell it is immutable)
        "float32", "precision of the products K-FAC adds to a step (the factors' statistics and the preconditioning; "
        "see kfac_repro/kfac/blocks/precision.py): bfloat16 rounds their operands and results to 8-bit significands "
        "and runs about twice as fast where the hardware multiplies bfloat16 (AVX512_BF16 CPUs, tensor-core GPUs); "
        "factors, inverses and updates stay float32")
    fisher_targets: Literal["sample", "exact"] = setting(
        "sample", "sample: targets drawn from the model (true Fisher); exact: expectation over classes")
    likelihood: Literal["categorical", "gaussian"] = _likelihood()
    from_logits: bool = _from_logits()
    exact_block_max: int = setting(1024, "largest vector block kept exact (larger: diagonal)", minimum=0,
                                   maximum=1 << 16)
    doubly_factored: tuple[str, ...] = setting((), "layers given doubly-factored blocks (paper §4; AlexNet: [fc6])")
    doubly_factored_min_inputs: int | None = setting(
        None, "also doubly-factor every eligible layer with at least this many inputs (null: only the named ones)",
        minimum=1, maximum=1 << 30)
    skip_layers: tuple[str, ...] = setting((), "layers left unpreconditioned: names or glob patterns (fnmatch)")
    polyak_decay: float | None = _polyak_decay()
    seed: int = _seed()

    def __post_init__(self) -> None:
        for name in ("doubly_factored", "skip_layers"):  # a list (YAML's) is kept as a tuple; a string is refused
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)
        if self.damping_adaptation_every is not None:
            _check(self.damping_min <= self.damping <= self.damping_max, "damping",
                   f"a number in [damping_min, damping_max] = [{self.damping_min:g}, {self.damping_max:g}] when "
                   "adapted", self.damping)

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

    learning_rate: float = setting(0.1, "initial learning rate", above=0)
    momentum: float = _momentum()
    weight_decay: float = _weight_decay()
    lr_decay_rate: float = setting(1.0, "the learning rate is multiplied by this every `lr_decay_every` steps",
                                   above=0, maximum=1)
    lr_decay_every: int | None = setting(None, "steps between decays (null: constant)", minimum=1,
                                         maximum=MAX_STEPS)
    likelihood: Literal["categorical", "gaussian"] = _likelihood()
    from_logits: bool = _from_logits()
    polyak_decay: float | None = _polyak_decay()
    seed: int = _seed()

    def __post_init__(self) -> None:
        _validate(self)

    def lr_schedule(self) -> Schedule:
        return Schedule(self.learning_rate, self.lr_decay_rate, self.lr_decay_every)
