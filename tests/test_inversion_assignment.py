"""Dividing the blocks' inversion among workers: greedy longest-first on Σ d³ balances the workers' cost."""

import numpy as np
import pytest

from kfac_repro.kfac.inversion_assignment import assign_blocks, block_cost, worker_loads


def test_block_cost_is_the_sum_of_cubed_factor_sizes() -> None:
    assert block_cost({"A": (10, 10), "G": (3, 3)}) == 1000 + 27
    assert block_cost({"F": (50,)}) == 50  # a diagonal factor costs linear time
    assert block_cost({"A": (8, 9, 9), "G": (8, 4, 4)}) == 8 * (729 + 64)  # one 9×9 and 4×4 pair per channel


@pytest.mark.parametrize("workers", [2, 3, 4, 8])
def test_each_worker_cost_is_within_ten_percent_of_the_mean(workers: int) -> None:
    rng = np.random.default_rng(0)  # 60 Kronecker blocks with factor sizes from 16 to 1024
    costs = [block_cost({"A": (int(a), int(a)), "G": (int(g), int(g))})
             for a, g in rng.integers(16, 1025, size=(60, 2))]
    owners = assign_blocks(costs, workers)
    loads = worker_loads(costs, owners, workers)
    mean = sum(costs) / workers
    assert sorted(set(owners)) == list(range(workers))
    assert max(abs(load - mean) for load in loads) <= 0.1 * mean, [load / mean for load in loads]


def test_assignment_is_greedy_longest_first_and_deterministic() -> None:
    costs = [5.0, 9.0, 4.0, 9.0, 1.0]
    # 9 → w0, 9 → w1, 5 → w0 (tie: lowest index), 4 → w1, 1 → w1 (13 vs 14)
    assert assign_blocks(costs, 2) == [0, 0, 1, 1, 1]
    assert assign_blocks(costs, 1) == [0] * 5
    with pytest.raises(ValueError, match="workers: expected an integer >= 1"):
        assign_blocks(costs, 0)
