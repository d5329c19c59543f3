"""`kfac-repro reproduce`: every spec's grids and seeded runs in one profile, as planned by runner/plan.py from the
specs themselves, each job run as `kfac-repro grid` / `kfac-repro run` would run it, in a child process.

Resumable: a finished job is kept, a partial one resumed (`run --resume`; a grid keeps its finished settings), so
running the command again does nothing twice. Before each job one progress line gives the time elapsed and an
estimate of the time left (runner/plan.py: `eta`); at the end one line gives the wall-clock and CPU time (user +
system, of this process and its children) of this invocation, and of every invocation into the same results root,
profile and run id, so a reproduction resumed several times still reports its total. Each invocation appends its
running totals to OUT/reproduce.jsonl after every job (its last line counts), so an invocation killed outright
(SIGKILL, a machine going away) still counts up to its last finished job. SIGTERM or SIGINT stops the job in
training, which saves a checkpoint and is marked interrupted; the command then exits with 128 + the signal
number, and a rerun resumes it.

Exit codes: 0 every job finished (a diverged run is a result, and kept), 1 a job failed, 2 bad usage or spec,
128 + N stopped by signal N.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from kfac_repro.commands.child import child_command
from kfac_repro.commands.grid import grid
from kfac_repro.commands.run import DIVERGED_EXIT, STOP_GRACE, check_data, run
from kfac_repro.distribute import interrupts
from kfac_repro.runner import layout, plan, safe_paths
from kfac_repro.specs import SpecError, load_spec, spec_names


def _command(job: plan.Job, profile: str, out: Path, run_id: str, parallel: int) -> list[str]:
    """The `kfac-repro grid` or `kfac-repro run` command line of a job."""
    if job.is_grid:
        return child_command(grid, {"name": job.spec, "arm": job.arm, "profile": profile, "out": out,
                                    "overrides": (plan.GRID_SEEDS,), "parallel": parallel})
    return child_command(run, {"name": job.spec, "arms": (job.arm,), "profile": profile, "out": out,
                               "seeds_text": str(job.seed), "run_id": run_id, "resume": job.state == plan.PARTIAL,
                               "tuned": job.tuned})


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    return sum(usage.ru_utime + usage.ru_stime for usage in (resource.getrusage(resource.RUSAGE_SELF),
                                                             resource.getrusage(resource.RUSAGE_CHILDREN)))


@click.command("reproduce")
@click.option("--profile", default="cpu", show_default=True, help="the profile of every spec (cpu, paper, smoke)")
@click.option("--only", "only", multiple=True, metavar="SPEC", help="only this spec (repeatable; default: all)")
@click.option("--dry-run", is_flag=True, help="print the plan (each job's state and estimated time); train nothing")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="results root, as for `run` and `grid`")
@click.option("--run-id", default="reproduce", show_default=True,
              help="the runs are OUT/<spec>/<profile>/<arm>/<run-id>-seed<S>/")
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="settings of a grid trained at once (`grid --parallel`)")
def reproduce(profile: str, only: tuple[str, ...], dry_run: bool, out: Path, run_id: str, parallel: int) -> None:
    """Run every spec's grids and every arm with each of its seeds, resumably, in one profile."""
    started, cpu_before = time.monotonic(), _cpu_seconds()
    invocation = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%f')}-{os.getpid()}"  # its entries in the log

    def state(jobs_done: int, outcome: str) -> Invocation:
        return Invocation(invocation, profile, run_id, jobs_done, started, cpu_before, outcome)

    interrupts.install()
    unknown = sorted(set(only) - set(spec_names()))
    if unknown:
        raise click.UsageError(f"--only: unknown spec {', '.join(unknown)}; specs: {', '.join(spec_names())}")
    names = [name for name in spec_names() if not only or name in only]
    try:
        layout.check_name(run_id, "--run-id")
        jobs = plan.build(names, profile, out, run_id)
    except (SpecError, ValueError) as error:
        raise click.UsageError(str(error)) from error
    if dry_run:
        click.echo("\n".join(plan.table(jobs)))
        return
    try:
        safe_paths.make_dirs(out, ".")
        safe_paths.open_file(out, layout.REPRODUCE_LOG, "a").close()  # its log can be written, before any job
    except safe_paths.UnsafePath as error:
        raise click.BadParameter(str(error), param_hint="--out") from error
    for name in names:
        spec = load_spec(name, profile)
        check_data(spec, list(spec.arms))
    finished: list[tuple[plan.Job, float]] = []
    failed: list[str] = []
    for index, job in enumerate(jobs, start=1):
        elapsed = time.monotonic() - started
        left = [j for j in jobs[index - 1:] if j.state in (plan.PARTIAL, plan.TODO)]
        click.echo(f"[{index}/{len(jobs)}] {job.describe()}: {job.state}, {job.left:,} updates left; elapsed "
                   f"{plan.clock(elapsed)}, ETA {plan.clock(plan.eta(left, finished))}")
        if job.state not in (plan.PARTIAL, plan.TODO):
            continue
        begun = time.monotonic()
        child = interrupts.start_child(_command(job, profile, out, run_id, parallel))
        try:
            code = interrupts.wait_child(child, STOP_GRACE)
        except interrupts.Interrupted as stop:
            click.echo(f"{stop}: {job.describe()} interrupted (its state is saved); run the same command again to "
                       "resume", err=True)
            _report(out, state(index - 1, "stopped"))
            sys.exit(stop.exit_code)
        finished.append((job, time.monotonic() - begun))
        _log(out, state(index, "running"))
        if code == DIVERGED_EXIT:
            click.echo(f"   {job.describe()} diverged: kept as a result")
        elif code != 0:
            failed.append(f"{job.describe()} (exit {code})")
    _report(out, state(len(jobs), "failed" if failed else "finished"))
    if failed:
        click.echo(f"error: failed: {'; '.join(failed)}", err=True)
        sys.exit(1)


