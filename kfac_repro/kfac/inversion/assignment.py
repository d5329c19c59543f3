"""Which worker computes which damped inverse: greedy longest-first on cubic cost, as KAISA (Pauloski et al.
2021) assigns layers, so that every worker does about 1/N of the inversion work.

The unit of work is one inverse variable of a block (one factor's damped inverse), not the whole block: the
inverses of a block's factors are independent once the damping split π is known (from traces, which every worker
has), and one large factor (a reduced AlexNet's fc6 input factor) alone can outweigh 1/N of the total.
Cost of a d × d inverse (`linalg.inverses.inverse_cost`): d³ (Cholesky potrf d³/3, then potri 2d³/3); c·d³ for
c stacked d × d ones (depthwise convolutions, one per channel); d for a length-d diagonal one. A block whose refresh
keeps a Cholesky factor instead of an inverse counts d³/3 for it (`FisherBlock.inverse_costs`). Pure Python, no
TensorFlow: the assignment is the same on every worker.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def assign_work(costs: Sequence[float], workers: int) -> list[int]:
    """The worker (0 … workers−1) of each unit of work: units in decreasing cost, each to the least-loaded
    worker so far (ties: the lowest index, then the first unit), so every worker computes the same assignment."""
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
    """The summed cost of each worker's units."""
    loads = [0.0] * workers
    for cost, owner in zip(costs, owners, strict=True):
        loads[owner] += cost
    return loads
