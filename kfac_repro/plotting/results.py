"""Finding runs under results/<spec>/<profile>/<arm>/<run-id>/ and loading their metrics: for each arm the
newest complete run (run ids sort by start time). Grid-search runs (grid-<arm>/…) are not arms of a figure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

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

    @property
    def method(self) -> str:
        return str(self.record.get("method", ""))


def newest_complete_runs(results: Path, spec: str, profile: str) -> dict[str, Run]:
    """arm → its newest complete run, in the order the arms first appear (by directory name)."""
    runs: dict[str, Run] = {}
    base = results / spec / profile
    if not base.is_dir():
        return runs
    for arm_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("grid-")):
        for run_dir in sorted((p for p in arm_dir.iterdir() if p.is_dir()), reverse=True):
            record = _json(run_dir / "run.json")
            if record.get("status") == "complete" and (run_dir / "metrics.csv").is_file():
                runs[arm_dir.name] = Run(arm_dir.name, str(record.get("label", arm_dir.name)), run_dir,
                                         pd.read_csv(run_dir / "metrics.csv"), record,
                                         _json(run_dir / "environment.json"))
                break
    return runs


def available_profiles(results: Path, spec: str) -> list[str]:
    """Profiles with at least one complete run, in the order paper, cpu, smoke, then others."""
    base = results / spec
    found = [p.name for p in base.iterdir() if p.is_dir() and newest_complete_runs(results, spec, p.name)] if (
        base.is_dir()) else []
    return sorted(found, key=lambda p: (PROFILE_PREFERENCE.index(p) if p in PROFILE_PREFERENCE else 9, p))


def series(run: Run, x: str, y: str, split: str) -> tuple[pd.Series, pd.Series]:
    """(x values, y values) of the rows where `split`_`y` is logged: split 'train' or 'val', y 'loss' or 'error'."""
    column = f"{split}_{y}"
    rows = run.metrics.dropna(subset=[column])
    return rows[x], rows[column]


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
