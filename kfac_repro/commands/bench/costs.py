"""`kfac-repro bench arms`, `paper-scale` and `gpu`: what the reproduction's arms cost, per update and component
on this machine (read by the report), at the paper's full size, and in the paper profile on a device."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kfac_repro.benchmarks.gpu.table import PAPER_MODELS, Row, ratios, write_rows

if TYPE_CHECKING:
    import tensorflow as tf


@click.command("arms")
@click.argument("name")
@click.option("--profile", default="paper", show_default=True)
@click.option("--arm", "arms", multiple=True, help="time only this arm (repeatable; default: all)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a resolved field")
@click.option("--blocks", type=click.IntRange(min=1), default=7, show_default=True,
              help="timed rounds, each a block of updates of every arm in turn (a block: at least one inversion "
                   "period); the median over them is the arm's cost, so a slow spell of the machine needs more than "
                   "half of the rounds to move it")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="writes OUT/<spec>/<profile>/bench-arms.csv, which `kfac-repro report` reads")
def arms(name: str, profile: str, arms: tuple[str, ...], overrides: tuple[str, ...], blocks: int,
         out: Path) -> None:
    """Every arm's steady-state seconds per update, back to back in one process, and its component times."""
    import os
    from datetime import UTC, datetime

    from kfac_repro.specs import SpecError, load_spec

    try:
        spec = load_spec(name, profile=profile, overrides=overrides, arms=arms)
    except SpecError as error:
        raise click.UsageError(str(error)) from error
    from kfac_repro.distribute.strategy import make_strategy, reserve_cpu_replicas

    reserve_cpu_replicas(max(int(a.distribution["workers"]) for a in spec.arms.values()))
    from kfac_repro.benchmarks.arm_costs.measure import machine_record, measure_arms
    from kfac_repro.benchmarks.arm_costs.other_cpu import OtherCPU
    from kfac_repro.benchmarks.arm_costs.table import (
        SHARED_OTHER,
        earlier_sittings,
        shared_by_other_cpu,
        table_path,
        write_costs,
    )
    from kfac_repro.runner.environment import git_commit

    machine = {**machine_record(), "commit": git_commit(Path(__file__).resolve().parent),
               "time_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    click.echo(f"{spec.name} [{profile}] on {machine['host']}, {machine['device']}, {machine['cpus']} cores; "
               f"load average before: {machine['load_before']}")
    others = OtherCPU()
    strategies: dict[int, tf.distribute.Strategy] = {}  # one per replica count (see measure_arms)

    def strategy_for(replicas: int) -> tf.distribute.Strategy:
        if replicas not in strategies:
            strategies[replicas] = make_strategy(local_replicas=replicas)
        return strategies[replicas]

    measurements = measure_arms(spec.arms, blocks, strategy_for,
                                progress=lambda what: click.echo(f"  {what} ...", err=True))
    machine["load_after"] = round(os.getloadavg()[0], 2)
    share = others.share()
    machine["other_cpu"] = "" if share is None else round(share, 4)
    path = table_path(out, spec.name, profile)
    write_costs(path, spec.name, profile, measurements, machine)
    for m in measurements:
        if m.unit == "bytes":
            click.echo(f"{m.arm:14}{m.quantity:17}{m.examples:>7}{m.value / 1e6:12.3f} MB")
        else:
            click.echo(f"{m.arm:14}{m.quantity:17}{m.examples:>7}{m.value * 1e3:12.2f} ms   "
                       f"[{m.low * 1e3:.2f}, {m.high * 1e3:.2f}]")
    other = "unknown (no /proc/stat)" if share is None else f"{100 * share:.1f}%"
    kind = "an unknown" if share is None else "a shared" if shared_by_other_cpu(share) else "an idle"
    click.echo(f"other processes' share of the CPU time while timing: {other}, so the report reads these timings as "
               f"taken on {kind} machine (shared above {100 * SHARED_OTHER:.0f}%); load average after: "
               f"{machine['load_after']}\nwrote {path}")
    earlier = earlier_sittings(path)
    if earlier:
        click.echo(f"earlier sittings kept beside it ({len(earlier)}, the newest {earlier[-1].name}); the report "
                   "checks every verdict with those of the same commit")


