"""Where the factor decompositions run and on how many threads.

Host (the default on a CPU): LAPACK (`linalg.lapack`, without the GIL) on `threads` cores, by default all of them, or
`inversion_threads` with TensorFlow's intra-op pool shrunk by as many cores (`reserve_inversion_cores`, before
TensorFlow starts) so that the two do not fight over cores. `run_parts` spreads one refresh's parts over those
cores. Accelerator: tf.linalg Cholesky on a TensorFlow device, chosen per thread with `linalg.device.on_device`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import ThreadpoolController

T = TypeVar("T")

ALONE_FROM_COST = 2048.0**3
"""Parts costing at least this (`linalg.inverses.inverse_cost`: a 2048 × 2048 inverse) run one at a time on
every BLAS thread. Measured on this project's 2-core machine (potrf + potri, OpenBLAS's threads sleeping between
calls, see `linalg.lapack`): two BLAS threads take a 4097-wide factor 1.8× and a 2049-wide one 1.65× as fast as one, a
1025-wide one 1.2× and a 513-wide one 0.9×, where two parts side by side on one BLAS thread each go 2× as fast."""

def run_parts(parts: Sequence[tuple[float, Callable[[], T]]], threads: int) -> list[T]:
    """The result of each (cost, computation) part, in order. Parts costing at least `ALONE_FROM_COST` run first,
    one at a time on `threads` BLAS threads; the others on `threads` Python threads at one BLAS thread each,
    costliest first. A part's BLAS threads depend on its cost alone, not on the other parts of the refresh, so a
    worker computing a share of the parts gets the bits a single worker gets. The BLAS limit is process-wide
    (OpenBLAS's count) while the parts run; TensorFlow's kernels do not use it."""
    order = sorted(range(len(parts)), key=lambda index: -parts[index][0])
    alone = [index for index in order if parts[index][0] >= ALONE_FROM_COST]
    side_by_side = [index for index in order if parts[index][0] < ALONE_FROM_COST]
    results: dict[int, T] = {}
    if alone:
        with _blas().limit(limits=threads, user_api="blas"):
            results.update((index, parts[index][1]()) for index in alone)
    if side_by_side:
        with _blas().limit(limits=1, user_api="blas"):
            workers = min(threads, len(side_by_side))
            if workers == 1:
                results.update((index, parts[index][1]()) for index in side_by_side)
            else:
                pool = ThreadPoolExecutor(workers, thread_name_prefix="kfac-inversion")
                try:
                    futures = {index: pool.submit(parts[index][1]) for index in side_by_side}
                    results.update((index, future.result()) for index, future in futures.items())
                finally:  # a failed part or an interrupt (Ctrl-C) drops the parts not yet started
                    pool.shutdown(wait=True, cancel_futures=True)
    return [results[index] for index in range(len(parts))]


def host_threads(inversion_threads: int | None) -> int:
    """The cores a refresh computes on: `inversion_threads`, else all of them."""
    return inversion_threads or os.cpu_count() or 1


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def reserve_inversion_cores(threads: int) -> int:
    """Size TensorFlow's intra-op pool to the cores left after `threads` for inversion (at least 1); call it
    before TensorFlow runs anything (later, the pools stay as they are). Returns TensorFlow's thread count
(0: TensorFlow's default, all cores)."""
    import tensorflow as tf

    left = max(1, (os.cpu_count() or 1) - threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(left)
        tf.config.threading.set_inter_op_parallelism_threads(left)
    except RuntimeError:  # TensorFlow already started in this process (e.g. several arms in one process)
        return tf.config.threading.get_intra_op_parallelism_threads()
    return left
