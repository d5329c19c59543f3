"""Finding runs in the results layout (runner/layout.py) and loading their metrics: for each arm the
newest complete run (run ids sort by start time), or the newest complete run of every seed. Grid searches
are not arms of a figure.

A run newer than the one chosen that cannot be used is skipped with a SkippedRunWarning naming it and saying why:
not finished (its status: running, interrupted, failed); damaged records (a resolved.yaml or environment.json that
is unreadable, not UTF-8 or not a mapping, a resolved section that is not a mapping, a seed, step count, batch size or
worker count that is not an integer: such a run is never counted as a seed); or marked complete with a metrics.csv
that is unreadable, empty, lacks columns, has a non-numeric value, a step that is not a whole number or not
increasing, a row with the wrong number of cells or cut without its line end, or ends before the run's last step
(cut short); for seeds, a run newer than the one chosen for its seed (or of a seed with no usable run). Reading
never raises for a damaged run: one damaged run leaves every figure and the report to the others. A diverged run
is a result, not skipped: its metrics end where the divergence bound stopped it."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kfac_repro.runner import layout

PROFILE_PREFERENCE = ("paper", "cpu", "smoke")


@dataclass(frozen=True)
class Run:
    """One finished run: its arm, legend label, metrics table and records."""

    arm: str
    label: str
    directory: Path
    metrics: pd.DataFrame
    record: dict[str, Any]
    environment: dict[str, Any]
    resolved: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.record.get("method", ""))

    @property
    def diverged(self) -> bool:
        """Whether training stopped at the divergence bound (a result, kept: its metrics end where it stopped)."""
        return self.record.get("status") == layout.DIVERGED

    @property
    def last_step(self) -> int:
        return int(self.metrics["step"].max())

    @property
    def seed(self) -> int:
        """run.json's seed; runs made before seeds were recorded: resolved.yaml's training.seed (default 0)."""
        return _seed_of(self.record, self.resolved)

    @property
    def commit(self) -> str:
        return str(self.environment.get("git_commit") or "unknown")

    def setting(self, section: str, name: str) -> Any:
        """A resolved field of the run (None when absent)."""
        return (self.resolved.get(section) or {}).get(name)


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested resolved settings as dotted keys: {'optimizer': {'kl_clip': 0.01}} → {'optimizer.kl_clip': 0.01}."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _seed_of(record: dict[str, Any], resolved: dict[str, Any]) -> int:
    if "seed" in record:
        return int(record["seed"])
    return int((resolved.get("training") or {}).get("seed") or 0)


_SECTIONS = ("model", "data", "training", "distribution", "optimizer")
_INTEGERS = {"run.json": ("seed", "steps", "batch_size", "workers"),
             "resolved.yaml training": ("seed", "batch_size", "steps"), "resolved.yaml distribution": ("workers",)}


def _records(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """(run.json, resolved.yaml, environment.json, "") of a run, each {} when missing; "" replaced by why the run is
    damaged when one is present but unreadable, not a mapping, or has a field of the wrong type (a seed that is not
    an integer would count as a seed of its own)."""
    record = layout.read_run_record(run_dir)
    resolved, resolved_problem = _mapping(run_dir / layout.RESOLVED, yaml.safe_load)
    environment, environment_problem = _mapping(run_dir / layout.ENVIRONMENT, json.loads)
    sections = {section: resolved.get(section) or {} for section in _SECTIONS}
    fields = {"run.json": record, "resolved.yaml training": sections["training"],
              "resolved.yaml distribution": sections["distribution"]}
    problems = [resolved_problem, environment_problem, *(
        f"{layout.RESOLVED} section {section} is a {type(value).__name__}, not a mapping"
        for section, value in sections.items() if not isinstance(value, Mapping))]
    if not any(problems):
        problems += [f"{where} {name} is {str(fields[where][name])[:40]!r}, not an integer"
                     for where, names in _INTEGERS.items() for name in names
                     if fields[where].get(name) is not None and type(fields[where][name]) is not int]
    return record, resolved, environment, next((p for p in problems if p), "")


def _mapping(path: Path, parse: Any) -> tuple[dict[str, Any], str]:
    """The mapping in a JSON or YAML file ({} when it does not exist) and "", or ({}, why it is unusable)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError) as error:
        return {}, f"{path.name} unreadable ({type(error).__name__})"
    try:
        value = parse(text)
    except (ValueError, yaml.YAMLError) as error:
        return {}, f"{path.name} is not valid {path.suffix[1:].upper()} ({type(error).__name__})"
    if not isinstance(value, dict):
        return {}, f"{path.name} holds a {type(value).__name__}, not a mapping"
    return value, ""