@click.command("paper-scale")
@click.argument("names", nargs=-1, required=True)
@click.option("--arm", "arms", multiple=True, help="only this arm (repeatable; default: all)")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--updates", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the rows (with every update's loss) to this CSV file")
@click.option("--result-file", type=click.Path(dir_okay=False, path_type=Path), default=None, hidden=True)
def paper_scale(names: tuple[str, ...], arms: tuple[str, ...], batch_size: int, updates: int,
                csv_path: Path | None, result_file: Path | None) -> None:
    """Each paper-profile arm of experiments NAMES at full size: a few updates on one batch of synthetic data, each
    arm in a process of its own (first loss, last loss, s/update, peak MB)."""
    import dataclasses
    import json
    import sys
    import tempfile

    from kfac_repro.benchmarks.paper_scale import PaperScaleResult, check_arm, small_batch_overrides, table
    from kfac_repro.distribute import interrupts
    from kfac_repro.specs import SpecError, load_spec

    if arms and len(names) > 1:
        raise click.UsageError(f"--arm selects arms of one experiment; {len(names)} were named: {', '.join(names)}")
    jobs = []
    try:
        for name in names:
            spec = load_spec(name, arms=arms)
            jobs += [(name, arm, small_batch_overrides(config, batch_size)) for arm, config in spec.arms.items()]
    except SpecError as error:
        raise click.UsageError(str(error)) from error
    if result_file is not None:  # the child: one arm, its result as JSON
        ((name, arm, overrides),) = jobs
        adapted = load_spec(name, overrides=overrides, arms=(arm,)).arms[arm]
        result_file.write_text(json.dumps(dataclasses.asdict(check_arm(name, arm, adapted, updates))))
        return
    interrupts.install()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, arm, overrides) in enumerate(jobs, 1):
            click.echo(f"[{index}/{len(jobs)}] {name} {arm}: {' '.join(overrides)}", err=True)
            path = Path(scratch) / f"{index}.json"
            child = interrupts.start_child([sys.executable, "-m", "cli", "bench", "paper-scale", name, "--arm", arm,
                                            "--batch-size", str(batch_size), "--updates", str(updates),
                                            "--result-file", str(path)])
            try:
                code = interrupts.wait_child(child, grace=10.0)
            except interrupts.Interrupted as stop:
                click.echo(f"{stop}: {name} {arm} stopped; the arms after it not checked", err=True)
                sys.exit(stop.exit_code)
            if code != 0 or not path.exists():
                raise click.ClickException(f"{name} {arm}: the check failed (its output above)")
            fields = json.loads(path.read_text())
            results.append(PaperScaleResult(**{**fields, "losses": tuple(fields["losses"])}))
    click.echo(table(results))
    if csv_path is not None:
        import csv

        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, [field.name for field in dataclasses.fields(PaperScaleResult)])
            writer.writeheader()
            writer.writerows({**dataclasses.asdict(r), "losses": " ".join(f"{x:.4f}" for x in r.losses)}
                             for r in results)


@click.command("gpu")
@click.option("--scale", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="full: the paper profile's models (224×224, 1000 classes) at the paper's per-GPU batch; tiny: the "
                   "smoke profile's (32×32, width ×0.125, batch 16), seconds on a CPU, for tests")
@click.option("--model", "models", type=click.Choice(list(PAPER_MODELS)), multiple=True,
              help="only this model (repeatable; default: all three)")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="timed blocks, inversions, fit epochs per method (the median is reported)")
