"""`kfac-repro plot` (Figures 2–8 from results/) and `kfac-repro report` (the reproduction report)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from kfac_repro.plotting.figures import FIGURES
from kfac_repro.results.runs import SkippedRunWarning, available_profiles, seed_runs
from kfac_repro.runner import safe_paths
from kfac_repro.specs.names import name_problem


@contextmanager
def _skipped_runs_reported() -> Iterator[list[str]]:
    """Print 'warning: skipped run DIR: why' once per skipped run, on stderr; the yielded list receives them."""
    skipped: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedRunWarning)
        try:
            yield skipped
        finally:
            skipped += dict.fromkeys(str(w.message) for w in caught if w.category is SkippedRunWarning)
            for message in skipped:
                click.echo(f"warning: {message}", err=True)


@click.command("plot")
@click.argument("figure", type=click.Choice([*map(str, FIGURES), "all"]))
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("plots"), show_default=True)
@click.option("--profile", default=None, help="which profile's runs (default: paper, else cpu, else smoke)")
def plot(figure: str, results: Path, out: Path, profile: str | None) -> None:
    """Regenerate Figure N of the paper (or all) as PNG and PDF; missing results are reported per figure."""
    if profile is not None and name_problem(profile):  # the profile names the figure files
        raise click.UsageError(f"--profile: {name_problem(profile)}")
    try:
        safe_paths.make_dirs(out, ".")
    except safe_paths.UnsafePath as error:
        raise click.BadParameter(str(error), param_hint="--out") from error
    with _skipped_runs_reported():
        made = _plot(figure, results, out, profile)
    if made == 0:
        sys.exit(1)


def _plot(figure: str, results: Path, out: Path, profile: str | None) -> int:
    from kfac_repro.benchmarks.arm_costs.table import read_costs, table_path
    from kfac_repro.plotting.clock import figure_clock
    from kfac_repro.plotting.figures import render

    made = 0
    for number in FIGURES if figure == "all" else [int(figure)]:
        spec = FIGURES[number].spec
        profiles = [profile] if profile else available_profiles(results, spec)
        runs = seed_runs(results, spec, profiles[0]) if profiles else {}
        if not runs:
            where = results / spec / (profile or "<profile>")
            click.echo(f"fig {number}: no complete runs under {where} "
                       f"(run `kfac-repro run {spec} --profile {profile or 'cpu'}`)", err=True)
            continue
        costs = read_costs(table_path(results, spec, profiles[0]))
        clock = figure_clock(runs, costs, FIGURES[number].modelled_clock)
        paths = render(FIGURES[number], runs, profiles[0], out, clock)
        made += 1
        seeds = "/".join(str(n) for n in sorted({len(r) for r in runs.values()}))
        time_axis = clock.label if clock else "logged wall-clock: no bench arms cost for every arm"
        click.echo(f"fig {number}: {', '.join(str(p) for p in paths)} ({len(runs)} arms, {seeds} seed(s), "
                   f"profile {profiles[0]}; time axis: {time_axis})")
    return made


@click.command("report")
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/reproduction-report.md"),
              show_default=True)
@click.option("--allow-mixed", is_flag=True,
              help="report figures whose runs come from different commits or dirty trees (each says so)")
def report(results: Path, out: Path, allow_mixed: bool) -> None:
    """Write the Markdown reproduction report: each headline claim, measured figures, its rule and a verdict.
    Refuses (exit 2) a figure whose runs mix commits or dirty trees unless --allow-mixed."""
    from kfac_repro.plotting.report import MixedCommits, report_text

    with _skipped_runs_reported() as skipped:
        try:
            text = report_text(results, allow_mixed)
        except MixedCommits as error:
            raise click.UsageError(str(error)) from error
    if skipped:
        text += "\n## Runs left out\n\n" + "".join(f"- {message}\n" for message in skipped)
    try:
        safe_paths.write_atomic(safe_paths.make_dirs(out.parent, "."), out.name, text)
    except safe_paths.UnsafePath as error:
        raise click.BadParameter(str(error), param_hint="--out") from error
    click.echo(f"wrote {out}")