@dataclass(frozen=True)
class Invocation:
    """One `reproduce` command: its id in the log, its profile and run id, the jobs it went through, when it started
    (monotonic seconds), its CPU seconds then, and where it is (running, or how it ended: finished, failed,
    stopped)."""

    id: str
    profile: str
    run_id: str
    jobs: int
    started: float
    cpu_before: float
    outcome: str


def _log(out: Path, invocation: Invocation) -> tuple[float, float]:
    """Append the invocation's wall-clock and CPU time so far to OUT/reproduce.jsonl; return them."""
    wall, cpu = time.monotonic() - invocation.started, _cpu_seconds() - invocation.cpu_before
    entry = {"invocation": invocation.id, "profile": invocation.profile, "run_id": invocation.run_id,
             "jobs": invocation.jobs, "outcome": invocation.outcome, "wall_seconds": round(wall, 1),
             "cpu_seconds": round(cpu, 1), "ended_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    with safe_paths.open_file(out, layout.REPRODUCE_LOG, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
    return wall, cpu


def _report(out: Path, invocation: Invocation) -> None:
    """Log the invocation's end, and print its wall-clock and CPU time and the totals of every invocation into
    OUT with the same profile and run id (each invocation's last entry)."""
    wall, cpu = _log(out, invocation)
    same = [e for e in _last_entries(out / layout.REPRODUCE_LOG)
            if (e.get("profile"), e.get("run_id")) == (invocation.profile, invocation.run_id)]
    click.echo(f"reproduce: {invocation.jobs} jobs, wall {plan.clock(wall)}, CPU time {plan.clock(cpu)} (user+sys "
               f"of this process and its children); all {len(same)} invocation(s) into {out} (profile "
               f"{invocation.profile}, run id {invocation.run_id}): wall {plan.clock(_total(same, 'wall_seconds'))}, "
               f"CPU time {plan.clock(_total(same, 'cpu_seconds'))}")


def _last_entries(log: Path) -> list[dict]:
    """The last entry of each invocation in the log (entries without an invocation id, from older versions, each
    count alone); a line that is not a JSON object (cut by a crash) is left out."""
    last: dict[object, dict] = {}
    for number, line in enumerate(log.read_text().splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            last[(entry.get("invocation") or number, entry.get("profile"), entry.get("run_id"))] = entry
    return list(last.values())


def _total(entries: list[dict], key: str) -> float:
    return sum(float(e.get(key) or 0.0) for e in entries)
