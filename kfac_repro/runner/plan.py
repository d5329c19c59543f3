"""The plan of `kfac-repro reproduce`, derived from the specs alone: for each spec, the grid search of every arm
that has a grid (one seed per setting), then every arm once per seed (`training.seeds` seeds from
`training.seed`, seed-major), the spec's `tuned` arms with their grid's best settings. Each job's state is read
from the results layout (done, partial: resumed, todo), and its time estimated from the profile's cost table.

The cost table, experiments/costs/<profile>.yaml, holds the only measured costs the plan uses:
`{spec: {arm: {seconds_per_update: s, startup_seconds: t}}}` (a process's start-up, tracing, validation passes and
test evaluation; see the file's header for how they were measured). A job is estimated at startup_seconds +
updates left × seconds_per_update for each of its runs; an arm missing from the table has no estimate.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfac_repro.runner import layout
from kfac_repro.runner.grid import combination_id, combinations
from kfac_repro.runner.metrics_log import read_rows
from kfac_repro.specs import ResolvedSpec, experiments_dir, load_spec
from kfac_repro.specs.names import GRID_PREFIX
from kfac_repro.specs.yaml_source import read_yaml

DONE, DIVERGED, PARTIAL, TODO = "done", "diverged", "partial", "todo"  # a diverged run is a result: kept as it is
GRID_SEEDS = "training.seeds=1"  # a grid tries each setting with one seed
Costs = Mapping[str, Mapping[str, Mapping[str, float]]]


@dataclass(frozen=True)
class Job:
    """One step of the plan: a grid search of an arm (`seed` None) or one seeded run of an arm. `updates` is the
    length of each run (of each setting of a grid), `left` the updates of the whole job not yet logged;
    `estimate` the seconds it still needs (None: the arm is not in the cost table)."""

    spec: str
    arm: str
    seed: int | None
    updates: int
    left: int
    state: str
    tuned: bool = False
    settings: int = 1
    estimate: float | None = None

    @property
    def is_grid(self) -> bool:
        return self.seed is None

    def describe(self) -> str:
        """'cifar10-async grid-sgd-bn (10 settings)' or 'cifar10-async sgd-bn seed 1 (tuned)'."""
        if self.is_grid:
            return f"{self.spec} {GRID_PREFIX}{self.arm} ({self.settings} settings)"
        return f"{self.spec} {self.arm} seed {self.seed}" + (" (tuned)" if self.tuned else "")


def costs_path(profile: str) -> Path:
    """experiments/costs/<profile>.yaml (it need not exist)."""
    return experiments_dir() / "costs" / f"{layout.check_name(profile, 'profile')}.yaml"


def load_costs(profile: str) -> Costs:
    """The profile's cost table ({} when it has none); ValueError naming the file when it is malformed."""
    path = costs_path(profile)
    if not path.is_file():
        return {}
    table = read_yaml(path)
    for spec, arms in table.items():
        if not isinstance(arms, Mapping):
            raise ValueError(f"{path}: {spec}: expected a mapping of arms to their costs, found {arms!r}")
        for arm, cost in arms.items():
            if not (isinstance(cost, Mapping) and set(cost) == {"seconds_per_update", "startup_seconds"}
                    and all(isinstance(v, int | float) and v >= 0 for v in cost.values())):
                raise ValueError(f"{path}: {spec}.{arm}: expected {{seconds_per_update: s, startup_seconds: t}} "
                                 f"with numbers ≥ 0, found {cost!r}")
    return table


def _logged_steps(run_dir: Path) -> int:
    """The last step in a run's metrics.csv (0 when it has none)."""
    try:
        rows = read_rows(run_dir / layout.METRICS)
    except (OSError, ValueError):
        return 0
    return int(float(rows[-1]["step"])) if rows else 0


def run_state(run_dir: Path, steps: int) -> tuple[str, int]:
    """(state, updates left) of the run that should end at `steps` updates in `run_dir`."""
    if not run_dir.is_dir():
        return TODO, steps
    status = layout.run_status(run_dir)
    if status == layout.DIVERGED:
        return DIVERGED, 0
    if layout.run_complete(run_dir, steps):
        return DONE, 0
    return PARTIAL, max(0, steps - _logged_steps(run_dir))


def _estimate(cost: Mapping[str, float] | None, lefts: Sequence[int]) -> float | None:
    """Seconds for runs with `lefts` updates still to do (nothing to do: 0, whatever the table says)."""
    if not any(lefts):
        return 0.0
    if cost is None:
        return None
    return sum(cost["startup_seconds"] + left * cost["seconds_per_update"] for left in lefts if left)


