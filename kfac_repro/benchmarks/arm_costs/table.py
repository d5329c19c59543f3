"""bench-arms.csv: the per-update cost of every arm of an experiment and its components, measured by
`kfac-repro bench arms` in one process, with the machine recorded in every row (no TensorFlow here: the report
reads it).

Quantities: update (seconds per update as configured), gradient_pass (on `examples` examples), statistics_pass,
apply (preconditioning), inversion (seconds), gradient_bytes and factor_bytes (bytes all-reduced per update and per
statistics step). `value` is the median, low/high the range.

Each `bench arms` is one sitting. A new sitting moves the previous table aside as bench-arms.<its time>.csv, so
that the report can check every verdict with the costs of each earlier sitting of the same commit: timings of one
machine drift between sittings by more than the block ranges of one sitting show.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfac_repro.runner import layout

FILE_NAME = "bench-arms.csv"
MACHINE = ("host", "device", "cpu_model", "cpu_flags", "cpus", "tensorflow",
           "load_before", "load_after", "other_cpu", "commit", "time_utc")
COLUMNS = ("spec", "profile", "arm", "quantity", "examples", "value", "low", "high", "unit", "repeats", *MACHINE)
SHARED_OTHER = 0.05  # other work shared the machine: other processes used more than this share of its CPU time
# while the benchmark ran (arm_costs/other_cpu.py)
SHARED_LOAD = 0.5  # tables without other_cpu (older): a 1-minute load average above this before timing, or above
# the core count plus this after it (the benchmark alone can raise the load average to the core count, not past it)


def table_path(results: Path, spec: str, profile: str) -> Path:
    """Where `bench arms` writes an experiment profile's table: RESULTS/<spec>/<profile>/bench-arms.csv."""
    return layout.profile_dir(results, spec, profile) / FILE_NAME


def shared_by_other_cpu(share: float) -> bool:
    """Whether other processes' share of the machine's CPU time while timing makes it a shared machine."""
    return share > SHARED_OTHER


@dataclass(frozen=True)
class Measurement:
    """One measured quantity of one arm: value (seconds or bytes), its range over repeats, and its unit."""

    arm: str
    quantity: str
    examples: int
    value: float
    low: float
    high: float
    unit: str
    repeats: int


@dataclass(frozen=True)
class ArmCosts:
    """An arm's measurements by (quantity, examples), and the machine they were taken on."""

    values: Mapping[tuple[str, int], Measurement]
    machine: Mapping[str, str]

    def get(self, quantity: str, examples: int | None = None) -> Measurement | None:
        matches = [m for (q, e), m in self.values.items() if q == quantity and (examples is None or e == examples)]
        return matches[0] if matches else None

    @property
    def shared(self) -> bool:
        """Whether other work ran on the machine while it was timed (SHARED_OTHER; SHARED_LOAD for older tables)."""
        if self.other_cpu is not None:
            return shared_by_other_cpu(self.other_cpu)
        before, after, cores = (float(self.machine.get(k) or "nan") for k in ("load_before", "load_after", "cpus"))
        return any(math.isnan(v) for v in (before, after, cores)) or before > SHARED_LOAD or \
            after > cores + SHARED_LOAD

    @property
    def other_cpu(self) -> float | None:
        """Other processes' share of the machine's CPU time while it was timed; None in older tables."""
        other = self.machine.get("other_cpu")
        return float(other) if other else None

    @property
    def load(self) -> str:
        """What the machine did besides the benchmark, in words."""
        if self.other_cpu is not None:
            return f"other processes used {100 * self.other_cpu:.1f}% of its CPU time while timing"
        return f"load {self.machine.get('load_before')} before, {self.machine.get('load_after')} after"


def earlier_sittings(path: Path) -> list[Path]:
    """The tables that newer sittings moved aside from `path`, oldest first."""
    return sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))


def sitting_time(costs: Mapping[str, ArmCosts]) -> str:
    """When a table's sitting began (its time_utc), '' for an empty table."""
    return next((c.machine.get("time_utc", "") for c in costs.values()), "")


def sitting_commit(costs: Mapping[str, ArmCosts]) -> str:
    """The commit a table's sitting timed, '' for an empty table."""
    return next((c.machine.get("commit", "") for c in costs.values()), "")


def sitting_cpu(costs: Mapping[str, ArmCosts]) -> str:
    """The CPU a table's sitting ran on, 'model [flags]' ('' for an empty table or one that predates the record)."""
    machine = next((c.machine for c in costs.values()), {})
    model, flags = machine.get("cpu_model", ""), machine.get("cpu_flags", "")
    return f"{model} [{flags}]" if model else ""


def write_costs(path: Path, spec: str, profile: str, measurements: list[Measurement],
                machine: Mapping[str, Any]) -> None:
    """All rows at once, through a temporary file (a killed benchmark leaves the previous table); a previous table
    is kept as an earlier sitting (`earlier_sittings`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".csv.tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for m in measurements:
            writer.writerow({"spec": spec, "profile": profile, **asdict(m),
                             **{k: machine.get(k, "") for k in MACHINE}})
    if path.is_file():
        stamp = "".join(ch for ch in sitting_time(read_costs(path)) if ch.isalnum()) or "undated"
        path.replace(path.with_name(f"{path.stem}.{stamp}{path.suffix}"))
    temporary.replace(path)


def read_costs(path: Path) -> dict[str, ArmCosts]:
    """arm → its costs; {} when the file is absent."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    arms: dict[str, dict[tuple[str, int], Measurement]] = {}
    machines: dict[str, dict[str, str]] = {}
    for row in rows:
        m = Measurement(row["arm"], row["quantity"], int(row["examples"]), float(row["value"]), float(row["low"]),
                        float(row["high"]), row["unit"], int(row["repeats"]))
        arms.setdefault(m.arm, {})[(m.quantity, m.examples)] = m
        machines[m.arm] = {k: row.get(k) or "" for k in MACHINE}
    return {arm: ArmCosts(values, machines[arm]) for arm, values in arms.items()}
