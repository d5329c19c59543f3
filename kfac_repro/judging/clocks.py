"""The two clocks every speed claim is shown on: the measured single-machine clock (`bench arms`' seconds per
update) and the cluster clock modelled from measured components on the layout the paper used for the figure
(benchmarks/arm_costs/cluster_clock.py). Each clock is a function arm → (seconds per update or None, where it came
from)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from kfac_repro.benchmarks.arm_costs.cluster_clock import LABEL, Components, Layout, per_update_seconds
from kfac_repro.benchmarks.arm_costs.table import ArmCosts
from kfac_repro.results.runs import Run

MEASURED, CLUSTER = "measured", "cluster"
BANDWIDTH = 1.25e9  # bytes/second: a 10 Gbit/s link between workers (our choice; the paper states none)

Arms = Mapping[str, Sequence[Run]]
Costs = Mapping[str, ArmCosts]
Seconds = Callable[[str], tuple[float | None, str]]


def components(costs: ArmCosts) -> Components:
    """An arm's measured components as the cluster clock takes them."""
    def seconds(quantity: str) -> float:
        found = costs.get(quantity)
        return found.value if found else 0.0

    passes = {m.examples: m.value for (q, _), m in costs.values.items() if q == "gradient_pass"}
    statistics = costs.get("statistics_pass")
    return Components(passes, seconds("apply"), seconds("inversion"), int(seconds("gradient_bytes")),
                      seconds("statistics_pass"), statistics.examples if statistics else 1,
                      int(seconds("factor_bytes")))


def layout(run: Run, workers: int | None = None) -> Layout:
    """The paper's layout for a run: its workers and batch, its inversion, and its statistics inline on the gradient
    workers (CIFAR-10, no separate statistics batch) or on a dedicated worker (ImageNet: `stats_batch_size` set)."""
    optimizer = run.resolved.get("optimizer") or {}
    kfac = run.method == "kfac"
    statistics = ("worker" if optimizer.get("stats_batch_size") else "inline") if kfac else "none"
    return Layout(workers or int(run.setting("distribution", "workers") or 1),
                  int(run.setting("training", "batch_size") or run.record.get("batch_size", 1)),
                  str(optimizer.get("inversion", "sync")) if kfac else "none", int(optimizer.get("inverse_every") or 1),
                  BANDWIDTH, statistics, int(optimizer.get("stats_every") or 1))


def measured_cost(costs: Costs) -> Seconds:
    """Seconds per update from bench-arms.csv, and a note naming the machine (and whether it was shared)."""

    def seconds(arm: str) -> tuple[float | None, str]:
        if arm not in costs:
            return None, "no cost measured: run `kfac-repro bench arms` for this experiment"
        found, machine = costs[arm].get("update"), costs[arm].machine
        where = f"bench arms on {machine.get('cpu_model') or machine.get('device')}, {machine.get('cpus')} cores"
        if costs[arm].shared:
            where += f", a shared machine ({costs[arm].load}): no verdict"
        return (found.value if found else None), where

    return seconds


def modelled_cost(arms: Arms, costs: Costs, pooled: Sequence[str] = ()) -> Seconds:
    """Per-update seconds of the paper's layout for the arm (cluster clock), from its measured components. With
    `pooled` (two arms that compute the gradient pass, statistics and preconditioning alike and differ only in how
    they invert, C1), those components are the mean of the two arms' timings, so the modelled updates differ only
    where the layouts do."""
    shared: tuple[dict[int, float], float, float] | None = None
    if pooled and all(arm in costs and arm in arms for arm in pooled):
        parts = [components(costs[arm]) for arm in pooled]
        shards = set.intersection(*(set(part.gradient_seconds) for part in parts))
        shared = ({n: float(np.mean([part.gradient_seconds[n] for part in parts])) for n in shards},
                  float(np.mean([part.apply_seconds for part in parts])),
                  float(np.mean([part.statistics_seconds for part in parts])))

    def seconds(arm: str) -> tuple[float | None, str]:
        if arm not in costs or arm not in arms:
            return None, "no components measured: run `kfac-repro bench arms` for this experiment"
        own = components(costs[arm])
        shape = layout(arms[arm][0])
        note = (f"{LABEL}: {shape.workers} worker(s), statistics {shape.statistics}, inversion {shape.inversion}, "
                f"link {BANDWIDTH / 1e9:.2f} GB/s")
        if shared is not None:
            own = Components(shared[0], shared[1], own.inversion_seconds, own.gradient_bytes, shared[2],
                             own.statistics_examples, own.factor_bytes)
            note += ", gradient pass, statistics and apply pooled over both arms"
        if costs[arm].shared:
            note += ", components from a shared machine: no verdict"
        try:
            return per_update_seconds(own, shape), note
        except KeyError as missing:
            return None, str(missing)

    return seconds
