"""The Keras suite's resumable driver: per task and batch size, the tuning runs (every optimizer's grid on seed 0),
the measured runs (each optimizer's selected setting on seeds 1..n), then the per-step cost in turns; each result is
written to OUT/runs.csv or OUT/costs.csv as soon as it is done, and a rerun skips what those files hold. At the end
OUT/reached.csv (each measured run's steps and seconds to each target), OUT/suite.csv (results.summarise),
OUT/suite.png and OUT/suite.md are written from whatever is done.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfac_repro.benchmarks.keras_suite.plan import (
    DEFAULT_OPTIMIZERS,
    Scale,
    SuiteError,
    grid,
    parse_setting,
    setting_text,
)
from kfac_repro.benchmarks.keras_suite.results import (
    COST_FIELDS,
    REACHED_FIELDS,
    RUN_FIELDS,
    SUITE_FIELDS,
    Row,
    markdown_table,
    number_text,
    per_run,
    plot,
    read_rows,
    select,
    summarise,
    write_rows,
)

TUNING_SEED = 0


@dataclass(frozen=True)
class Plan:
    """What to run: tasks, batch sizes, measured seeds (1..seeds), the scale, the output folder, the command
    line quoted in the README table, the optimizers (plan.OPTIMIZERS), and whether to time the per-step
    costs (False: train only, and leave the timing to a later call on an otherwise idle machine)."""

    tasks: Sequence[str]
    batches: Sequence[int]
    seeds: int
    scale: Scale
    out: Path
    command: str
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS
    timing: bool = True

    def jobs_per_pair(self) -> int:
        """Runs and cost timings of one task and batch size."""
        return (sum(len(grid(o, self.scale)) for o in self.optimizers) + len(self.optimizers) * self.seeds
                + self.timing)

    def jobs(self) -> int:
        """Runs and cost timings in all."""
        return self.jobs_per_pair() * len(self.tasks) * len(self.batches)


Pair = tuple[str, str]  # (task, batch)


class _Progress:
    """'[k/N] what: 12 s; ETA 3 min' lines. The ETA sums, over the tasks and batch sizes, the jobs left times the
    mean time of this session's jobs of that task and batch size, or of all its jobs where none of that pair ran
    yet (then it says so: the tasks differ in cost several times over)."""

    def __init__(self, left: dict[Pair, int], done: int, echo: Callable[[str], None]):
        self.left, self.echo = left, echo
        self.done, self.total = done, done + sum(left.values())
        self.spent: dict[Pair, list[float]] = {}

    def finish(self, what: str, seconds: float, pair: Pair) -> None:
        self.done += 1
        self.left[pair] -= 1
        self.spent.setdefault(pair, []).append(seconds)
        every = [s for times in self.spent.values() for s in times]
        unseen = any(count and pair not in self.spent for pair, count in self.left.items())
        left = sum(count * statistics.fmean(self.spent.get(pair, every)) for pair, count in self.left.items())
        self.echo(f"[{self.done}/{self.total}] {what}: {seconds:.0f} s; ETA {_duration(left)}"
                  + (" (tasks not run yet taken at this session's mean job)" if unseen else ""))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _run_key(row: Row) -> tuple[str, ...]:
    return tuple(row[k] for k in ("phase", "task", "batch", "optimizer", "setting", "seed"))


def _check_scale(rows: Sequence[Row], scale: Scale, path: Path) -> None:
    other = {r["scale"] for r in rows} - {scale.name}
    if other:
        raise SuiteError(f"{path} holds results of scale {sorted(other)[0]!r}, not {scale.name!r}: give another "
                         "--out")


def run_suite(plan: Plan, echo: Callable[[str], None]) -> list[Row]:
    """Run what `plan.out` does not hold yet, then write the summary files; returns the summary rows."""
    runs_path, costs_path = plan.out / "runs.csv", plan.out / "costs.csv"
    runs, costs = read_rows(runs_path), read_rows(costs_path)
    _check_scale(runs, plan.scale, runs_path)
    _check_scale(costs, plan.scale, costs_path)
    from kfac_repro.benchmarks.keras_suite.models import train_run

    done_runs = {_run_key(r) for r in runs}
    timed: dict[tuple[str, str], set[str]] = {}
    for r in costs:
        timed.setdefault((r["task"], r["batch"]), set()).add(r["optimizer"])
    done_costs = {pair for pair, optimizers in timed.items() if optimizers >= set(plan.optimizers)}
    finished = Counter(key[1:3] for key in done_runs & _wanted(plan, runs))  # (task, batch) of each run done
    left = {(t, str(b)): plan.jobs_per_pair() - finished[t, str(b)] - plan.timing * ((t, str(b)) in done_costs)
            for t in plan.tasks for b in plan.batches}
    progress = _Progress(left, plan.jobs() - sum(left.values()), echo)
    echo(f"{progress.total} jobs ({progress.done} done in {plan.out}); scale {plan.scale.name}")
    for task in plan.tasks:
        for batch in plan.batches:
            for phase, optimizer, setting, seed in _runs_of(plan, task, batch, runs):
                key = (phase, task, str(batch), optimizer, setting, str(seed))
                if key in done_runs:
                    continue
                start = time.perf_counter()
                curve = train_run(task, optimizer, parse_setting(setting), seed, batch, plan.scale,
                                  selecting=phase == "tune")
                runs.append({"scale": plan.scale.name, "phase": phase, "task": task, "batch": str(batch),
                             "optimizer": optimizer, "setting": setting, "seed": str(seed),
                             "budget": str(curve.budget),
                             "steps": number_text(curve.steps), "selection": number_text(curve.selection),
                             "target": number_text(curve.target), "train_seconds": f"{curve.seconds:.2f}"})
                write_rows(runs_path, RUN_FIELDS, runs)
                done_runs.add(key)
                progress.finish(f"{task} b{batch} {phase} {optimizer} {setting} seed {seed} → "
                                f"{curve.target[-1]:.4f}", time.perf_counter() - start, (task, str(batch)))
            if plan.timing and (task, str(batch)) not in done_costs:
                start = time.perf_counter()
                costs = [r for r in costs if (r["task"], r["batch"]) != (task, str(batch))]  # all timed in turns
                costs += _cost_rows(plan, task, batch, runs, echo)
                write_rows(costs_path, COST_FIELDS, costs)
                done_costs.add((task, str(batch)))
                progress.finish(f"{task} b{batch} cost in turns", time.perf_counter() - start, (task, str(batch)))
    suite = summarise(runs, costs)
    write_rows(plan.out / "suite.csv", SUITE_FIELDS, suite)
    write_rows(plan.out / "reached.csv", REACHED_FIELDS, per_run(runs, costs))
    (plan.out / "suite.md").write_text(markdown_table(suite, plan.command))
    if suite:
        plot(suite, plan.out / "suite.png")
    return suite


def _cost_rows(plan: Plan, task: str, batch: int, runs: list[Row], echo: Callable[[str], None]) -> list[Row]:
    """The cost timing of a task and batch size (models.time_steps) with the selected settings."""
    from kfac_repro.benchmarks.keras_suite.models import time_steps

    chosen = {o: select(runs, task, batch, o) or "" for o in plan.optimizers}
    load = os.getloadavg()[0]
    seconds, steps = time_steps(task, {o: parse_setting(s) for o, s in chosen.items()}, batch, plan.scale,
                                progress=lambda what: echo(f"  timing {task} b{batch}: {what} ..."))
    return [{"scale": plan.scale.name, "task": task, "batch": str(batch), "optimizer": o, "setting": chosen[o],
             "ms_per_step": f"{1000 * seconds[o]:.4g}", "cost_steps": str(steps),
             "rounds": str(plan.scale.cost_rounds), "load": f"{load:.2f}"} for o in plan.optimizers]


def _runs_of(plan: Plan, task: str, batch: int, runs: list[Row]) -> Iterator[tuple[str, str, str, int]]:
    """(phase, optimizer, setting, seed) of every run of a task and batch size, tuning first; the measured runs'
    settings are selected from `runs` as they stand once the tuning runs are done (a generator: read lazily)."""
    for optimizer in plan.optimizers:
        for setting in grid(optimizer, plan.scale):
            yield "tune", optimizer, setting_text(setting), TUNING_SEED
    for optimizer in plan.optimizers:
        chosen = select(runs, task, batch, optimizer)
        for seed in range(1, plan.seeds + 1):
            yield "final", optimizer, chosen or "", seed


def _wanted(plan: Plan, runs: list[Row]) -> set[tuple[str, ...]]:
    """The keys of the runs the plan holds, as far as `runs` decides the measured runs' settings."""
    keys: set[tuple[str, ...]] = set()
    for task in plan.tasks:
        for batch in plan.batches:
            for phase, optimizer, setting, seed in _runs_of(plan, task, batch, runs):
                keys.add((phase, task, str(batch), optimizer, setting, str(seed)))
    return keys
