"""`kfac-repro plot` (Figures 2–8 from results/) and `kfac-repro report` (the reproduction report)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kfac_repro.plotting.figures import FIGURES
from kfac_repro.plotting.results import available_profiles, seed_runs


@click.command("plot")
@click.argument("figure", type=click.Choice([*map(str, FIGURES), "all"]))
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("plots"), show_default=True)
@click.option("--profile", default=None, help="which profile's runs (default: paper, else cpu, else smoke)")
def plot(figure: str, results: Path, out: Path, profile: str | None) -> None:
    """Regenerate Figure N of the paper (or all) as PNG and PDF; missing results are reported per figure."""
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
        paths = render(FIGURES[number], runs, profiles[0], out)
        made += 1
        seeds = "/".join(str(n) for n in sorted({len(r) for r in runs.values()}))
        click.echo(f"fig {number}: {', '.join(str(p) for p in paths)} ({len(runs)} arms, {seeds} seed(s), "
                   f"profile {profiles[0]})")
    if made == 0:
        sys.exit(1)


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

    try:
        text = report_text(results, allow_mixed)
    except MixedCommits as error:
        raise click.UsageError(str(error)) from error
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(f"wrote {out}")
