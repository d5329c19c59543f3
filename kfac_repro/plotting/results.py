"""Finding runs under results/<spec>/<profile>/<arm>/<run-id>/ and loading their metrics: for each arm the
newest complete run (run ids sort by start time), or the newest complete run of every seed. Grid-search runs
(grid-<arm>/…) are not arms of a figure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

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
    def seed(self) -> int:
        """run.json's seed; runs made before seeds were recorded: resolved.yaml's training.seed (default 0)."""
        if "seed" in self.record:
            return int(self.record["seed"])
        return int((self.resolved.get("training") or {}).get("seed") or 0)

    @property
    def commit(self) -> str:
        return str(self.environment.get("git_commit") or "unknown")

    def setting(self, section: str, name: str) -> Any:
        """A resolved field of the run (None when absent)."""
        return (self.resolved.get(section) or {}).get(name)


def _load_run(arm: str, run_dir: Path) -> Run | None:
    record = _json(run_dir / "run.json")
    if record.get("status") != "complete" or not (run_dir / "metrics.csv").is_file():
        return None
    try:
        resolved = yaml.safe_load((run_dir / "resolved.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        resolved = {}
    return Run(arm, str(record.get("label", arm)), run_dir, pd.read_csv(run_dir / "metrics.csv"), record,
               _json(run_dir / "environment.json"), resolved if isinstance(resolved, dict) else {})


def seed_runs(results: Path, spec: str, profile: str) -> dict[str, list[Run]]:
    """arm → the newest complete run of each of its seeds (by seed), arms in directory order. Newest: the latest
    environment time_utc, then the run id."""
    arms: dict[str, list[Run]] = {}
    base = results / spec / profile
    if not base.is_dir():
        return arms
    for arm_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("grid-")):
        newest: dict[int, Run] = {}
        loaded = [run for p in arm_dir.iterdir() if p.is_dir() and (run := _load_run(arm_dir.name, p))]
        for run in sorted(loaded, key=lambda r: (str(r.environment.get("time_utc", "")), r.directory.name)):
            newest[run.seed] = run
        if newest:
            arms[arm_dir.name] = [newest[seed] for seed in sorted(newest)]
    return arms


def newest_complete_runs(results: Path, spec: str, profile: str) -> dict[str, Run]:
    """arm → its newest complete run, in the order the arms first appear (by directory name)."""
    runs: dict[str, Run] = {}
    base = results / spec / profile
    if not base.is_dir():
        return runs
    for arm_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("grid-")):
        for run_dir in sorted((p for p in arm_dir.iterdir() if p.is_dir()), reverse=True):
            run = _load_run(arm_dir.name, run_dir)
            if run is not None:
                runs[arm_dir.name] = run
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
