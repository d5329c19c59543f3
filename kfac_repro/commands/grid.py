"""`kfac-repro grid`: run every combination of a grid for one arm (in parallel processes if asked) and write
the leaderboard, marking the best configuration (results/<spec>/<profile>/grid-<arm>/leaderboard.csv, best.json).

A grid run again keeps its finished combinations (complete, with the arm's number of updates) and resumes the
others from their checkpoints (one finished at fewer updates is continued to them).
SIGTERM or SIGINT stops the combinations in training (each checkpoints and is marked interrupted) and exits with
128 + the signal number; the combinations' processes never outlive the grid command. A grid command holds a lock on
the grid's directory while it runs: a second one for the same grid is refused (exit 2, naming the holder's pid)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from kfac_repro.commands.child import child_command
from kfac_repro.commands.run import run
from kfac_repro.distribute import interrupts
from kfac_repro.runner import layout, safe_paths
from kfac_repro.specs import SpecError, load_spec

_STOP_GRACE = 60.0


@click.command("grid")
@click.argument("name")
@click.option("--arm", required=True, help="the arm whose settings are searched")
@click.option("--profile", default="paper", show_default=True)
@click.option("--param", "params", multiple=True, metavar="SECTION.FIELD=V1,V2,...",
              help="grid axis (repeatable); default: the spec's own grid")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="fixed override for every run")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="combinations trained at once, each in its own process")
@click.option("--target-error", type=click.FloatRange(0, 1), default=None,
              help="validation error whose time-to-reach is reported (default: median of the best errors)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
def grid(name: str, arm: str, profile: str, params: tuple[str, ...], overrides: tuple[str, ...], parallel: int,
         target_error: float | None, out: Path) -> None:
    """Grid-search the settings of arm ARM of experiment NAME and rank the combinations."""
    interrupts.install()
    from kfac_repro.runner.grid import (
        combination_id,
        combinations,
        leaderboard,
        parse_param,
        write_leaderboard,
    )

    try:
        axes = dict(parse_param(p) for p in params)
        spec = load_spec(name, profile, overrides, arms=(arm,))
        axes = axes or spec.grid_for(arm)
        if not axes:
            raise click.UsageError(f"{name} has no grid for arm {arm}: give --param SECTION.FIELD=V1,V2")
        combos = combinations(axes)
        for combo in combos:  # validate every combination before training any
            load_spec(name, profile, [*overrides, *(f"{k}={v}" for k, v in combo.items())], arms=(arm,))
            layout.check_name(combination_id(combo), "grid combination")
        root = layout.grid_dir(out, spec.name, profile, arm)
        safe_paths.make_dirs(out, root.relative_to(out))
        lock = layout.lock_run_dir(root, "grid search")  # held to the end: one grid command per grid at a time
        for combo in combos:  # each is the --out of a run, used as given there: a link to elsewhere is refused here
            safe_paths.make_dirs(root, combination_id(combo))
    except (SpecError, ValueError) as error:  # ValueError: also LayoutError and safe_paths.UnsafePath
        raise click.UsageError(str(error)) from error

    def run_dir(combo: dict[str, Any]) -> Path:
        return layout.combination_run_dir(root, combination_id(combo), spec.name, profile, arm)

    click.echo(f"{len(combos)} combinations of {', '.join(axes)} for {name} [{profile}] arm {arm} → {root}")
    pending = []
    for combo in combos:
        if layout.run_complete(run_dir(combo), int(spec.arms[arm].training["steps"])):
            click.echo(f"  kept {combination_id(combo)} (finished earlier)")
        else:
            pending.append((combo, layout.combination_dir(root, combination_id(combo)), run_dir(combo).exists()))
    running: list[tuple[subprocess.Popen[bytes], str]] = []
    failures = 0
    while pending or running:
        while pending and len(running) < parallel:
            combo, combo_dir, resume = pending.pop(0)
            command = child_command(run, {
                "name": name, "arms": (arm,), "profile": profile, "out": combo_dir, "run_id": layout.GRID_RUN_ID,
                "resume": resume, "overrides": (*overrides, *(f"{k}={v}" for k, v in combo.items()))})
            with safe_paths.open_file(root, f"{combo_dir.name}.log", "a" if resume else "w") as handle:
                running.append((interrupts.start_child(command, stdout=handle, stderr=subprocess.STDOUT),
                                combination_id(combo)))
            click.echo(f"  {'resumed' if resume else 'started'} {combination_id(combo)}")
        time.sleep(0.5)
        signum = interrupts.requested()
        if signum is not None:
            interrupts.stop_children([process for process, _ in running], _STOP_GRACE)
            click.echo(f"stopped by signal {signum}: {len(running)} combination(s) interrupted, {len(pending)} not "
                       "started; run the same grid command again to resume", err=True)
            sys.exit(128 + signum)
        for process, label in list(running):
            if process.poll() is not None:
                running.remove((process, label))
                failures += process.returncode != 0
                click.echo(f"  finished {label} (exit {process.returncode})")
    entries = [(combo, run_dir(combo)) for combo in combos]
    rows = leaderboard(entries, target_error)
    write_leaderboard(root / layout.LEADERBOARD, rows, list(axes))
    best: dict[str, Any] = rows[0]
    safe_paths.write_atomic(root, layout.GRID_BEST, json.dumps({
        "spec": spec.name, "profile": profile, "arm": arm, "params": {k: best[k] for k in axes},
        "best_val_error": best["best_val_error"], "run_dir": best["run_dir"]}, indent=2) + "\n")
    lock.close()
    for row in rows:
        settings = ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in axes)
        click.echo(f"  #{row['rank']} {settings}: best val error {row['best_val_error']:.4f}, "
                   f"final val loss {row['final_val_loss']:.4f}{'  ← best' if row['best'] else ''}")
    click.echo(f"leaderboard: {root / layout.LEADERBOARD}")
    if failures:
        sys.exit(1)
