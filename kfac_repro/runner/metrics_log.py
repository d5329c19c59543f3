"""metrics.csv: one row per logged step, written so that a killed and resumed run has every step exactly once.

Rows are appended and flushed one at a time; on resume, rows after the restored checkpoint's step are dropped
(they will be logged again) by rewriting the file through a temporary file and an atomic rename. The file and its
temporary are opened in the run directory without following symlinks (runner/safe_paths.py). A missing value is an
empty cell; NaN is written `nan` (and read back as NaN).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

from kfac_repro.runner import safe_paths

COLUMNS = (
    "step", "examples", "seconds", "train_loss", "train_error", "val_loss", "val_error",
    "step_size", "learning_rate", "kl_clip", "inverse_staleness", "first_update_seconds",
    "train_eval_loss", "train_eval_error",
)


class MetricsLog:
    """Appends rows with the COLUMNS above to `path` in a run directory (missing values are written empty);
    `first_train_loss` is the first training loss kept on resume (None: none yet; the step-0 row has none) and
    `last` the last row kept (numbers, None where empty; {} for a new log)."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        kept = [] if resume_step is None or not path.exists() else [
            row for row in read_rows(path) if int(row["step"]) <= resume_step]
        self._write_rows(kept)
        self.first_train_loss = next((float(row["train_loss"]) for row in kept if row.get("train_loss")), None)
        self.last: dict[str, float | None] = _numbers(kept[-1]) if kept else {}
        self._handle = safe_paths.open_file(path.parent, path.name, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=COLUMNS)

    def _write_rows(self, rows: list[dict[str, str]]) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        safe_paths.write_atomic(self.path.parent, self.path.name, text.getvalue(), newline="")

    def append(self, row: Mapping[str, float | int | None]) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"metrics row has unknown columns {sorted(unknown)}")
        self._writer.writerow({c: _format(row.get(c)) for c in COLUMNS})
        self._handle.flush()

    def sync(self) -> None:
        """Force the rows so far to disk (done before every checkpoint)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a metrics.csv; a last line cut short by a crash is dropped."""
    with safe_paths.open_file(path.parent, path.name, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row for row in rows if None not in row.values() and row.get("step", "").isdigit()]


def _numbers(row: dict[str, str]) -> dict[str, float | None]:
    return {c: float(v) if v else None for c, v in row.items()}


def _format(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"
