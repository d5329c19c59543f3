"""Targets along the curves: several levels of a metric (lower is better) that every run of the compared arms
reaches, from the steep part of the curves to the common plateau, and each seed's updates to each level.

With s the median over runs of the first logged value and w the worst best value over runs (every run reaches
w), the targets are s + f·(w − s) for f in FRACTIONS: 80% of the way to w (steep), 90%, 95% and w itself.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from kfac_repro.results.runs import Run
from kfac_repro.results.seeds import best, updates_to_target

FRACTIONS = (0.8, 0.9, 0.95, 1.0)


def targets(runs: Sequence[Run], column: str) -> list[float]:
    """The levels of the module docstring ([] when some run logged no `column`)."""
    firsts, bests = [], []
    for run in runs:
        values = run.metrics[column].dropna()
        if not len(values):
            return []
        firsts.append(float(values.iloc[0]))
        bests.append(best(run, column))
    start, worst = statistics.median(firsts), max(bests)
    return [start + fraction * (worst - start) for fraction in FRACTIONS]


def updates_to(run: Run, column: str, target: float) -> tuple[float, bool]:
    """(updates until `column` first reached `target`, at least 1; False) or, where it never did (a diverged run),
    (the run's budget, True): a censored value, a lower bound."""
    found = updates_to_target(run, column, target)
    if math.isnan(found):
        return float(max(int(run.record.get("steps") or 0), run.last_step, 1)), True
    return max(found, 1.0), False
