"""`kfac-repro list`, `show` and `validate`: inspect experiment specs without importing TensorFlow.

Exit codes: 0 success, 2 an invalid spec, override or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click
import yaml

from kfac_repro.specs import SpecError, load_document, load_spec, profile_names, spec_names, spec_path
from kfac_repro.specs.resolve import ResolvedSpec, resolve

SPEC_ERROR_EXIT = 2


def _fail(error: SpecError) -> NoReturn:
    click.echo(f"error: {error}", err=True)
    raise click.exceptions.Exit(SPEC_ERROR_EXIT)


def _resolve_all(target: str) -> list[ResolvedSpec]:
    """The spec `target` (name or path) resolved in each of its profiles."""
    path = spec_path(target)
    document = load_document(path)
    return [resolve(document, path, profile) for profile in profile_names(document)]


def _data_line(spec: ResolvedSpec) -> str:
    from kfac_repro.data.registry import dataset_available

    needed = dict.fromkeys((arm.data["name"], arm.data["data_dir"]) for arm in spec.arms.values())
    return ", ".join(f"{name} ({'present' if dataset_available(name, data_dir) else 'missing'})"
                     for name, data_dir in needed)


@click.command("list")
@click.option("--names", is_flag=True, help="only the experiment names, one per line (for scripts)")
def list_specs(names: bool) -> None:
    """Experiments: figure, arms, profiles, and whether the data each profile needs is present."""
    if names:
        click.echo("\n".join(spec_names()))
        return
    invalid = 0
    for name in spec_names():
        try:
            resolved = _resolve_all(name)
        except SpecError as error:
            invalid += 1
            click.echo(f"{name}: INVALID: {error}")
            continue
        paper = resolved[0]
        click.echo(f"{name}  ({paper.figure})  {len(paper.arms)} arms: {', '.join(paper.arms)}")
        for spec in resolved:
            click.echo(f"    --profile {spec.profile:8} data: {_data_line(spec)}")
    if invalid:
        raise click.exceptions.Exit(SPEC_ERROR_EXIT)


@click.command("show")
@click.argument("name")
@click.option("--profile", default="paper", show_default=True, help="paper, cpu, smoke (or a spec's own)")
@click.option("--arm", "arms", multiple=True, help="only this arm (repeatable; default: all)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override section.field in the shown arms, e.g. --set training.steps=50 (repeatable)")
def show(name: str, profile: str, arms: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """The spec NAME (an experiment name or a file) resolved for a profile, as YAML."""
    try:
        spec = load_spec(name, profile, overrides, arms)
    except SpecError as error:
        _fail(error)
    click.echo(yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True, width=120), nl=False)


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--write-reference", is_flag=True, help="regenerate docs/spec-format.md from the schema")
def validate(paths: tuple[Path, ...], write_reference: bool) -> None:
    """Check spec files (default: every experiment) in every profile; print OK or the error; exit 2 on any."""
    if write_reference:
        from kfac_repro.specs.reference import reference_path, reference_text

        reference_path().write_text(reference_text())
        click.echo(f"wrote {reference_path()}")
    failures = 0
    for target in [str(p) for p in paths] or spec_names():
        try:
            resolved = _resolve_all(target)
        except SpecError as error:
            failures += 1
            click.echo(f"error: {error}", err=True)
            continue
        arms = len(resolved[0].arms)
        click.echo(f"OK     {resolved[0].source} ({arms} arms; profiles: {', '.join(s.profile for s in resolved)})")
    if failures:
        raise click.exceptions.Exit(SPEC_ERROR_EXIT)
