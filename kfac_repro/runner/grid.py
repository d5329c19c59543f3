"""Grid search over an arm's settings: the combinations, and the leaderboard of their finished runs.

Each combination is an ordinary run of the arm with `--set` overrides, in its own directory of the grid's
(runner/layout.py: grid-<arm>/<combination-id>/<spec>/<profile>/<arm>/run/). The leaderboard ranks combinations
by their best validation error (ties: the earlier time to the target error); the target error defaults to the
median of the combinations' best errors, so that the time-to-target column separates the faster half.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kfac_repro.runner import layout, safe_paths
from kfac_repro.runner.metrics_log import read_rows


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, as {section.field: value}, in a stable order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def combination_id(params: Mapping[str, Any]) -> str:
    """A directory name for a combination, e.g. 'learning_rate=0.1,bn_chunk_size=32'."""
    return ",".join(f"{key.split('.')[-1]}={value}" for key, value in params.items())


def parse_param(text: str) -> tuple[str, list[Any]]:
    """'optimizer.learning_rate=0.1,0.3' → ('optimizer.learning_rate', [0.1, 0.3])."""
    from kfac_repro.specs.yaml_source import parse_scalar

    key, separator, values = text.partition("=")
    if not separator or key.count(".") != 1 or not values:
        raise ValueError(f"--param {text!r}: expected SECTION.FIELD=V1,V2,..., e.g. optimizer.learning_rate=0.1,0.3")
    return key.strip(), [parse_scalar(v.strip()) for v in values.split(",")]


def summarise(run_dir: Path) -> dict[str, Any]:
    """Final and best losses and errors of one finished run (its metrics.csv and run.json)."""
    try:
        rows = read_rows(run_dir / layout.METRICS)
    except (OSError, ValueError):  # missing, or not a CSV (binary): the run counts as having no rows
        rows = []
    status = layout.run_status(run_dir) or "missing"
    evaluated = [r for r in rows if r["val_error"] not in ("", "nan")]  # nan: a diverged evaluation
    return {
        "status": status,
        "steps": int(rows[-1]["step"]) if rows else 0,
        "seconds": float(rows[-1]["seconds"]) if rows else math.nan,
        "final_train_loss": float(rows[-1]["train_loss"]) if rows else math.nan,
        "final_val_loss": float(evaluated[-1]["val_loss"]) if evaluated else math.nan,
        "best_val_loss": min((float(r["val_loss"]) for r in evaluated), default=math.nan),
        "best_val_error": min((float(r["val_error"]) for r in evaluated), default=math.nan),
        "curve": [(float(r["seconds"]), float(r["val_error"])) for r in evaluated],
    }


def leaderboard(entries: list[tuple[dict[str, Any], Path]], target_error: float | None) -> list[dict[str, Any]]:
    """Rows ranked best first, with the time each combination first reached the target validation error."""
    summaries = [(params, run_dir, summarise(run_dir)) for params, run_dir in entries]
    finished = [s["best_val_error"] for _, _, s in summaries if not math.isnan(s["best_val_error"])]
    target = target_error if target_error is not None else (statistics.median(finished) if finished else math.nan)
    rows = []
    for params, run_dir, summary in summaries:
        reached = [seconds for seconds, error in summary.pop("curve") if error <= target]
        rows.append({**params, **summary, "target_error": target,
                     "seconds_to_target": reached[0] if reached else math.nan, "run_dir": str(run_dir)})

    def rank_key(row: dict[str, Any]) -> tuple[float, float]:
        error, seconds = row["best_val_error"], row["seconds_to_target"]
        return (math.inf if math.isnan(error) else error, math.inf if math.isnan(seconds) else seconds)

    rows.sort(key=rank_key)
    for rank, row in enumerate(rows, start=1):
        row["rank"], row["best"] = rank, rank == 1 and row["status"] == layout.COMPLETE
    return rows


def write_leaderboard(path: Path, rows: list[dict[str, Any]], params: Sequence[str]) -> None:
    columns = ["rank", "best", *params, "status", "steps", "seconds", "final_train_loss", "final_val_loss",
               "best_val_loss", "best_val_error", "target_error", "seconds_to_target", "run_dir"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    safe_paths.write_atomic(path.parent, path.name, text.getvalue(), newline="")
