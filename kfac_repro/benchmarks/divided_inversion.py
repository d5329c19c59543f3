"""Inversion divided among N worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy), on the reduced AlexNet
of the cpu profile (alexnet-bs2048, K-FAC arm: doubly-factored fc6) with seeded random factors.

Each worker computes its share of the damped inverses (assigned per factor) with one LAPACK thread and reports
the median over `repeats` of its compute time (wall and thread CPU seconds) and of the sharing all-reduce. The
workers compute in turns, one at a time between barriers, so that on a machine with fewer cores than workers no
worker's time includes another's (the assignment, not the machine, is what is measured);
`measure` launches the workers and collects their reports. Run per worker as
`python -m kfac_repro.benchmarks.divided_inversion --out FILE` under TF_CONFIG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kfac_repro.benchmarks.step_time import timed

if TYPE_CHECKING:
    import tensorflow as tf

    from kfac_repro.kfac import KFAC

SPEC, PROFILE, ARM = "alexnet-bs2048", "cpu", "kfac"


@dataclass(frozen=True)
class WorkerTiming:
    """One worker's share: its parts ("<block>/<inverse>"), their Σd³ cost, and median seconds of computing and
    of sharing."""

    worker: int
    parts: list[str]
    cost: float
    compute_seconds: float
    compute_cpu_seconds: float
    share_seconds: float


def measure(workers: int, repeats: int = 3, emit: Callable[[str], None] = lambda _: None) -> list[WorkerTiming]:
    """Launch `workers` local processes and return each one's timing (a single worker: one process, no cluster)."""
    from kfac_repro.distribute.launcher import run_local_workers

    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        command = [sys.executable, "-m", "kfac_repro.benchmarks.divided_inversion", "--repeats", str(repeats)]
        run_local_workers(lambda spec: [*command, "--out", str(out / f"{spec.index}.json")], workers, emit=emit,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2"})
        return [WorkerTiming(**json.loads((out / f"{i}.json").read_text())) for i in range(workers)]


def _reduced_alexnet_kfac(strategy: tf.distribute.Strategy | None = None) -> KFAC:
    """K-FAC of the cpu profile's reduced AlexNet (sync inversion, one LAPACK thread) with seeded random PSD
    factors, built under `strategy` (default: this process's)."""
    import dataclasses

    import numpy as np

    from kfac_repro.distribute.strategy import make_strategy
    from kfac_repro.kfac import KFAC, KFACConfig
    from kfac_repro.models.registry import build_model
    from kfac_repro.runner.experiment import optimizer_config
    from kfac_repro.specs import load_spec

    arm = load_spec(SPEC, PROFILE, arms=[ARM]).arms[ARM]
    _, base = optimizer_config(arm.optimizer, seed=0)
    assert isinstance(base, KFACConfig)
    config = dataclasses.replace(base, inversion="sync", inversion_threads=1)
    size, classes = int(arm.model["input_size"]), int(arm.model["num_classes"])
    knobs = {k: v for k, v in arm.model.items() if k not in ("name", "input_size", "num_classes")}
    strategy = strategy or make_strategy()
    with strategy.scope():
        model = build_model(arm.model["name"], input_shape=(size, size, 1), num_classes=classes, **knobs)
        optimizer = KFAC(model, config)
    rng = np.random.default_rng(0)
    for block in optimizer.blocks:
        for variable in block.factors.values():
            dim = variable.shape[0]
            root = rng.standard_normal((dim, dim), dtype=np.float32) if len(variable.shape) == 2 else None
            variable.assign(root @ root.T / dim if root is not None else rng.random(dim, dtype=np.float32))
    return optimizer


def shares_alone(counts: Sequence[int], repeats: int = 3) -> dict[int, list[float]]:
    """N → the median seconds of each worker's share of the assignment for N workers, every share computed alone in
    this process on one LAPACK thread: the division of the work, free of workers sharing cores on a small machine."""
    import numpy as np

    from kfac_repro.kfac.inversion.assignment import assign_work

    optimizer = _reduced_alexnet_kfac()
    inversion = optimizer.inversion
    arrays = {b.name: {n: np.asarray(v.numpy()) for n, v in b.factors.items()} for b in optimizer.blocks}
    result: dict[int, list[float]] = {}
    for count in counts:
        owners = assign_work(inversion.costs, count)
        result[count] = []
        for worker in range(count):
            mine = [(block, name) for (block, name), owner in zip(inversion.parts, owners, strict=True)
                    if owner == worker]

            def compute(parts: list = mine) -> None:
                for block, name in parts:
                    block.compute_inverse(arrays[block.name], inversion.damping, inversion.dtype, (name,))

            result[count].append(timed(compute, repeats, 1)[0])
    optimizer.close()
    return result


def _worker(out: Path, repeats: int) -> None:
    import dataclasses

    from kfac_repro.distribute.cluster import cluster_from_environment
    from kfac_repro.distribute.strategy import make_strategy

    strategy = make_strategy()
    optimizer = _reduced_alexnet_kfac(strategy)
    inversion = optimizer.inversion
    factors = {b.name: b.factors for b in optimizer.blocks}
    cluster = cluster_from_environment()
    index, workers = (cluster.index, len(cluster.workers)) if cluster else (0, 1)
    barrier = _barrier(strategy)
    walls, cpus, shares = [], [], []
    for _ in range(repeats):
        for turn in range(workers):
            barrier()
            if turn == index:
                cpu = time.thread_time()
                computed = inversion.compute(factors, 0)
                cpus.append(time.thread_time() - cpu)
                walls.append(computed.seconds)
        barrier()
        start = time.perf_counter()
        inversion.install(computed)
        shares.append(time.perf_counter() - start)
    timing = WorkerTiming(
        worker=index, parts=sorted(inversion.local_parts()), cost=inversion.local_cost(),
        compute_seconds=statistics.median(walls), compute_cpu_seconds=statistics.median(cpus),
        share_seconds=statistics.median(shares))
    out.write_text(json.dumps(dataclasses.asdict(timing)))


def _barrier(strategy: tf.distribute.Strategy) -> Callable[[], object]:
    """A collective that returns once every worker has called it (a one-number all-reduce)."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1:
        return lambda: None
    return tf.function(lambda: strategy.run(
        lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1.0))), autograph=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _worker(args.out, args.repeats)


if __name__ == "__main__":
    main()
