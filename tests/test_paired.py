"""The paired verdict rule (results/paired.py) against scipy's own one-sample t-test, and by simulation: a known
effect is found, and no effect gives a verdict at about the stated error rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kfac_repro.results import paired


def test_interval_matches_scipys_t_interval() -> None:
    effects = [0.31, 0.12, 0.45, 0.22, 0.38, 0.05]
    found = paired.interval(effects)
    low, high = stats.t.interval(0.90, len(effects) - 1, loc=np.mean(effects), scale=stats.sem(effects))
    assert found.n == 6 and math.isclose(found.mean, float(np.mean(effects)))
    assert math.isclose(found.low, low, rel_tol=1e-12) and math.isclose(found.high, high, rel_tol=1e-12)


@pytest.mark.parametrize(("effects", "claimed", "expected"), [
    ([0.70, 0.72, 0.69, 0.71, 0.70], 2.0, paired.REPRODUCED),    # 2.0× on every seed: above log(1.5)
    ([0.20, 0.22, 0.19, 0.21, 0.20], 2.0, paired.PARTLY),        # 1.22×: above 0, below log(1.5)
    ([-0.2, -0.22, -0.19, -0.21, -0.2], 2.0, paired.NOT_REPRODUCED),
    ([0.3, -0.3, 0.2, -0.2, 0.05], 2.0, paired.INCONCLUSIVE),    # the interval spans 0
    ([0.70, 0.72, 0.69, 0.71], 2.0, paired.INCONCLUSIVE),        # four seeds: fewer than MIN_SEEDS
    ([0.05, 0.06, 0.05, 0.06, 0.05], 1.0, paired.REPRODUCED),    # no factor stated: above 0 is enough
    ([], 2.0, paired.NO_DATA),
])
def test_verdicts(effects: list[float], claimed: float, expected: str) -> None:
    assert paired.verdict(paired.interval(effects), claimed) == expected


def test_censoring_weakens_only_the_verdict_it_bounds() -> None:
    ahead = paired.interval([0.70, 0.72, 0.69, 0.71, 0.70])
    behind = paired.interval([-0.70, -0.72, -0.69, -0.71, -0.70])
    assert paired.verdict(ahead, 2.0, censored_slower=True) == paired.REPRODUCED  # the true effect is larger still
    assert paired.verdict(ahead, 2.0, censored_faster=True) == paired.INCONCLUSIVE
    assert paired.verdict(behind, 2.0, censored_faster=True) == paired.NOT_REPRODUCED
    assert paired.verdict(behind, 2.0, censored_slower=True) == paired.INCONCLUSIVE


def test_non_finite_effects_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        paired.interval([0.1, math.inf, 0.2])


def _simulated_verdicts(true_ratio: float, claimed: float, seeds: int, trials: int, spread: float) -> dict[str, float]:
    """Share of each verdict over `trials` simulated experiments: per seed, updates to target of the faster arm
    u ~ 300·exp(N(0, 0.3)) (seeds differ a lot), the slower arm's u·true_ratio·exp(N(0, spread)) (paired noise)."""
    rng = np.random.default_rng(20261207)
    counts: dict[str, int] = {}
    for _ in range(trials):
        faster = 300 * np.exp(rng.normal(0, 0.3, seeds))
        slower = faster * true_ratio * np.exp(rng.normal(0, spread, seeds))
        effects = paired.paired_log_ratios(dict(enumerate(slower)), dict(enumerate(faster)))
        found = paired.verdict(paired.interval(effects), claimed)
        counts[found] = counts.get(found, 0) + 1
    return {verdict: count / trials for verdict, count in counts.items()}


def test_a_known_effect_is_found() -> None:
    """A true 2× effect with 15% paired noise per seed is called reproduced (interval above log 1.5) in over 95%
    of experiments with 5 seeds (with 20% noise: about 86%, the rest partly)."""
    shares = _simulated_verdicts(true_ratio=2.0, claimed=2.0, seeds=5, trials=2000, spread=0.15)
    assert shares.get(paired.REPRODUCED, 0) > 0.95 and shares.get(paired.NOT_REPRODUCED, 0) == 0


def test_no_effect_gives_a_verdict_at_the_stated_error_rate() -> None:
    shares = _simulated_verdicts(true_ratio=1.0, claimed=2.0, seeds=5, trials=4000, spread=0.2)
    one_sided = (1 - paired.CONFIDENCE) / 2  # 5%
    favourable = shares.get(paired.REPRODUCED, 0) + shares.get(paired.PARTLY, 0)
    assert shares.get(paired.REPRODUCED, 0) < 0.002  # the threshold log(1.5) is far from a null effect
    assert abs(favourable - one_sided) < 0.012 and abs(shares.get(paired.NOT_REPRODUCED, 0) - one_sided) < 0.012


def test_pairing_sees_an_effect_smaller_than_the_spread_across_seeds() -> None:
    """Seeds differ by ~30% among themselves; a paired 1.3× effect with 5% paired noise is still found, where
    the seed ranges of the two arms overlap (the old rule's 'ranges apart' would call it inconclusive)."""
    shares = _simulated_verdicts(true_ratio=1.3, claimed=1.0, seeds=5, trials=500, spread=0.05)
    assert shares.get(paired.REPRODUCED, 0) > 0.99


def test_several_targets_give_the_strongest_verdict_that_holds_at_each() -> None:
    from kfac_repro.results.paired import INCONCLUSIVE, NO_DATA, NOT_REPRODUCED, PARTLY, REPRODUCED, combined

    assert combined([REPRODUCED] * 4) == REPRODUCED
    assert combined([PARTLY, REPRODUCED, REPRODUCED, PARTLY]) == PARTLY  # above 0 at every target
    assert combined([NOT_REPRODUCED] * 3) == NOT_REPRODUCED
    assert combined([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combined([PARTLY, NOT_REPRODUCED]) == INCONCLUSIVE
    assert combined([]) == NO_DATA
