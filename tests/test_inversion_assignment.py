"""Dividing the inversion among workers per factor: greedy longest-first on d³ balances the workers' cost, and
computing a block's inverses one part at a time gives exactly the inverses computed together."""

import numpy as np
import pytest

from kfac_repro.kfac.inversion.assignment import assign_work, worker_loads
from kfac_repro.kfac.linalg.inverses import inverse_cost


def test_inverse_cost_is_cubic_in_the_factor_size() -> None:
    assert inverse_cost((10, 10)) == 1000
    assert inverse_cost((50,)) == 50  # a diagonal inverse costs linear time
    assert inverse_cost((8, 9, 9)) == 8 * 729  # one 9×9 inverse per channel


@pytest.mark.parametrize("workers", [2, 3, 4, 8])
def test_each_worker_cost_is_within_ten_percent_of_the_mean(workers: int) -> None:
    rng = np.random.default_rng(0)  # the A and G factors of 60 Kronecker blocks, sizes from 16 to 1024
    costs = [inverse_cost((int(d), int(d))) for d in rng.integers(16, 1025, size=120)]
    owners = assign_work(costs, workers)
    loads = worker_loads(costs, owners, workers)
    mean = sum(costs) / workers
    assert sorted(set(owners)) == list(range(workers))
    assert max(abs(load - mean) for load in loads) <= 0.1 * mean, [load / mean for load in loads]


def test_a_block_heavier_than_one_share_is_split_across_workers_by_its_factors() -> None:
    # one block of two 1000-factors outweighs a quarter of the work: as a whole block its worker would carry
    # 2e9 of 4.8e9 (1.67× the mean); per factor the four workers carry 1e9 or 1.2e9 each
    blocks = [(1000, 1000)] + [(500, 500)] * 6
    per_block = [inverse_cost((a, a)) + inverse_cost((g, g)) for a, g in blocks]
    per_factor = [inverse_cost((d, d)) for block in blocks for d in block]
    whole = worker_loads(per_block, assign_work(per_block, 4), 4)
    split = worker_loads(per_factor, assign_work(per_factor, 4), 4)
    mean = sum(per_factor) / 4
    assert max(whole) / mean == pytest.approx(2e9 / mean)
    assert max(split) / mean <= 1.0 + 1e-9 + 0.2e9 / mean


def test_assignment_is_greedy_longest_first_and_deterministic() -> None:
    costs = [5.0, 9.0, 4.0, 9.0, 1.0]
    # 9 → w0, 9 → w1, 5 → w0 (tie: lowest index), 4 → w1, 1 → w1 (13 vs 14)
    assert assign_work(costs, 2) == [0, 0, 1, 1, 1]
    assert assign_work(costs, 1) == [0] * 5
    with pytest.raises(ValueError, match="workers: expected an integer >= 1"):
        assign_work(costs, 0)
