"""Grid search: combinations, leaderboard ranking and time-to-target, and the command on the smoke profile."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kfac_repro.runner.grid import combination_id, combinations, leaderboard, parse_param
from kfac_repro.runner.metrics_log import MetricsLog


def fake_run(run_dir: Path, errors: list[float], status: str = "complete") -> Path:
    run_dir.mkdir(parents=True)
    log = MetricsLog(run_dir / "metrics.csv")
    for i, error in enumerate(errors, start=1):
        log.append({"step": 10 * i, "seconds": 5.0 * i, "train_loss": error * 2, "val_loss": error * 3,
                    "val_error": error})
    log.close()
    (run_dir / "run.json").write_text(json.dumps({"status": status}))
    return run_dir


def test_combinations_and_parameter_parsing() -> None:
    grid = {"optimizer.learning_rate": [0.1, 0.3], "model.bn_chunk_size": [32, 128, 256]}
    combos = combinations(grid)
    assert len(combos) == 6 and combos[0] == {"optimizer.learning_rate": 0.1, "model.bn_chunk_size": 32}
    assert combination_id(combos[-1]) == "learning_rate=0.3,bn_chunk_size=256"
    assert parse_param("optimizer.learning_rate=0.1,0.3, 1") == ("optimizer.learning_rate", [0.1, 0.3, 1])
    with pytest.raises(ValueError, match=r"expected SECTION\.FIELD=V1,V2"):
        parse_param("learning_rate=0.1")


def test_leaderboard_ranks_by_best_error_then_time_to_target(tmp_path: Path) -> None:
    slow = fake_run(tmp_path / "slow", [0.5, 0.4, 0.2])
    fast = fake_run(tmp_path / "fast", [0.4, 0.2, 0.2])
    bad = fake_run(tmp_path / "bad", [0.9, 0.8, 0.7])
    failed = fake_run(tmp_path / "failed", [], status="failed")
    rows = leaderboard([({"lr": 1}, slow), ({"lr": 2}, fast), ({"lr": 3}, bad), ({"lr": 4}, failed)],
                       target_error=0.3)
    assert [r["lr"] for r in rows] == [2, 1, 3, 4]
    assert rows[0]["best"] and not any(r["best"] for r in rows[1:])
    assert rows[0]["seconds_to_target"] == 10.0 and rows[1]["seconds_to_target"] == 15.0
    assert math.isnan(rows[2]["seconds_to_target"]) and rows[3]["status"] == "failed"
    default_target = leaderboard([({"lr": 1}, slow), ({"lr": 2}, fast), ({"lr": 3}, bad)], None)
    assert default_target[0]["target_error"] == 0.2  # median of the best errors 0.2, 0.2, 0.7


def test_leaderboard_survives_a_binary_metrics_file_and_run_record(tmp_path: Path) -> None:
    good = fake_run(tmp_path / "good", [0.5, 0.4])
    broken = fake_run(tmp_path / "broken", [0.5, 0.3])
    (broken / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    (broken / "run.json").write_bytes(b"\xff\xfe{")
    rows = leaderboard([({"lr": 1}, good), ({"lr": 2}, broken)], target_error=None)
    assert [(r["lr"], r["status"], r["steps"]) for r in rows] == [(1, "complete", 20), (2, "missing", 0)]


def test_grid_command_on_the_smoke_profile(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "grid", "cifar10-async", "--arm", "sgd-bn", "--profile", "smoke",
         "--param", "optimizer.learning_rate=0.01,0.1", "--parallel", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "cifar10-async" / "smoke" / "grid-sgd-bn"
    with (root / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["optimizer.learning_rate"] for r in rows) == ["0.01", "0.1"]
    assert [r["best"] for r in rows] == ["True", "False"] and all(r["status"] == "complete" for r in rows)
    best = json.loads((root / "best.json").read_text())
    assert best["params"]["optimizer.learning_rate"] == float(rows[0]["optimizer.learning_rate"])

    # Run again after an interruption: the finished combination is kept, the interrupted one resumed.
    interrupted = root / "learning_rate=0.1" / "cifar10-async" / "smoke" / "sgd-bn" / "run"
    record = json.loads((interrupted / "run.json").read_text())
    (interrupted / "run.json").write_text(json.dumps({**record, "status": "running"}))
    steps_before = (interrupted / "metrics.csv").read_text()
    again = subprocess.run(
        [sys.executable, "-m", "cli", "grid", "cifar10-async", "--arm", "sgd-bn", "--profile", "smoke",
         "--param", "optimizer.learning_rate=0.01,0.1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "kept learning_rate=0.01" in again.stdout and "resumed learning_rate=0.1" in again.stdout
    assert json.loads((interrupted / "run.json").read_text())["status"] == "complete"
    assert (interrupted / "metrics.csv").read_text() == steps_before  # no row lost or duplicated

    # A figure's baseline arm run with the grid's best settings.
    tuned = subprocess.run(
        [sys.executable, "-m", "cli", "run", "cifar10-async", "--arm", "sgd-bn", "--profile", "smoke", "--tuned",
         "--set", "training.steps=2", "--out", str(tmp_path), "--run-id", "tuned"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    run_dir = tmp_path / "cifar10-async" / "smoke" / "sgd-bn" / "tuned"
    resolved = yaml.safe_load((run_dir / "resolved.yaml").read_text())
    assert resolved["optimizer"]["learning_rate"] == best["params"]["optimizer.learning_rate"]
    assert "grid best: learning_rate" in json.loads((run_dir / "run.json").read_text())["label"]


def test_tuned_run_without_a_grid_is_bad_usage(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "run", "cifar10-async", "--arm", "sgd-bn", "--profile", "smoke", "--tuned",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "grid-sgd-bn" in result.stderr and "best.json" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_grid_rejects_a_bad_combination_before_training(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "grid", "cifar10-async", "--arm", "sgd-bn", "--profile", "smoke",
         "--param", "optimizer.learning_rate=0.1,-1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "optimizer.learning_rate" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_second_grid_command_for_the_same_grid_is_refused_naming_the_holder(tmp_path: Path) -> None:
    from kfac_repro.runner import layout

    root = tmp_path / "cifar10-async" / "smoke" / "grid-sgd-bn"
    root.mkdir(parents=True)
    log = root / "learning_rate=0.1.log"
    log.write_text("the first grid's output\n")
    with layout.lock_run_dir(root, "grid search"):  # as the first grid command holds it while it runs
        second = subprocess.run(
            [sys.executable, "-m", "cli", "grid", "cifar10-async", "--arm", "sgd-bn", "--profile", "smoke",
             "--param", "optimizer.learning_rate=0.1", "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"grid search {root} is in use by another process (pid {os.getpid()})" in second.stderr
    assert log.read_text() == "the first grid's output\n"
    assert sorted(p.name for p in root.iterdir()) == [".lock", log.name]  # no combination started


def test_a_grid_combination_directory_planted_as_a_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cifar10-async" / "smoke" / "grid-sgd-bn"
    root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "learning_rate=0.1").symlink_to(elsewhere)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "grid", "cifar10-async", "--arm", "sgd-bn", "--profile", "smoke",
         "--param", "optimizer.learning_rate=0.1", "--out", str(tmp_path)], capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2 and "grid-sgd-bn/learning_rate=0.1 is a symlink" in result.stderr, result.stderr
    assert list(elsewhere.iterdir()) == []
