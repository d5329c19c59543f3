"""The Keras benchmark suite's plan, without TensorFlow: task names, optimizer grids, scales, and the budget.

Every optimizer is tuned with a grid of GRID_SIZE settings on the same budget of steps and selected by the same
rule (results.select); models.py builds the models and runs them.
"""

from __future__ import annotations

from dataclasses import dataclass


class SuiteError(ValueError):
    """A plan the suite cannot run as asked (a batch larger than the data, an output folder of another scale)."""


@dataclass(frozen=True)
class Scale:
    """Sizes of one suite scale: training examples (None: all of Fashion-MNIST's training set less the held-out
    split; 20 000 generated sequences), examples of the held-out and target splits, epochs of budget, evaluation
    points per run, the width multiplier of the tasks in `narrowed` (the others keep their full width), grid
    settings tried per optimizer (the first `grid` of each grid), the cost timing's steps per turn and rounds, and
    what the scale costs (an estimate: per-step and per-evaluation timings of every task at the cpu scale on this
    project's 2-core CPU, 5 measured seeds; the README's "Keras benchmark suite" says how)."""

    name: str
    train: int | None
    evaluation: int
    epochs: int
    evals: int
    width: float
    narrowed: tuple[str, ...]
    grid: int
    cost_steps: int
    cost_rounds: int
    cost: str

    def width_of(self, task: str) -> float:
        """The width multiplier of `task`'s model at this scale."""
        return self.width if task in self.narrowed else 1.0

    @property
    def description(self) -> str:
        """The scale in words, from its fields: '20000 training examples, 5 epochs, 20 evaluations per run, ...'."""
        examples = "all of Fashion-MNIST's training set" if self.train is None else f"{self.train} training examples"
        models = ("every model" if set(self.narrowed) == set(TASK_NAMES) else " and ".join(self.narrowed)) + (
            " at full width" if self.width == 1 else f" at width {self.width:g}")
        return (f"{examples}, {self.epochs} epochs, {self.evals} evaluations per run, {models} ({self.cost})")


# name -> what is measured; ERROR_METRIC: the target metric is the error (else the loss)
TASK_DESCRIPTIONS = {
    "mlp": "the README's MLP 784-128-10 on Fashion-MNIST, test error",
    "bn-cnn": "a CNN with BatchNormalization (3×3 conv, 32-32-64-64) on Fashion-MNIST, test error",
    "resnet": "a residual CNN (3 blocks, 16-32-64, BatchNormalization) on Fashion-MNIST, test error",
    "autoencoder": "the deep autoencoder 784-1000-500-250-30 and back (tanh) on Fashion-MNIST, training loss (BCE)",
    "sequence": "Embedding + Conv1D on generated sequences labelled by which key bigrams occur, test error",
}
TASK_NAMES = tuple(TASK_DESCRIPTIONS)
ERROR_METRIC = {name: name != "autoencoder" for name in TASK_NAMES}

SCALES = {
    "full": Scale("full", None, 5000, 10, 40, 1.0, TASK_NAMES, 4, 20, 5, "about 40 hours of a 2-core CPU at 5 seeds"),
    "cpu": Scale("cpu", 20_000, 5000, 5, 20, 0.5, ("bn-cnn", "resnet"), 4, 20, 5,
                 "about 6 hours of a 2-core CPU at 5 seeds"),
    "tiny": Scale("tiny", 256, 128, 2, 4, 0.125, TASK_NAMES, 1, 10, 1, "seconds, for tests"),
}
DEFAULT_BATCHES = {"full": (128, 1024), "cpu": (128, 1024), "tiny": (32,)}

