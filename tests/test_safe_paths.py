"""Nothing is written outside --out, even through symlinks: safe_paths refuses a link planted anywhere below the root,
naming it, and leaves its target untouched; every writer of the results layout (run directories, locks, run.json,
metrics.csv, checkpoints) goes through it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kfac_repro.runner import layout, safe_paths
from kfac_repro.runner.metrics_log import MetricsLog, read_rows

VICTIM_TEXT = "precious\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the root that a planted link points to."""
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_directories_are_made_below_the_root_and_a_linked_component_is_refused(root: Path, tmp_path: Path) -> None:
    assert safe_paths.make_dirs(root, "a/b/c") == root / "a" / "b" / "c" and (root / "a/b/c").is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "a" / "link").symlink_to(elsewhere)
    for call in (safe_paths.make_dirs, safe_paths.check_dirs):
        with pytest.raises(safe_paths.UnsafePath, match=r"out/a/link is a symlink \(to .*elsewhere\)"):
            call(root, "a/link/d")
    assert list(elsewhere.iterdir()) == []
    (root / "file").write_text("x")
    with pytest.raises(safe_paths.UnsafePath, match="out/file is not a directory"):
        safe_paths.make_dirs(root, "file/d")
    with pytest.raises(safe_paths.UnsafePath, match="not a path inside"):
        safe_paths.make_dirs(root, "../escape")


def test_a_directory_the_system_refuses_is_a_clear_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(safe_paths.UnsafePath, match=r"cannot use .*out/a as a directory: Read-only file system"):
        safe_paths.make_dirs(root, "a")


def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(safe_paths.UnsafePath, match="file is not a directory"):
        safe_paths.make_dirs(tmp_path / "file", "a")
    with pytest.raises(safe_paths.UnsafePath, match="file is not a directory"):
        safe_paths.make_dirs(tmp_path / "file" / "below", "a")


@pytest.mark.parametrize("mode", ["r", "w", "a"])
def test_a_linked_file_is_never_opened(root: Path, victim: Path, mode: str) -> None:
    (root / "f").symlink_to(victim)
    with pytest.raises(safe_paths.UnsafePath, match="out/f is a symlink"):
        safe_paths.open_file(root, "f", mode)
    assert victim.read_text() == VICTIM_TEXT


def test_a_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "fifo")
    with pytest.raises(safe_paths.UnsafePath, match="out/fifo is not a regular file"):
        safe_paths.open_file(root, "fifo", "a")


@pytest.mark.parametrize("planted", ["run.json", "run.json.tmp"])
def test_atomic_writes_refuse_a_linked_target_or_temporary(root: Path, victim: Path, planted: str) -> None:
    (root / planted).symlink_to(victim)
    with pytest.raises(safe_paths.UnsafePath, match=f"out/{planted} is a symlink"):
        safe_paths.write_atomic(root, "run.json", "{}\n")
    assert victim.read_text() == VICTIM_TEXT and (root / planted).is_symlink()
    assert sorted(p.name for p in root.iterdir()) == [planted]  # no temporary left behind


def test_a_stale_temporary_left_by_a_crash_is_replaced(root: Path) -> None:
    (root / "run.json.tmp").write_text("half")
    safe_paths.write_atomic(root, "run.json", "whole\n")
    assert (root / "run.json").read_text() == "whole\n" and not (root / "run.json.tmp").exists()


def test_a_rename_refuses_a_linked_target_and_a_removal_removes_the_link_not_its_target(root: Path,
                                                                                       victim: Path) -> None:
    safe_paths.make_dirs(root, "a")
    (root / "a" / "new").write_text("new\n")
    (root / "old").symlink_to(victim)
    with pytest.raises(safe_paths.UnsafePath, match="out/old is a symlink"):
        safe_paths.rename(root, "a/new", "old")
    safe_paths.remove(root, "old")
    assert victim.read_text() == VICTIM_TEXT and not (root / "old").is_symlink()
    safe_paths.rename(root, "a/new", "old")
    assert (root / "old").read_text() == "new\n" and not (root / "a" / "new").exists()
    (root / "a" / "link").symlink_to(victim.parent)
    safe_paths.remove(root, "a")
    assert not (root / "a").exists() and victim.read_text() == VICTIM_TEXT


def test_links_anywhere_in_a_tree_are_found(root: Path, victim: Path) -> None:
    safe_paths.make_dirs(root, "checkpoints/deep")
    safe_paths.refuse_links(root, "checkpoints")
    (root / "checkpoints" / "deep" / "checkpoint").symlink_to(victim)
    with pytest.raises(safe_paths.UnsafePath, match="deep/checkpoint is a symlink"):
        safe_paths.refuse_links(root, "checkpoints")


