"""environment.json of a run: versions, device, host and git commit, for the record."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from kfac_repro.runner import layout, safe_paths


def git_commit(directory: Path) -> str | None:
    """The commit checked out in `directory` (with '+dirty' for local changes), or None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=directory, capture_output=True, text=True,
                               check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment_record(replicas: int, workers: int) -> dict[str, object]:
    import keras
    import numpy as np
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "gpus": gpus,
        "device": ", ".join(gpus) if gpus else f"CPU ({platform.processor() or platform.machine()})",
        "replicas": replicas,
        "workers": workers,
        "git_commit": git_commit(Path(__file__).resolve().parent),
    }


def write_environment(run_dir: Path, record: dict[str, object]) -> None:
    """run_dir/environment.json (written as runner/safe_paths.py writes)."""
    safe_paths.write_atomic(run_dir, layout.ENVIRONMENT, json.dumps(record, indent=2) + "\n")