# Every grid has GRID_SIZE settings: K-FAC's damping × KL bound c (its learning rate, η_max = 1, does not set its
# step), the others' learning rate (Keras defaults otherwise; SGD with Nesterov momentum 0.9).
GRID_SIZE = 4
_KFAC_GRID = [{"damping": d, "kl_clip": c} for d in (0.1, 1.0) for c in (0.01, 0.001)]
# K-FAC's arms, each `keras.KFAC` with these settings (and its grid setting, whose c holds at every batch): "kfac"
# with statistics every step and inverses every 10 (`EVERY_STEP`: the Keras defaults before this suite chose them),
# and the variants, options of the suite (`--ekfac`, `--amortised`, `--defaults`) on K-FAC's grid; K-FAC defaults is
# not tuned (its one setting: the Keras defaults, whatever they are), the arm the README's targets name.
EVERY_STEP: dict[str, object] = {"stats_every": 1, "inverse_every": 10, "kl_clip_batch": None}
AMORTISED: dict[str, object] = {"stats_every": 10, "inverse_every": 50, "kl_clip_batch": None}
VARIANTS: dict[str, dict[str, object]] = {"ekfac": {"eigenvalue_correction": True, **AMORTISED},
                                          "kfac-amortised": AMORTISED, "kfac-defaults": {}}
KFAC_ARMS: dict[str, dict[str, object]] = {"kfac": EVERY_STEP, **VARIANTS}
UNTUNED = ("kfac-defaults",)
GRIDS: dict[str, list[dict[str, float]]] = {
    "kfac": _KFAC_GRID,
    "adamw": [{"learning_rate": lr} for lr in (3e-4, 1e-3, 3e-3, 1e-2)],
    "muon": [{"learning_rate": lr} for lr in (1e-3, 3e-3, 1e-2, 3e-2)],
    "sgd": [{"learning_rate": lr} for lr in (0.01, 0.03, 0.1, 0.3)],
    **{name: [{}] if name in UNTUNED else _KFAC_GRID for name in VARIANTS},
}
OPTIMIZERS = tuple(GRIDS)
DEFAULT_OPTIMIZERS = ("kfac", "adamw", "muon", "sgd")  # what the suite runs unless asked for a variant too
SUBJECTS = ("kfac", *VARIANTS)  # each compared with the best-tuned of the OPPONENTS
OPPONENTS = ("adamw", "muon", "sgd")
LABELS = {"kfac": "K-FAC every step", "adamw": "AdamW", "muon": "Muon", "sgd": "SGD+Nesterov", "ekfac": "EKFAC",
          "kfac-amortised": "K-FAC amortised", "kfac-defaults": "K-FAC defaults"}


def grid(optimizer: str, scale: Scale) -> list[dict[str, float]]:
    """The settings tried for `optimizer` at `scale`: the first `scale.grid` of its grid."""
    return GRIDS[optimizer][:scale.grid]


def setting_text(setting: dict[str, float]) -> str:
    """'damping=0.1 kl_clip=0.01': a setting as the CSV stores it."""
    return " ".join(f"{key}={value:g}" for key, value in setting.items())


def parse_setting(text: str) -> dict[str, float]:
    """The inverse of setting_text."""
    return {key: float(value) for key, value in (item.split("=") for item in text.split())}


def budget(train_examples: int, batch: int, scale: Scale) -> int:
    """Steps of every run of a task and batch size: `scale.epochs` epochs of drop-remainder batches."""
    if batch > train_examples:
        raise SuiteError(f"batch {batch} is larger than the {train_examples} training examples at scale "
                         f"{scale.name!r}")
    return scale.epochs * (train_examples // batch)


def evaluation_steps(steps: int, evals: int) -> list[int]:
    """The steps after which a run of `steps` steps is evaluated (besides step 0): half of `evals` evenly spaced to
    the budget, the other half geometrically spaced from step 1 to the first of those, so that the early, steep part
    of a curve is resolved as finely, relative to the step, as its later part; distinct steps, the last the budget."""
    even = max(1, evals // 2)
    linear = [steps * k / even for k in range(1, even + 1)]
    early = evals - even
    geometric = [linear[0] ** (k / (early - 1)) for k in range(early)] if early > 1 else []
    return sorted({min(steps, max(1, round(step))) for step in (*geometric, *linear)})

