"""The results layout: names that become paths are checked, run directories are claimed atomically (unique under
concurrency, a given run ID never reused), resume finds only what exists, a run in use cannot be taken twice."""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfac_repro.runner import layout


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", "..", ".", ".hidden", "", "-rf", "a..b", "a b",
                                  "x" * 129, "é", "a\\b", "a\nb"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(layout.LayoutError, match=r"run ID: .*cannot be a directory name"):
        layout.check_name(name, "run ID")


@pytest.mark.parametrize("name", ["20260101T000000", "sync-gpu1", "lr=0.1,bn_chunk_size=32", "seed_3", "v1.2+x"])
def test_safe_names_pass(name: str) -> None:
    assert layout.check_name(name, "arm") == name


def test_paths_are_built_from_checked_names(tmp_path: Path) -> None:
    assert layout.arm_dir(tmp_path, "s", "cpu", "a") == tmp_path / "s" / "cpu" / "a"
    assert layout.grid_dir(tmp_path, "s", "cpu", "a") == tmp_path / "s" / "cpu" / "grid-a"
    assert layout.is_grid_dir(layout.grid_dir(tmp_path, "s", "cpu", "a"))
    for bad in (("../x", "cpu", "a"), ("s", "/etc", "a"), ("s", "cpu", "../../a")):
        with pytest.raises(layout.LayoutError):
            layout.arm_dir(tmp_path, *bad)


def _claim(arms: str) -> str:
    return layout.claim_run_dir(Path(arms), None).name


def test_runs_started_together_get_distinct_directories(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(8) as pool:
        names = pool.map(_claim, [str(tmp_path)] * 8)
    assert len(set(names)) == 8 and sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert layout.existing_run_dir(tmp_path, None) == layout.run_dirs(tmp_path)[-1]


def test_a_given_run_id_is_never_reused(tmp_path: Path) -> None:
    assert layout.claim_run_dir(tmp_path, "r") == tmp_path / "r"
    with pytest.raises(layout.LayoutError, match="already exists: give another --run-id, or --resume"):
        layout.claim_run_dir(tmp_path, "r")


def test_resume_needs_an_existing_run(tmp_path: Path) -> None:
    with pytest.raises(layout.LayoutError, match="no run 'nope' to resume"):
        layout.existing_run_dir(tmp_path, "nope")
    with pytest.raises(layout.LayoutError, match="no earlier run under"):
        layout.existing_run_dir(tmp_path / "none", None)


def test_seed_runs_are_claimed_and_resumed_by_their_suffix(tmp_path: Path) -> None:
    assert layout.claim_run_dir(tmp_path, "r", layout.seed_suffix(3)) == tmp_path / "r-seed3"
    with pytest.raises(layout.LayoutError, match="r-seed3 already exists"):
        layout.claim_run_dir(tmp_path, "r", "-seed3")
    first = layout.claim_run_dir(tmp_path, None, "-seed1")
    second = layout.claim_run_dir(tmp_path, None, "-seed1")
    assert first.name.endswith("-seed1") and second.name == first.name.removesuffix("-seed1") + "-2-seed1"
    assert layout.existing_run_dir(tmp_path, None, "-seed1") == second
    assert layout.existing_run_dir(tmp_path, "r", "-seed3") == tmp_path / "r-seed3"
    with pytest.raises(layout.LayoutError, match="no run 'r-seed4' to resume"):
        layout.existing_run_dir(tmp_path, "r", "-seed4")
    with pytest.raises(layout.LayoutError, match="no earlier run ending -seed2 under"):
        layout.existing_run_dir(tmp_path, None, "-seed2")


def test_run_order_follows_claim_order(tmp_path: Path) -> None:
    for name in ("20260101T000000-10", "20260101T000000", "20260101T000000-2", "20251231T235959",
                 "20260101T000000-10-seed0", "20260101T000000-2-seed0"):
        (tmp_path / name).mkdir()
    assert [p.name for p in layout.run_dirs(tmp_path)] == [
        "20251231T235959", "20260101T000000", "20260101T000000-2", "20260101T000000-2-seed0", "20260101T000000-10",
        "20260101T000000-10-seed0"]


def test_a_locked_run_directory_cannot_be_taken_by_another_process(tmp_path: Path) -> None:
    with layout.lock_run_dir(tmp_path):
        other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from kfac_repro.runner import layout; layout.lock_run_dir(Path(sys.argv[1]))",
                                str(tmp_path)], capture_output=True, text=True, env={**os.environ})
        assert other.returncode != 0 and "is in use by another process" in other.stderr
    layout.lock_run_dir(tmp_path).close()  # released with its holder


def kfac_repro(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


@pytest.mark.parametrize("run_id", ["../../x", "ABSOLUTE", "a/b", ".."])
def test_run_refuses_an_unsafe_run_id_and_writes_nothing(tmp_path: Path, run_id: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run_id = str(tmp_path / "escaped") if run_id == "ABSOLUTE" else run_id
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--out",
                        str(work / "out"), "--run-id", run_id, cwd=work)
    assert result.returncode == 2 and "--run-id: " in result.stderr and "cannot be a directory name" in result.stderr
    assert [p.name for p in tmp_path.rglob("*")] == ["work"]


def test_run_refuses_a_spec_whose_name_would_escape_out(tmp_path: Path) -> None:
    spec = tmp_path / "escape.yaml"
    spec.write_text("name: ../../escaped\narms:\n  a:\n    model: {name: cifar10_net, input_size: 8, num_classes: 10}\n"
                    "    data: {name: synthetic}\n    training: {batch_size: 8, steps: 2}\n"
                    "    optimizer: {name: sgd}\n")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    result = kfac_repro("run", str(spec), "--out", str(tmp_path / "deep" / "er" / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "name: '../../escaped' cannot be a directory name" in result.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["deep", "deep/er", "escape.yaml"]


def test_resume_of_a_missing_run_id_is_an_error(tmp_path: Path) -> None:
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--out", str(tmp_path),
                        "--resume", "--run-id", "nope")
    assert result.returncode == 2 and "--resume: no run 'nope' to resume" in result.stderr
    assert not (tmp_path / "cifar10-async" / "smoke" / "sgd-bn" / "nope").exists()


def test_a_taken_run_id_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "cifar10-async" / "smoke" / "sgd-bn" / "r").mkdir(parents=True)
    (tmp_path / "cifar10-async" / "smoke" / "sgd-bn" / "r" / "metrics.csv").write_text("precious\n")
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--out", str(tmp_path),
                        "--run-id", "r")
    assert result.returncode == 2 and "already exists: give another --run-id, or --resume" in result.stderr
    assert (tmp_path / "cifar10-async" / "smoke" / "sgd-bn" / "r" / "metrics.csv").read_text() == "precious\n"


def test_a_complete_run_that_lost_its_metrics_is_not_done(tmp_path: Path) -> None:
    """`run --resume`, `grid` and `reproduce` keep a complete run as a result only while its rows are there."""
    from kfac_repro.runner.plan import DONE, PARTIAL, run_state

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    layout.write_run_record(run_dir, {"status": layout.COMPLETE, "steps": 4})
    (run_dir / layout.METRICS).write_text("step,train_loss\n0,\n4,1.5\n")
    assert layout.run_complete(run_dir, 4) and run_state(run_dir, 4) == (DONE, 0)
    (run_dir / layout.METRICS).unlink()
    assert not layout.run_complete(run_dir, 4) and run_state(run_dir, 4) == (PARTIAL, 4)