def _grid_job(spec: ResolvedSpec, arm: str, out: Path, cost: Mapping[str, float] | None) -> Job:
    steps = int(spec.arms[arm].training["steps"])
    root = layout.grid_dir(out, spec.name, spec.profile, arm)
    states = [run_state(layout.combination_run_dir(root, combination_id(combo), spec.name, spec.profile, arm),
                        steps) for combo in combinations(spec.grid_for(arm))]
    finished = all(state in (DONE, DIVERGED) for state, _ in states)
    if finished and (root / layout.GRID_BEST).is_file():
        state = DONE
    else:
        state = TODO if all(state == TODO for state, _ in states) else PARTIAL
    lefts = [left for _, left in states]
    return Job(spec.name, arm, None, steps, sum(lefts), state, settings=len(states),
               estimate=_estimate(cost, lefts))


def spec_jobs(spec: ResolvedSpec, out: Path, run_id: str, costs: Costs) -> list[Job]:
    """The jobs of one resolved spec, in the order they run: grids, then seed by seed every arm."""
    own: Mapping[str, Mapping[str, float]] = costs.get(spec.name) or {}
    jobs = [_grid_job(spec, arm, out, own.get(arm)) for arm in spec.arms if spec.grid_for(arm)]
    seeds: dict[str, list[int]] = {}
    for arm, config in spec.arms.items():
        first, count = int(config.training["seed"]), int(config.training["seeds"])
        seeds[arm] = list(range(first, first + count))
    for index in range(max(len(s) for s in seeds.values())):
        for arm, config in spec.arms.items():
            if index >= len(seeds[arm]):
                continue
            seed, steps = seeds[arm][index], int(config.training["steps"])
            state, left = run_state(layout.run_dir(out, spec.name, spec.profile, arm, run_id, seed), steps)
            jobs.append(Job(spec.name, arm, seed, steps, left, state, tuned=arm in spec.tuned,
                            estimate=_estimate(own.get(arm), [left])))
    return jobs


def build(names: Sequence[str], profile: str, out: Path, run_id: str) -> list[Job]:
    """The plan of the named specs in `profile`, with results under `out` and runs named `run_id`-seed<S>."""
    costs = load_costs(profile)
    return [job for name in names for job in spec_jobs(load_spec(name, profile), out, run_id, costs)]


def eta(remaining: Sequence[Job], finished: Sequence[tuple[Job, float]]) -> float | None:
    """Seconds left for the `remaining` jobs, given the measured seconds of the jobs `finished` in this session:
    each remaining job's estimate (its updates × its arm's seconds per update, plus start-up) times how long the
    finished jobs took against their own estimates; a job without an estimate is charged its updates × the
    finished jobs' seconds per update. Before any job finished, the plan's estimates; None when a job can be
    neither estimated nor scaled."""
    estimated = [(job.estimate, seconds) for job, seconds in finished if job.estimate]
    ratio = sum(s for _, s in estimated) / sum(e for e, _ in estimated) if estimated else 1.0
    updates = sum(job.left for job, _ in finished)
    rate = sum(seconds for _, seconds in finished) / updates if updates else None
    total = 0.0
    for job in remaining:
        if job.estimate is not None:
            total += job.estimate * ratio
        elif rate is not None:
            total += job.left * rate
        else:
            return None
    return total


def clock(seconds: float | None) -> str:
    """H:MM:SS ('?' for None)."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def table(jobs: Sequence[Job]) -> list[str]:
    """The plan as Markdown rows, one per grid and one per arm (its seeds together), and a total line."""
    groups: dict[tuple[str, str, bool], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.spec, job.arm, job.is_grid), []).append(job)
    lines = ["| spec | arm | seeds | updates | state | minutes |", "|---|---|---|---|---|---|"]
    for (spec, arm, is_grid), group in groups.items():
        name = f"{GRID_PREFIX}{arm}" if is_grid else arm + (" (tuned)" if group[0].tuned else "")
        seeds = f"{group[0].settings} settings × 1" if is_grid else ",".join(str(job.seed) for job in group)
        counts: dict[str, int] = {}
        for job in group:
            counts[job.state] = counts.get(job.state, 0) + 1
        state = next(iter(counts)) if len(counts) == 1 else ", ".join(f"{n} {s}" for s, n in counts.items())
        lines.append(f"| {spec} | {name} | {seeds} | {group[0].updates:,} | {state} | {_minutes(group)} |")
    counts = {state: sum(job.state == state for job in jobs) for state in (DONE, DIVERGED, PARTIAL, TODO)}
    total = _total(jobs)
    lines += ["", f"{len(jobs)} jobs ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); estimated "
              + ("? (arms missing from the cost table)" if total is None else
                 f"{clock(total)} ({total / 3600:.1f} h) on this machine")]
    return lines


def _total(jobs: Sequence[Job]) -> float | None:
    estimates = [job.estimate for job in jobs]
    return None if any(e is None for e in estimates) else sum(e for e in estimates if e is not None)


def _minutes(group: Sequence[Job]) -> str:
    total = _total(group)
    return "?" if total is None else f"{total / 60:.1f}"

