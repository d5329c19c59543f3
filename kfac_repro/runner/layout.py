"""The results layout, in one place: a run lives in OUT/<spec>/<profile>/<arm>/<run-id>/ (its record in run.json),
a grid search of an arm in OUT/<spec>/<profile>/grid-<arm>/ (not an arm of any figure), each of its combinations
in grid-<arm>/<combination>/<spec>/<profile>/<arm>/run/. Every reader and writer of that layout goes through this
module.

Every name that becomes a path component (spec, profile, arm, run ID, grid combination) is checked against the safe
character set of `specs.names`, and every directory and file below OUT is created and opened without following symlinks
(runner/safe_paths.py), so nothing is ever written outside OUT. A new run directory is claimed with an exclusive
mkdir (two runs started together never share one), and a run directory is locked (flock) by the process that trains
it, so a second process cannot resume a run that is still being written.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kfac_repro.distribute import interrupts
from kfac_repro.runner import safe_paths
from kfac_repro.specs.names import GRID_PREFIX, name_problem

GRID_RUN_ID = "run"  # the run ID of every grid combination (each is one run)
RUN_RECORD = "run.json"
COMPLETE, DIVERGED = "complete", "diverged"  # run.json statuses of a run that is a result (a diverged run stopped
# at the divergence bound and is kept: plotted, reported, never trained again); others: running, interrupted, failed
METRICS = "metrics.csv"  # a run's rows (runner/loop.py writes, plotting reads)
RESOLVED = "resolved.yaml"  # a run's resolved arm settings
ENVIRONMENT = "environment.json"  # a run's versions, device, host and commit (runner/environment.py)
REFRESH_LOG = "refreshes.log"  # a K-FAC run's inverse hand-overs
LEADERBOARD = "leaderboard.csv"  # a grid's ranked combinations
GRID_BEST = "best.json"  # a grid's best combination, which `run --tuned` applies
DIAGNOSTICS = "diagnostics"  # results/diagnostics/: runs that vary a figure's arm, in the same layout
REPRODUCE_LOG = "reproduce.jsonl"  # one line per `reproduce` invocation into a results root: its wall and CPU time


class LayoutError(ValueError):
    """A name that cannot be a path component, a run directory taken or missing, or a run in use."""


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


def claim_run_dir(arms: Path, run_id: str | None, suffix: str = "", root: Path | None = None) -> Path:
    """Create a new run directory <run_id><suffix> under `arms` with an exclusive mkdir, the directories from `root`
    (default: `arms` itself) down created without following symlinks (safe_paths.UnsafePath for one planted there).
    A given `run_id` that exists is refused; the default ID (the start time) gets -2, -3, ... before the suffix when
    another run took it in the same second."""
    root = arms if root is None else root
    relative = safe_paths.make_dirs(root, arms.relative_to(root)).relative_to(root)
    if run_id is not None:
        target = relative / check_name(run_id + suffix, "run ID")
        try:
            return safe_paths.make_dir_exclusively(root, target)
        except FileExistsError:
            raise LayoutError(f"run directory {root / target} already exists: give another --run-id, or --resume "
                              "to continue it") from None
    base = new_run_id()
    for attempt in range(1, 1000):
        try:
            return safe_paths.make_dir_exclusively(
                root, relative / ((base if attempt == 1 else f"{base}-{attempt}") + suffix))
        except FileExistsError:
            continue
    raise LayoutError(f"no free run directory under {arms} for {base}")


def existing_run_dir(arms: Path, run_id: str | None, suffix: str = "", root: Path | None = None) -> Path:
    """The run to resume: <run_id><suffix> under `arms` (which must exist), else the newest run there whose name
    ends with `suffix`; every directory from `root` (default: `arms`) down to it checked to be no symlink
    (safe_paths.UnsafePath)."""
    root = arms if root is None else root
    if run_id is not None:
        target = arms / check_name(run_id + suffix, "run ID")
        if not target.is_dir() and not target.is_symlink():
            raise LayoutError(f"--resume: no run {target.name!r} to resume ({target} does not exist)")
    else:
        existing = [p for p in run_dirs(arms) if p.name.endswith(suffix)]
        if not existing:
            raise LayoutError(f"--resume: no earlier run{' ending ' + suffix if suffix else ''} under {arms}")
        target = existing[-1]
    return safe_paths.check_dirs(root, target.relative_to(root))


def run_dirs(arms: Path) -> list[Path]:
    """The run directories under `arms`, oldest first."""
    return sorted((p for p in arms.iterdir() if p.is_dir()), key=_run_order) if arms.is_dir() else []


def _run_order(path: Path) -> tuple[str, int, str]:
    """Run IDs in start order: '20260101T000000' < '20260101T000000-2' < '20260101T000000-10' (a seed suffix
    '-seed<S>' aside)."""
    name = _SEED_SUFFIX.sub("", path.name)
    base, _, suffix = name.rpartition("-")
    return (base, int(suffix), path.name) if base and suffix.isdigit() else (name, 1, path.name)


def lock_run_dir(run_dir: Path, what: str = "run directory") -> IO[str]:
    """Hold an exclusive lock on a directory (a run's, or a grid search's) until the returned handle is closed (or
    the process ends); LayoutError naming the process that holds it."""
    handle = safe_paths.open_file(run_dir, ".lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise LayoutError(f"{what} {run_dir} is in use by another process"
                          f"{' (pid ' + holder + ')' if holder.isdigit() else ''}: wait for it to end") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """A run's run.json ({} when missing, unreadable or not a mapping)."""
    try:
        record = json.loads(safe_paths.read_text(run_dir, RUN_RECORD))
    except (OSError, ValueError):  # ValueError: also UnsafePath (a symlink is not read) and UnicodeDecodeError
        return {}
    return record if isinstance(record, dict) else {}


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Replace a run's run.json atomically (readers never see half a record), and wholly: an abort by a second
    signal comes after the write, not in the middle of it (which left the old record, often `running`)."""
    with interrupts.shielded():
        safe_paths.write_atomic(run_dir, RUN_RECORD, json.dumps(record, indent=2) + "\n")


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