@click.option("--budget-s", type=click.FloatRange(min=0, min_open=True), default=450.0, show_default=True,
              help="stop when this many seconds have passed since the start, keeping what was measured; the "
                   "measurement running then is dropped, the rest skipped")
@click.option("--largest-batch", is_flag=True,
              help="also each model's largest batch that fits, doubling the per-GPU batch up to the scale's limit "
                   "(gpu.profile.SCALES), and SGD and K-FAC amortised there; each batch tried traces anew (minutes "
                   "on a GPU)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the CSV, rewritten after each measurement (default: results/gpu/<UTC time>-<scale>.csv)")
def gpu(scale: str, models: tuple[str, ...], repeats: int, budget_s: float, largest_batch: bool,
        out: Path | None) -> None:
    """The paper profile's costs on the device TensorFlow finds (a GPU, else the CPU), in one process, methods in
    turns: SGD and K-FAC updates (statistics every step in float32 and bfloat16 products, amortised as the spec's
    paper profile), one inversion on the host and on the device, peak memory, Keras fit with K-FAC and Adam on a
    BatchNormalization CNN; ratios printed, rows written to a CSV as measured."""
    from kfac_repro.benchmarks.budget import Budget

    budget = Budget(budget_s)  # the whole command, imports included
    from datetime import UTC, datetime

    from kfac_repro.benchmarks.budget import run_measurements
    from kfac_repro.benchmarks.gpu import profile as gpu_profile
    from kfac_repro.runner.environment import git_commit

    now = datetime.now(UTC)
    path = out or Path("results") / "gpu" / f"{now.strftime('%Y%m%dT%H%M%SZ')}-{scale}.csv"
    import tensorflow as tf

    context = {"time_utc": now.isoformat(timespec="seconds"), "commit": git_commit(Path(__file__).resolve().parent)
               or "", "device": gpu_profile.device_name(), "driver": gpu_profile.driver_version(),
               "tensorflow": tf.__version__, "build": gpu_profile.build_info(), "scale": scale}
    click.echo(f"device: {context['device']}; driver: {context['driver']}\n{context['build']}")
    rows: list[Row] = []
    try:
        write_rows(path, rows, context)
    except OSError as error:
        raise click.ClickException(f"--out {path}: cannot write there ({error})") from error
    progress = functools.partial(click.echo, err=True)
    found, profiles = gpu_profile.measurements(models or tuple(PAPER_MODELS), gpu_profile.SCALES[scale], repeats,
                                               lambda what: progress(f"    {what}"), largest_batch)

    def announced(index: int, name: str, measure: Callable[[], list[Row]]) -> list[Row]:
        progress(f"[{index}/{len(found)}] {name} ({budget.left():.0f} s of the budget left) ...")
        return measure()

    def keep(_name: str, measured: list[Row]) -> None:
        rows.extend(measured)
        write_rows(path, rows, context)

    try:
        outcome = run_measurements([(name, functools.partial(announced, i, name, measure))
                                    for i, (name, measure) in enumerate(found, 1)], budget, keep)
    finally:
        for profile in profiles:
            profile.close()
    click.echo(f"{'model':10}{'batch':>6}  {'quantity':40}{'value':>14}  unit")
    for row in rows:
        value = "n/a" if row.value is None else f"{row.value:.6g}"
        click.echo(f"{row.model:10}{row.batch_size:>6}  {row.quantity:40}{value:>14}  {row.unit}"
                   + (f"  ({row.note})" if row.note else ""))
    click.echo("ratios (of times, measured in this run):")
    for ratio in ratios(rows):
        click.echo(f"  {ratio.text()}")
    if outcome.interrupted or outcome.skipped:
        stopped = f"stopped during: {outcome.interrupted} (dropped); " if outcome.interrupted else ""
        click.echo(f"the budget of {budget_s:g} s ran out: {stopped}skipped: {'; '.join(outcome.skipped) or 'none'}")
    click.echo(f"wrote {path} ({len(rows)} rows)")
