"""Whether a cost sitting (one `bench arms` table) can be used: its own consistency checks, and which earlier
sittings may be judged together with it (the same commit on the same CPU; another CPU is another machine).

Checks, each named in the refusal:
- *sgd-update*: an SGD arm's update (a gradient pass, momentum and the weight update) takes SGD_UPDATE_RANGE times
  its own gradient pass on the same batch; outside it the two timings do not measure one machine's steady state.
- *same-pass*: two arms whose models and batches are the same ran the same gradient pass; their timings of it
  differ by at most SAME_PASS_TOLERANCE of the smaller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kfac_repro.benchmarks.arm_costs.table import ArmCosts, sitting_commit, sitting_cpu

SGD_UPDATE_RANGE = (0.9, 1.2)
SAME_PASS_TOLERANCE = 0.15


def failed_checks(costs: Mapping[str, ArmCosts], same_pass: Sequence[tuple[str, str]],
                  sgd_arms: Sequence[str]) -> list[str]:
    """Each failed check of the module docstring, in words naming the arms; [] for a usable sitting. `same_pass`:
    pairs of arms with the same model and batch; `sgd_arms`: the arms trained with SGD."""
    failures = []
    low, high = SGD_UPDATE_RANGE
    for arm in sgd_arms:
        update = costs[arm].get("update") if arm in costs else None
        gradient = costs[arm].get("gradient_pass", update.examples) if update else None
        if update is None or gradient is None or not gradient.value > 0:
            continue
        ratio = update.value / gradient.value
        if not low <= ratio <= high:
            failures.append(f"sgd-update: {arm}'s update {update.value:.4f} s is {ratio:.2f}× its gradient pass "
                            f"{gradient.value:.4f} s on {update.examples} examples (expected {low}–{high}×)")
    for first, second in same_pass:
        passes = [costs[a].get("gradient_pass", _batch(costs[a])) if a in costs else None for a in (first, second)]
        if passes[0] is None or passes[1] is None:
            continue
        a, b = passes[0].value, passes[1].value
        if abs(a - b) > SAME_PASS_TOLERANCE * min(a, b):
            failures.append(f"same-pass: {first} and {second} ran the same gradient pass ({passes[0].examples} "
                            f"examples) in {a:.4f} s and {b:.4f} s, {abs(a - b) / min(a, b):.0%} apart (at most "
                            f"{SAME_PASS_TOLERANCE:.0%})")
    return failures


def _batch(cost: ArmCosts) -> int | None:
    update = cost.get("update")
    return update.examples if update else None


def comparable(costs: Mapping[str, ArmCosts], earlier: Mapping[str, ArmCosts]) -> bool:
    """Whether an earlier sitting is one of the same commit on the same CPU as `costs` (and so checks it)."""
    return bool(costs) and sitting_commit(earlier) == sitting_commit(costs) and sitting_cpu(earlier) == \
        sitting_cpu(costs)