def test_the_lock_and_run_record_of_a_run_directory_refuse_planted_links(root: Path, victim: Path) -> None:
    (root / ".lock").symlink_to(victim)
    with pytest.raises(safe_paths.UnsafePath, match=r"\.lock is a symlink"):
        layout.lock_run_dir(root)
    (root / "run.json").symlink_to(victim)
    assert layout.read_run_record(root) == {}  # a link is not read
    with pytest.raises(safe_paths.UnsafePath, match=r"run\.json is a symlink"):
        layout.write_run_record(root, {"status": "running"})
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize("planted", ["metrics.csv", "metrics.csv.tmp"])
def test_the_metrics_log_refuses_planted_links(root: Path, victim: Path, planted: str) -> None:
    log = MetricsLog(root / "metrics.csv")
    log.append({"step": 0, "val_loss": 1.0})
    log.close()
    if planted == "metrics.csv":
        (root / planted).unlink()
    (root / planted).symlink_to(victim)
    with pytest.raises(safe_paths.UnsafePath, match=f"out/{planted} is a symlink"):
        MetricsLog(root / "metrics.csv", resume_step=0)
    assert victim.read_text() == VICTIM_TEXT


def test_nan_is_written_as_nan_and_read_back_as_nan(root: Path) -> None:
    log = MetricsLog(root / "metrics.csv")
    log.append({"step": 2, "train_loss": float("nan"), "val_loss": None})
    log.close()
    (row,) = read_rows(root / "metrics.csv")
    assert row["train_loss"] == "nan" and row["val_loss"] == ""
    resumed = MetricsLog(root / "metrics.csv", resume_step=2)
    resumed.close()
    last = resumed.last
    assert last["train_loss"] is not None and last["train_loss"] != last["train_loss"] and last["val_loss"] is None


def test_claiming_a_run_directory_through_a_linked_arm_directory_is_refused(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (root / "spec" / "smoke").mkdir(parents=True)
    (root / "spec" / "smoke" / "arm").symlink_to(target)
    arms = layout.arm_dir(root, "spec", "smoke", "arm")
    with pytest.raises(safe_paths.UnsafePath, match="spec/smoke/arm is a symlink"):
        layout.claim_run_dir(arms, "r", root=root)
    (target / "r").mkdir()
    with pytest.raises(safe_paths.UnsafePath, match="spec/smoke/arm is a symlink"):
        layout.existing_run_dir(arms, "r", root=root)
    assert [p.name for p in target.iterdir()] == ["r"]


def kfac_repro(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=600)


SMOKE = ["run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--run-id", "r"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results root with one smoke run of 2 updates (resumable to 4)."""
    out = tmp_path_factory.mktemp("short") / "out"
    result = kfac_repro(*SMOKE, "--set", "training.steps=2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("planted", [".lock", "run.json.tmp", "metrics.csv.tmp", "metrics.csv", "run.json",
                                     "checkpoints"])
def test_resume_refuses_a_link_planted_in_the_run_directory(short_run: Path, tmp_path: Path, victim: Path,
                                                            planted: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(short_run, out, symlinks=True)
    link = out / "cifar10-async" / "smoke" / "sgd-bn" / "r" / planted
    if planted == "checkpoints":
        shutil.rmtree(link)
        target = tmp_path / "victim-dir"
        target.mkdir()
        link.symlink_to(target)
    else:
        link.unlink(missing_ok=True)
        link.symlink_to(victim)
    result = kfac_repro(*SMOKE, "--set", "training.steps=4", "--resume", "--out", str(out))
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"r/{planted} is a symlink" in result.stderr
    assert victim.read_text() == VICTIM_TEXT and link.is_symlink()
    if planted == "checkpoints":
        assert list((tmp_path / "victim-dir").iterdir()) == []


def test_a_run_into_a_linked_arm_directory_is_refused(tmp_path: Path) -> None:
    out, target = tmp_path / "out", tmp_path / "target"
    (out / "cifar10-async" / "smoke").mkdir(parents=True)
    target.mkdir()
    (out / "cifar10-async" / "smoke" / "sgd-bn").symlink_to(target)
    result = kfac_repro(*SMOKE, "--out", str(out))
    assert result.returncode == 2 and "smoke/sgd-bn is a symlink" in result.stderr, result.stderr[-3000:]
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("problem", ["a file", "read-only"])
def test_an_out_that_cannot_be_written_is_a_clear_error(tmp_path: Path, problem: str) -> None:
    out = tmp_path / "out"
    if problem == "a file":
        out.write_text("not a directory")
    else:
        out.mkdir()
        out.chmod(0o555)
        if os.access(out, os.W_OK):
            pytest.skip("running as root: a read-only mode does not stop root writing")
    result = kfac_repro(*SMOKE, "--out", str(out))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and str(out) in result.stderr
