"""The results layout, in one place: a run lives in OUT/<spec>/<profile>/<arm>/<run-id>/ (its record in run.json),
a grid search of an arm in OUT/<spec>/<profile>/grid-<arm>/ (not an arm of any figure), each of its combinations
in grid-<arm>/<combination>/<spec>/<profile>/<arm>/run/. Every reader and writer of that layout goes through this
module.

Every name that becomes a path component (spec, profile, arm, run ID, grid combination) is checked against a safe
character set, so nothing is ever written outside OUT. A new run directory is claimed with an exclusive mkdir (two
runs started together never share one), and a run directory is locked (flock) by the process that trains it, so a
second process cannot resume a run that is still being written.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kfac_repro.runner import interrupts

GRID_PREFIX = "grid-"
GRID_RUN_ID = "run"  # the run ID of every grid combination (each is one run)
RUN_RECORD = "run.json"
COMPLETE, DIVERGED = "complete", "diverged"  # run.json statuses of a run that is a result (a diverged run stopped
# at the divergence bound and is kept: plotted, reported, never trained again); others: running, interrupted, failed
METRICS = "metrics.csv"  # a run's rows (runner/loop.py writes, plotting reads)
REFRESH_LOG = "refreshes.log"  # a K-FAC run's inverse hand-overs
LEADERBOARD = "leaderboard.csv"  # a grid's ranked combinations
GRID_BEST = "best.json"  # a grid's best combination, which `run --tuned` applies
DIAGNOSTICS = "diagnostics"  # results/diagnostics/: runs that vary a figure's arm, in the same layout
REPRODUCE_LOG = "reproduce.jsonl"  # one line per `reproduce` invocation into a results root: its wall and CPU time
MAX_NAME = 128
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,-]*")
SAFE_NAME_RULE = ("letters, digits and . _ - + = , only, starting with a letter, digit or _, no '..', "
                  f"at most {MAX_NAME} characters")


class LayoutError(ValueError):
    """A name that cannot be a path component, a run directory taken or missing, or a run in use."""


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a directory name of the layout (None if it can)."""
    if not isinstance(name, str):
        return f"expected a string, found {type(name).__name__}"
    if not name or len(name) > MAX_NAME or not _SAFE.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 40 else name[:40] + "…"
        return f"{shown!r} cannot be a directory name: use {SAFE_NAME_RULE}"
    return None


def check_name(name: str, what: str) -> str:
    """`name` unchanged, or LayoutError saying what is wrong with it (`what`: 'run ID', 'arm', ...)."""
    problem = name_problem(name)
    if problem:
        raise LayoutError(f"{what}: {problem}")
    return name


def arm_dir(out: Path, spec: str, profile: str, arm: str) -> Path:
    """OUT/<spec>/<profile>/<arm>: the runs of one arm."""
    return out / check_name(spec, "spec name") / check_name(profile, "profile") / check_name(arm, "arm")


def grid_dir(out: Path, spec: str, profile: str, arm: str) -> Path:
    """OUT/<spec>/<profile>/grid-<arm>: a grid search of one arm (leaderboard.csv, best.json, combinations)."""
    return arm_dir(out, spec, profile, GRID_PREFIX + check_name(arm, "arm"))


def combination_dir(grid: Path, combination: str) -> Path:
    """The --out directory of one grid combination inside a grid directory."""
    return grid / check_name(combination, "grid combination")


def combination_run_dir(grid: Path, combination: str, spec: str, profile: str, arm: str) -> Path:
    """The run of one grid combination: <grid>/<combination>/<spec>/<profile>/<arm>/run."""
    return arm_dir(combination_dir(grid, combination), spec, profile, arm) / GRID_RUN_ID


def is_grid_dir(path: Path) -> bool:
    return path.name.startswith(GRID_PREFIX)


def grid_dirs(profile_dir: Path) -> dict[str, Path]:
    """arm → its grid-search directory under OUT/<spec>/<profile>, for the arms that have one, by name."""
    found = sorted(p for p in profile_dir.iterdir() if p.is_dir() and is_grid_dir(p)) if profile_dir.is_dir() else []
    return {p.name.removeprefix(GRID_PREFIX): p for p in found}


def spec_dir(out: Path, spec: str) -> Path:
    """OUT/<spec>: an experiment's results, one directory per profile. For reading (names unchecked)."""
    return out / spec


def profile_dir(out: Path, spec: str, profile: str) -> Path:
    """OUT/<spec>/<profile>: its arms, grid searches and cost table. For reading (names unchecked)."""
    return spec_dir(out, spec) / profile


def arm_dirs(out: Path, spec: str, profile: str) -> list[Path]:
    """The arm directories of a spec's profile that exist (grid searches excluded), by name. For reading: the
    names found are not checked (nothing is written from them)."""
    base = profile_dir(out, spec, profile)
    return sorted(p for p in base.iterdir() if p.is_dir() and not is_grid_dir(p)) if base.is_dir() else []


