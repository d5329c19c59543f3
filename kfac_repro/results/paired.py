"""The verdict rule of every claim: a confidence interval on the mean of paired per-seed effects.

Seed k of every arm shares its initialisation and data order, so arms are compared seed by seed. Each seed gives
one effect d_k (for a speed-up, d_k = log(t_slower,k / t_faster,k), so d > 0 favours the claim); the rule is a
two-sided Student-t interval at CONFIDENCE on the mean of d over the n ≥ MIN_SEEDS paired seeds,
mean ± t_{(1+CONFIDENCE)/2, n−1} · s/√n. With a claimed factor F, the threshold is log(max(THRESHOLD·F, 1)):

- *reproduced* when the interval lies above the threshold;
- *partly* when it lies above 0 but not above the threshold (only possible when THRESHOLD·F > 1);
- *not reproduced* when it lies below 0 (the opposite of the claim);
- *inconclusive* otherwise, or with fewer than MIN_SEEDS paired seeds.

A seed whose effect is censored (an arm never reached the target: its budget stands in, a bound) can only weaken
the verdict it bounds: censoring in the arm claimed faster overstates the effect, so it bars *reproduced* and
*partly*; censoring in the arm claimed slower understates it and bars *not reproduced*.

With one-sided error 5% at each end (CONFIDENCE 0.90), a claim with no effect is called reproduced or partly in
about 5% of repeated experiments, and not reproduced in about 5%; tests/test_paired.py checks both rates
and the power by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NO_DATA = (
    "reproduced", "partly", "not reproduced", "inconclusive", "no data")
CONFIDENCE = 0.90
MIN_SEEDS = 5
THRESHOLD = 0.75
RULE = (f"paired by seed: {CONFIDENCE:.0%} t-interval of the mean per-seed log-ratio (n ≥ {MIN_SEEDS} seeds); "
        f"reproduced: interval above log({THRESHOLD} × claimed factor) (above 0 when that is below 1); partly: above "
        f"0 only; not reproduced: below 0; inconclusive otherwise; a seed censored at its budget only weakens the "
        f"verdict it bounds")


@dataclass(frozen=True)
class Interval:
    """The mean of n paired effects with its CONFIDENCE t-interval [low, high] (NaN where n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    def ratio_text(self) -> str:
        """The interval as a ratio, '1.23× [1.05, 1.44]' (the effects being log-ratios)."""
        if self.n == 0:
            return "—"
        if math.isnan(self.low):
            return f"{math.exp(self.mean):.2f}×"
        return f"{math.exp(self.mean):.2f}× [{math.exp(self.low):.2f}, {math.exp(self.high):.2f}]"

    def difference_text(self, digits: int = 3) -> str:
        """The interval as a difference, '+0.012 [+0.004, +0.020]'."""
        if self.n == 0:
            return "—"
        if math.isnan(self.low):
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def interval(effects: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The Student-t interval of the mean of finite `effects` (one per paired seed)."""
    values = [float(v) for v in effects]
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"paired effects must be finite, got {values}")
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def threshold(claimed: float) -> float:
    """The log-effect the interval must clear for *reproduced*: log(max(THRESHOLD · claimed, 1))."""
    return math.log(max(THRESHOLD * claimed, 1.0))


def verdict(found: Interval, claimed: float, censored_faster: bool = False, censored_slower: bool = False) -> str:
    """The verdict of the module docstring for effects oriented so that > 0 favours the claim."""
    if found.n == 0:
        return NO_DATA
    if found.n < MIN_SEEDS or math.isnan(found.low):
        return INCONCLUSIVE
    if found.low > threshold(claimed) and not censored_faster:
        return REPRODUCED
    if found.low > 0 and not censored_faster:
        return PARTLY
    if found.high < 0 and not censored_slower:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def paired_log_ratios(slower: Mapping[int, float], faster: Mapping[int, float]) -> list[float]:
    """log(slower[s] / faster[s]) for every seed s both arms ran (values > 0), in seed order."""
    return [math.log(slower[s] / faster[s]) for s in sorted(set(slower) & set(faster))]


def combined(verdicts: Sequence[str]) -> str:
    """One verdict for several targets: the strongest that holds at every one of them. *Reproduced* where every
    target is; *partly* where every target is reproduced or partly (each interval above 0, as *partly* says);
    *not reproduced* or *no data* where every target is; else inconclusive."""
    found = set(verdicts)
    if not found:
        return NO_DATA
    if len(found) == 1:
        return verdicts[0]
    return PARTLY if found <= {REPRODUCED, PARTLY} else INCONCLUSIVE
