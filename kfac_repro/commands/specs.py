"""`kfac-repro list`, `show` and `validate`: inspect experiment specs without importing TensorFlow."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from kfac_repro.specs import SpecError, load_document, load_spec, spec_names, spec_path


@click.command("list")
def list_specs() -> None:
    """Experiments, their arms and profiles, and whether each profile's data is present."""
    from kfac_repro.data.registry import dataset_available

    for name in spec_names():
        try:
            paper = load_spec(name)
        except SpecError as error:
            click.echo(f"{name}: INVALID ({error})")
            continue
        click.echo(f"{name}  ({paper.figure})  arms: {', '.join(paper.arms)}")
        for profile in paper.profiles:
            resolved = load_spec(name, profile)
            data = sorted({arm.data["name"] for arm in resolved.arms.values()})
            present = all(dataset_available(d) for d in data)
            click.echo(f"    --profile {profile:6} data {', '.join(data):14} {'present' if present else 'MISSING'}")


@click.command("show")
@click.argument("name")
@click.option("--profile", default="paper", show_default=True)
@click.option("--arm", "arms", multiple=True, help="only these arms")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override section.field")
def show(name: str, profile: str, arms: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """The resolved spec NAME (or file) as YAML."""
    try:
        spec = load_spec(name, profile, overrides, arms)
    except SpecError as error:
        raise click.UsageError(str(error)) from error
    document = spec.to_dict()
    click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--write-reference", is_flag=True, help="regenerate docs/spec-format.md from the schema")
def validate(paths: tuple[Path, ...], write_reference: bool) -> None:
    """Check spec files (default: every experiment) in every profile; exit 2 on any error."""
    if write_reference:
        from kfac_repro.specs.reference import reference_path, reference_text

        reference_path().write_text(reference_text())
        click.echo(f"wrote {reference_path()}")
    targets = [str(p) for p in paths] or spec_names()
    failures = 0
    for target in targets:
        try:
            path = spec_path(target)
            profiles = (load_document(path).get("profiles") or {}).keys() | {"paper"}
            for profile in sorted(profiles):
                load_spec(str(path), profile)
            click.echo(f"OK     {path} (profiles: {', '.join(sorted(profiles))})")
        except SpecError as error:
            failures += 1
            click.echo(f"error: {error}", err=True)
    if failures:
        sys.exit(2)