def new_run_id() -> str:
    """The default run ID: the UTC start time (IDs sort by start time)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


_SEED_SUFFIX = re.compile(r"-seed[0-9]+$")


def seed_suffix(seed: int | None) -> str:
    """The run-ID suffix of one run of a seed list: '-seed<S>' ('' for a run without one)."""
    return "" if seed is None else f"-seed{seed}"


def variant_of(run_id: str) -> str:
    """A run ID without its seed suffix: the name shared by the seeds of one `run --run-id ID --seeds ...`."""
    return _SEED_SUFFIX.sub("", run_id)


def run_dir(out: Path, spec: str, profile: str, arm: str, run_id: str, seed: int | None = None) -> Path:
    """OUT/<spec>/<profile>/<arm>/<run-id>[-seed<S>]: where a run with a given ID is (or would be)."""
    return arm_dir(out, spec, profile, arm) / check_name(run_id + seed_suffix(seed), "run ID")


def claim_run_dir(arms: Path, run_id: str | None, suffix: str = "") -> Path:
    """Create a new run directory <run_id><suffix> under `arms` with an exclusive mkdir. A given `run_id` that
    exists is refused; the default ID (the start time) gets -2, -3, ... before the suffix when another run took
    it in the same second."""
    arms.mkdir(parents=True, exist_ok=True)
    if run_id is not None:
        target = arms / check_name(run_id + suffix, "run ID")
        try:
            target.mkdir()
        except FileExistsError:
            raise LayoutError(f"run directory {target} already exists: give another --run-id, or --resume to "
                              "continue it") from None
        return target
    base = new_run_id()
    for attempt in range(1, 1000):
        target = arms / ((base if attempt == 1 else f"{base}-{attempt}") + suffix)
        try:
            target.mkdir()
        except FileExistsError:
            continue
        return target
    raise LayoutError(f"no free run directory under {arms} for {base}")


def existing_run_dir(arms: Path, run_id: str | None, suffix: str = "") -> Path:
    """The run to resume: <run_id><suffix> under `arms` (which must exist), else the newest run there whose name
    ends with `suffix`."""
    if run_id is not None:
        target = arms / check_name(run_id + suffix, "run ID")
        if not target.is_dir():
            raise LayoutError(f"--resume: no run {target.name!r} to resume ({target} does not exist)")
        return target
    existing = [p for p in run_dirs(arms) if p.name.endswith(suffix)]
    if not existing:
        raise LayoutError(f"--resume: no earlier run{' ending ' + suffix if suffix else ''} under {arms}")
    return existing[-1]


def run_dirs(arms: Path) -> list[Path]:
    """The run directories under `arms`, oldest first."""
    return sorted((p for p in arms.iterdir() if p.is_dir()), key=_run_order) if arms.is_dir() else []


def _run_order(path: Path) -> tuple[str, int, str]:
    """Run IDs in start order: '20260101T000000' < '20260101T000000-2' < '20260101T000000-10' (a seed suffix
    '-seed<S>' aside)."""
    name = _SEED_SUFFIX.sub("", path.name)
    base, _, suffix = name.rpartition("-")
    return (base, int(suffix), path.name) if base and suffix.isdigit() else (name, 1, path.name)


def lock_run_dir(run_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the run directory until the returned handle is closed (or the process ends);
    LayoutError if another process holds it."""
    handle = (run_dir / ".lock").open("a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise LayoutError(f"run directory {run_dir} is in use by another process (pid in {run_dir / '.lock'})"
                          ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """A run's run.json ({} when missing, unreadable or not a mapping)."""
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Replace a run's run.json atomically (readers never see half a record), and wholly: an abort by a second
    signal comes after the write, not in the middle of it (which left the old record, often `running`)."""
    temporary = run_dir / (RUN_RECORD + ".tmp")
    with interrupts.shielded():
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        temporary.replace(run_dir / RUN_RECORD)


def run_status(run_dir: Path) -> str | None:
    """The status in a run's run.json ('running', 'complete', 'interrupted', 'diverged', 'failed'), None if the run
    never started (or its run.json is unreadable)."""
    status = read_run_record(run_dir).get("status")
    return None if status is None else str(status)


def run_complete(run_dir: Path, steps: int) -> bool:
    """Whether `run_dir` holds a complete run of at least `steps` updates (a shorter one is resumed, to `steps`),
    its metrics.csv still there (a run that lost it is not a result)."""
    record = read_run_record(run_dir)
    return (record.get("status") == COMPLETE and int(record.get("steps", 0)) >= steps
            and (run_dir / METRICS).is_file())