def _load_run(arm: str, run_dir: Path) -> tuple[Run | None, str, int | None]:
    """(the run, "", its seed) when usable, else (None, why not, its seed as far as its records tell: None when
    they do not)."""
    record, resolved, environment, problem = _records(run_dir)
    seed = None if problem else _seed_of(record, resolved)
    if problem:
        return None, problem, seed
    metrics, problem = _usable_metrics(run_dir, record)
    if metrics is None:
        return None, problem, seed
    return Run(arm, str(record.get("label", arm)), run_dir, metrics, record, environment, resolved), "", seed


def _skip(run_dir: Path, problem: str) -> None:
    warnings.warn(f"skipped run {run_dir}: {problem}", SkippedRunWarning, stacklevel=3)


def seed_runs(results: Path, spec: str, profile: str) -> dict[str, list[Run]]:
    """arm → the newest complete run of each of its seeds (by seed), arms in directory order. Newest: the latest
    environment time_utc, then the run id. Unusable runs newer than their seed's chosen run are skipped with a
    warning."""
    arms: dict[str, list[Run]] = {}
    for arm_dir in layout.arm_dirs(results, spec, profile):
        runs = _newest_per_seed(arm_dir.name, layout.run_dirs(arm_dir))
        if runs:
            arms[arm_dir.name] = runs
    return arms


def variant_runs(results: Path, spec: str, profile: str) -> dict[tuple[str, str], list[Run]]:
    """(arm, variant) → the newest complete run of each seed, for runs grouped by their run ID less its '-seed<S>'
    (`layout.variant_of`): the diagnostic runs of `run --run-id VARIANT --seeds ...`, by arm and variant name."""
    found: dict[tuple[str, str], list[Run]] = {}
    for arm_dir in layout.arm_dirs(results, spec, profile):
        variants: dict[str, list[Path]] = {}
        for run_dir in layout.run_dirs(arm_dir):
            variants.setdefault(layout.variant_of(run_dir.name), []).append(run_dir)
        for variant in sorted(variants):
            runs = _newest_per_seed(arm_dir.name, variants[variant])
            if runs:
                found[(arm_dir.name, variant)] = runs
    return found


def _newest_per_seed(arm: str, run_dirs: list[Path]) -> list[Run]:
    """The newest complete run of each seed among `run_dirs`, by seed; newer unusable runs (and damaged runs, whose
    seed is unknown) are skipped with a warning."""
    loaded = [(run_dir, *_load_run(arm, run_dir)) for run_dir in run_dirs]
    newest: dict[int, Run] = {}
    for run_dir, run, problem, seed in sorted(loaded, key=lambda item: (_started(item[0]), item[0].name),
                                              reverse=True):
        if seed in newest:
            continue
        if run is None or seed is None:
            _skip(run_dir, problem)
        else:
            newest[seed] = run
    return [newest[seed] for seed in sorted(newest)]


def _started(run_dir: Path) -> str:
    return str(_mapping(run_dir / layout.ENVIRONMENT, json.loads)[0].get("time_utc", ""))


