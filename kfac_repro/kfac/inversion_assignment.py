"""Which worker inverts which Fisher block: greedy longest-first on the cubic cost of the blocks' factors, as
KAISA (Pauloski et al. 2021) assigns layers, so that every worker does about 1/N of the inversion work.

Cost of a block = Σ over its factors of d³ for a d × d factor (an eigendecomposition or Cholesky is O(d³)), c·d³
for c stacked d × d factors (depthwise convolutions: one per channel) and d for a length-d diagonal factor. Pure
Python, no TensorFlow: the assignment is the same on every worker.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence


def block_cost(factor_shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Σ c·d³ over (c stacked) d × d factors plus Σ d over diagonal (1-D) ones."""
    return float(sum(math.prod(shape[:-2]) * shape[-1] ** 3 if len(shape) >= 2 else (shape[0] if shape else 1)
                     for shape in factor_shapes.values()))


def assign_blocks(costs: Sequence[float], workers: int) -> list[int]:
    """The worker (0 … workers−1) of each block: blocks in decreasing cost, each to the least-loaded worker
    so far (ties: the lowest index, then the first block), so every worker computes the same assignment."""
    if workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, found {workers}")
    owners = [0] * len(costs)
    loads = [(0.0, worker) for worker in range(workers)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, worker = heapq.heappop(loads)
        owners[index] = worker
        heapq.heappush(loads, (load + costs[index], worker))
    return owners


def worker_loads(costs: Sequence[float], owners: Sequence[int], workers: int) -> list[float]:
    """The summed cost of each worker's blocks."""
    loads = [0.0] * workers
    for cost, owner in zip(costs, owners, strict=True):
        loads[owner] += cost
    return loads
