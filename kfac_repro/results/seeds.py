"""Statistics over the seeds of an arm: mean curves with a band (the range over seeds), per-seed scalars with their
mean and range, and the number of updates each seed needed to reach a target."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from kfac_repro.results.runs import Run


@dataclass(frozen=True)
class Spread:
    """Mean and range (min, max) of one quantity over seeds; `n` seeds. A seed without a value (a target never
    reached) counts as +∞: the mean and the upper end are then infinite."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3, unit: str = "") -> str:
        if self.n == 0:
            return "—"
        value = f"{self.mean:.{digits}f}"
        return value + unit if self.n == 1 else f"{value} [{self.low:.{digits}f}, {self.high:.{digits}f}]{unit}"

    def scaled(self, factor: float) -> Spread:
        return Spread(self.mean * factor, self.low * factor, self.high * factor, self.n)


def spread(values: Sequence[float]) -> Spread:
    """The Spread of per-seed values (NaN: not reached, counted as +∞)."""
    finite = [math.inf if math.isnan(v) else float(v) for v in values]
    if not finite:
        return Spread(math.nan, math.nan, math.nan, 0)
    return Spread(sum(finite) / len(finite), min(finite), max(finite), len(finite))


def per_seed(runs: Sequence[Run], measure: Callable[[Run], float]) -> Spread:
    return spread([measure(run) for run in runs])


def seeds_text(runs: Sequence[Run], values: Sequence[float], digits: int = 0) -> str:
    """The Spread of per-seed `values` (one per run), then each seed's own value where there are several:
    '347 [220, 420] (seeds 0, 1, 2: 400, 420, 220)' (inf: not reached)."""
    text = spread(values).text(digits)
    if len(runs) < 2:
        return text
    own = ", ".join("inf" if math.isnan(v) else f"{v:.{digits}f}" for v in values)
    return f"{text} (seeds {', '.join(str(run.seed) for run in runs)}: {own})"


def updates_to_target(run: Run, column: str, target: float) -> float:
    """Updates at the first logged row where `column` (e.g. val_error, train_loss) is at or below the target;
    NaN if never."""
    rows = run.metrics.dropna(subset=[column])
    reached = rows[rows[column] <= target + 1e-12]
    return float(reached["step"].iloc[0]) if len(reached) else math.nan


def best(run: Run, column: str) -> float:
    values = run.metrics[column].dropna()
    return float(values.min()) if len(values) else math.nan


def final(run: Run, column: str) -> float:
    values = run.metrics[column].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


TAIL = 0.2
FLAT = 0.05


def late_share(run: Run, column: str = "train_loss", tail: float = TAIL) -> float:
    """How much of a run's decrease of `column` came in its last `tail` of updates: (m₁ − m₂) / (first − m₂), with
    m₂ the mean over steps in ((1 − tail)·T, T] and m₁ over ((1 − 2·tail)·T, (1 − tail)·T] (window means, as
    single logged values are noisy); T the last step. Below FLAT the curve has flattened; NaN without a decrease."""
    rows = run.metrics.dropna(subset=[column])
    if len(rows) < 3:
        return math.nan
    last_step = float(rows["step"].iloc[-1])
    late = rows[rows["step"] > (1 - tail) * last_step][column].mean()
    before = rows[(rows["step"] > (1 - 2 * tail) * last_step) & (rows["step"] <= (1 - tail) * last_step)][column]
    decrease = float(rows[column].iloc[0]) - late
    if not len(before) or not decrease > 0:
        return math.nan
    return float((before.mean() - late) / decrease)


def capped_share(run: Run) -> float:
    """The share of a K-FAC run's logged updates whose step size η = min(η_max, √(c / vᵀg)) (Eq. 14) was the cap
    η_max rather than the KL bound; NaN for a run that logs no step size (SGD)."""
    if run.method != "kfac" or "step_size" not in run.metrics or "learning_rate" not in run.metrics:
        return math.nan
    rows = run.metrics.dropna(subset=["step_size", "learning_rate"])
    if not len(rows):
        return math.nan
    return float((rows["step_size"] >= 0.999 * rows["learning_rate"]).mean())


def late_progress(runs: Sequence[Run]) -> str:
    """`late_share` of the training loss over seeds, in per cent: flat within ±FLAT in every seed, **still falling**
    when some seed's share reaches FLAT, else **rising** (some seed's loss climbed by FLAT of its decrease or more
    in its last stretch); a dash when a seed's loss did not decrease (its share is undefined, and `spread` would
    count it as +∞)."""
    if any(run.diverged for run in runs):
        return "— (a seed diverged)"
    shares = [late_share(run) for run in runs]
    if not shares or any(math.isnan(value) for value in shares):
        return "—"
    share = spread(shares)
    trend = " **still falling**" if share.high >= FLAT else " **rising**" if share.low <= -FLAT else " flat"
    return share.scaled(100).text(1, "%") + trend


def band(runs: Sequence[Run], x: str, column: str) -> pd.DataFrame:
    """Columns x, mean, low, high: `column` at every step that all seeds logged it, x averaged over seeds at that
    step (steps: the same for every seed of an arm; seconds: each seed's own)."""
    frames = [run.metrics.dropna(subset=[column])[["step", x, column] if x != "step" else ["step", column]]
              for run in runs]
    joined = pd.concat([f.assign(seed=i) for i, f in enumerate(frames)])
    counts = joined.groupby("step")[column].count()
    common = counts[counts == len(runs)].index
    grouped = joined[joined["step"].isin(common)].groupby("step")
    out = pd.DataFrame({"mean": grouped[column].mean(), "low": grouped[column].min(),
                        "high": grouped[column].max()})
    out.insert(0, "x", grouped[x].mean() if x != "step" else out.index.to_series())
    return out.reset_index(drop=True)