def newest_complete_runs(results: Path, spec: str, profile: str) -> dict[str, Run]:
    """arm → its newest complete run, in the order the arms first appear (by directory name)."""
    runs: dict[str, Run] = {}
    for arm_dir in layout.arm_dirs(results, spec, profile):
        for run_dir in layout.run_dirs(arm_dir)[::-1]:
            run, problem, _ = _load_run(arm_dir.name, run_dir)
            if run is None:
                _skip(run_dir, problem)
                continue
            runs[arm_dir.name] = run
            break
    return runs


class SkippedRunWarning(UserWarning):
    """A run was left out of figures and reports (the message names it and says why)."""


_NEEDED = ("step", "examples", "seconds", "train_loss", "train_error", "val_loss", "val_error")


def _usable_metrics(run_dir: Path, record: dict[str, Any]) -> tuple[pd.DataFrame | None, str]:
    """(metrics, "") for a complete run whose metrics.csv is whole, else (None, why it cannot be used): unreadable,
    not UTF-8, a row with the wrong number of cells, a last row without its line end (cut mid-number), a
    non-numeric value, a step that is not a finite integer or not increasing, or ending before the run's last step."""
    status = record.get("status")
    if status not in (layout.COMPLETE, layout.DIVERGED):
        return None, f"incomplete (status {status or 'unknown: no readable run.json'})"
    try:
        text = (run_dir / layout.METRICS).read_bytes().decode("utf-8")
        cells = list(csv.reader(io.StringIO(text, newline="")))
        metrics = pd.read_csv(io.StringIO(text))
    except (OSError, ValueError, csv.Error) as error:  # missing, empty, binary (UnicodeDecodeError), malformed
        return None, f"metrics.csv unreadable ({type(error).__name__}: {' '.join(str(error).split())[:80]})"
    missing = [c for c in _NEEDED if c not in metrics.columns]
    if missing:
        return None, f"metrics.csv lacks columns {', '.join(missing)}"
    if metrics.empty:
        return None, "metrics.csv has no rows"
    garbled = [c for c in _NEEDED if not pd.api.types.is_numeric_dtype(metrics[c])]
    if garbled or metrics["step"].isna().any():
        return None, f"metrics.csv has non-numeric values in {', '.join(garbled or ['step'])}"
    steps = metrics["step"]
    if not (np.isfinite(steps) & (steps == steps.round()) & (steps >= 0)).all():
        return None, "metrics.csv has a step that is not a whole number ≥ 0"
    if not steps.is_monotonic_increasing or steps.duplicated().any():
        return None, "metrics.csv's steps are not increasing (a step repeated or out of order)"
    last, expected = int(steps.iloc[-1]), record.get("steps")
    if isinstance(expected, int) and last < expected and status != layout.DIVERGED:
        return None, f"incomplete: metrics.csv ends at step {last} of {expected} (cut short)"
    uneven = next((number for number, row in enumerate(cells, start=1) if len(row) != len(cells[0])), None)
    if uneven is not None:
        return None, f"metrics.csv line {uneven} has {len(cells[uneven - 1])} cells, not {len(cells[0])}"
    if not text.endswith("\n"):
        return None, "metrics.csv's last row is cut (no line end)"
    return metrics, ""


def available_profiles(results: Path, spec: str) -> list[str]:
    """Profiles with at least one complete run, in the order paper, cpu, smoke, then others."""
    base = layout.spec_dir(results, spec)
    found = [p.name for p in base.iterdir() if p.is_dir() and newest_complete_runs(results, spec, p.name)] if (
        base.is_dir()) else []
    return sorted(found, key=lambda p: (PROFILE_PREFERENCE.index(p) if p in PROFILE_PREFERENCE else 9, p))


def series(run: Run, x: str, y: str, split: str) -> tuple[pd.Series, pd.Series]:
    """(x values, y values) of the rows where `split`_`y` is logged: split 'train' or 'val', y 'loss' or 'error'."""
    column = f"{split}_{y}"
    rows = run.metrics.dropna(subset=[column])
    return rows[x], rows[column]
