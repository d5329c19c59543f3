"""`kfac-repro run`: smoke runs, exit codes, missing data, and a run killed with SIGKILL then resumed."""

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

RUN = [sys.executable, "-m", "cli", "run"]


def kfac_repro(*args: str, data_dir: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"KFAC_REPRO_DATA": str(data_dir)} if data_dir else {})}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # 75 s on 2 cores: five arms, two of them with four replicas
def test_smoke_run_writes_every_arm(tmp_path: Path) -> None:
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    for arm in ("async-gpu1", "async-gpu4", "sync-gpu1", "sync-gpu4", "sgd-bn"):
        (run_dir,) = (tmp_path / "cifar10-async" / "smoke" / arm).iterdir()
        assert [r["step"] for r in rows(run_dir / "metrics.csv")] == ["0", "2", "4"]
        record = json.loads((run_dir / "run.json").read_text())
        assert record["status"] == "complete" and record["data"] == "synthetic" and record["arm"] == arm
        assert (run_dir / "resolved.yaml").exists() and (run_dir / "environment.json").exists()
        assert any((run_dir / "tensorboard").iterdir()) and any((run_dir / "checkpoints").iterdir())
        assert record["val_examples"] == 32  # the smoke profile's one validation batch
        evaluated = [r for r in rows(run_dir / "metrics.csv") if r["val_loss"]]
        assert evaluated and all(r["train_eval_loss"] and r["train_eval_error"] for r in evaluated)
        if arm != "sgd-bn":  # one line per refresh: async lag 1 hands over at steps 1, 2, 3; sync every 2 at 2
            refreshes = (run_dir / "refreshes.log").read_text().splitlines()
            assert len(refreshes) == (3 if arm.startswith("async") else 1), refreshes
            assert "installed at step" in refreshes[0] and "s)" in refreshes[0]


def test_every_validation_pass_reads_the_whole_split_unless_told_otherwise(tmp_path: Path) -> None:
    from kfac_repro.data.synthetic import SIZES

    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--set",
                        "training.eval_batches=null", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "cifar10-async" / "smoke" / "sgd-bn").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["val_examples"] == SIZES["val"]


def test_seeds_give_one_ordinary_run_directory_per_seed(tmp_path: Path) -> None:
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--seeds", "3,5",
                        "--run-id", "r", "--set", "training.steps=2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "cifar10-async" / "smoke" / "sgd-bn").iterdir())
    assert [r.name for r in runs] == ["r-seed3", "r-seed5"]
    records = [json.loads((r / "run.json").read_text()) for r in runs]
    assert [(r["seed"], r["status"]) for r in records] == [(3, "complete"), (5, "complete")]
    losses = [rows(r / "metrics.csv")[-1]["train_loss"] for r in runs]
    assert losses[0] != losses[1], "initialisation and data order differ between seeds"
    environment = (runs[0] / "environment.json").read_text()
    again = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--seeds", "3",
                       "--run-id", "r", "--set", "training.steps=2", "--resume", "--out", str(tmp_path))
    assert again.returncode == 0 and "complete already: kept" in again.stdout
    assert (runs[0] / "environment.json").read_text() == environment
    taken = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--seeds", "3",
                       "--run-id", "r", "--out", str(tmp_path))
    assert taken.returncode == 2 and "r-seed3 already exists" in taken.stderr
    missing = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--seeds", "4",
                         "--run-id", "r", "--resume", "--out", str(tmp_path))
    assert missing.returncode == 2 and "no run 'r-seed4' to resume" in missing.stderr
    assert sorted(r.name for r in runs[0].parent.iterdir()) == ["r-seed3", "r-seed5"]


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "0,x"], "distinct integers"), (["--seeds", "1,1"], "distinct integers"),
    (["--seeds", "0,1", "--seed", "2"], "not both"),
])
def test_bad_seeds_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", *args, "--out", str(tmp_path / "results"))
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "results").exists()


def test_paper_profile_without_its_data_says_where_it_looked(tmp_path: Path) -> None:
    result = kfac_repro("run", "cifar10-async", "--out", str(tmp_path / "results"), data_dir=tmp_path / "empty")
    assert result.returncode == 1
    assert "cifar10" in result.stderr and str(tmp_path / "empty") in result.stderr
    assert "kfac-repro data download cifar10" in result.stderr and "--profile cpu" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["cifar10-async", "--profile", "smoke", "--arm", "nope"], "no arm named nope"),
    (["cifar10-async", "--profile", "smoke", "--set", "training.steps=0"],
     "training.steps: expected an integer in [1, 1000000000]"),
    (["no-such-experiment"], "unknown experiment"),
    (["cifar10-async", "--profile", "huge"], "no profile 'huge'"),
])
def test_bad_usage_exits_2_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    result = kfac_repro("run", *args, "--out", str(tmp_path / "results"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # a whole run to set up one error path; the default run stays under its 10 minutes
def test_resuming_a_complete_run_whose_metrics_are_gone_fails_naming_the_file(tmp_path: Path) -> None:
    common = ["run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--run-id", "r", "--set",
              "training.steps=2", "--out", str(tmp_path)]
    assert kfac_repro(*common).returncode == 0
    run_dir = tmp_path / "cifar10-async" / "smoke" / "sgd-bn" / "r"
    (run_dir / "metrics.csv").unlink()
    resumed = kfac_repro(*common, "--resume")
    assert resumed.returncode == 1, resumed.stderr[-2000:]
    assert (f"ResumeError: {run_dir / 'metrics.csv'} is missing or has no rows, but checkpoint "
            f"{run_dir / 'checkpoints' / 'ckpt-2'} is at step 2") in resumed.stderr
    assert "Traceback" not in resumed.stderr and "complete already" not in resumed.stdout
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_workers_not_matching_the_arms_are_refused_before_any_process_starts(tmp_path: Path) -> None:
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--workers", "2", "--out", str(tmp_path / "r"))
    assert result.returncode == 2, result.stderr
    assert ("--workers 2: a multi-process run has one gradient worker per process, but distribution.workers is "
            "1 for async-gpu1, sync-gpu1, sgd-bn and 4 for async-gpu4, sync-gpu4") in result.stderr
    assert ("Pass instead: --workers 1 --arm async-gpu1 --arm sync-gpu1 --arm sgd-bn; --workers 4 --arm async-gpu4 "
            "--arm sync-gpu4; or leave out --workers") in result.stderr
    assert "worker processes were started" not in result.stderr and not (tmp_path / "r").exists()
    partly = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--workers", "4", "--arm", "sync-gpu4",
                        "--arm", "sgd-bn", "--out", str(tmp_path / "r"))
    assert partly.returncode == 2 and "distribution.workers is 1 for sgd-bn (cifar10-async" in partly.stderr


@pytest.mark.slow  # ~50 s: three runs, one killed
def test_run_killed_with_sigkill_resumes_without_losing_or_repeating_rows(tmp_path: Path) -> None:
    common = ["cifar10-async", "--profile", "smoke", "--arm", "sync-gpu1", "--set", "training.steps=120",
              "--set", "training.log_every=1", "--set", "training.eval_every=10", "--set",
              "training.checkpoint_every=7"]
    reference = kfac_repro("run", *common, "--out", str(tmp_path / "whole"), "--run-id", "r")
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "killed"
    metrics = out / "cifar10-async" / "smoke" / "sync-gpu1" / "r" / "metrics.csv"
    process = subprocess.Popen([*RUN, *common, "--out", str(out), "--run-id", "r"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 40):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(rows(metrics))
    assert 30 < killed_at < 120, "the run must be killed mid-way"

    resumed = kfac_repro("run", *common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [int(r["step"]) for r in rows(metrics)]
    assert steps == list(range(0, 121)), "every logged step exactly once"
    final, expected = rows(metrics)[-1], rows(tmp_path / "whole" / "cifar10-async" / "smoke" / "sync-gpu1" / "r" /
                                             "metrics.csv")[-1]
    for column in ("train_loss", "val_loss", "val_error", "step_size"):
        assert float(final[column]) == pytest.approx(float(expected[column]), rel=1e-5), column


RESUMABLE = ["cifar10-async", "--profile", "smoke", "--arm", "sync-gpu4", "--set", "training.log_every=1",
             "--set", "training.eval_every=3", "--set", "training.checkpoint_every=3", "--run-id", "r"]
RESUMABLE_RUN = Path("cifar10-async") / "smoke" / "sync-gpu4" / "r"  # below --out


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of RESUMABLE trained uninterrupted to 12 steps (four in-process replicas)."""
    out = tmp_path_factory.mktemp("whole")
    result = kfac_repro("run", *RESUMABLE, "--set", "training.steps=12", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out / RESUMABLE_RUN


def assert_resumes_exactly(tmp_path: Path, whole_run: Path, first: list[str], then: list[str]) -> Path:
    """RESUMABLE trained to 6 steps with the options `first`, then resumed to 12 with `then`, logs every step once
    and the training losses (and the last validation loss) of the uninterrupted run; its run directory."""
    out = tmp_path / "split"
    for steps, options in ((6, first), (12, [*then, "--resume"])):
        result = kfac_repro("run", *RESUMABLE, "--set", f"training.steps={steps}", *options, "--out", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
    split, expected = rows(out / RESUMABLE_RUN / "metrics.csv"), rows(whole_run / "metrics.csv")
    assert [int(r["step"]) for r in split] == list(range(0, 13))
    for got, want in zip(split[1:], expected[1:], strict=True):
        assert float(got["train_loss"]) == pytest.approx(float(want["train_loss"]), rel=1e-5), got["step"]
    assert float(split[-1]["val_loss"]) == pytest.approx(float(expected[-1]["val_loss"]), rel=1e-5)
    return out / RESUMABLE_RUN


@pytest.mark.slow  # 60 s on 2 cores: three runs with four replicas
def test_multi_replica_run_resumes_at_the_right_data_position(tmp_path: Path, whole_run: Path) -> None:
    """Four in-process replicas: a distributed iterator cannot be checkpointed, so a resume skips what was used."""
    assert_resumes_exactly(tmp_path, whole_run, [], [])


@pytest.mark.slow  # 3 runs per case: two cases took 12 min on the shared, loaded machine; the fast check is
# test_training_loop.py::test_a_checkpoint_with_or_without_the_data_position_resumes_exactly_either_way
@pytest.mark.parametrize(("before", "after"), [(4, 2), (2, 4), (4, 1), (1, 4)])
def test_a_run_resumes_exactly_with_another_number_of_replicas(tmp_path: Path, whole_run: Path, before: int,
                                                               after: int) -> None:
    """K-FAC checkpointed with `before` in-process replicas and continued with `after` equals an uninterrupted run:
    the global batches, the sampled targets and the optimizer's state do not depend on the replica count."""
    run_dir = assert_resumes_exactly(tmp_path, whole_run, ["--set", f"distribution.workers={before}"],
                                     ["--set", f"distribution.workers={after}"])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["workers"] == after and record["status"] == "complete"


@pytest.mark.slow  # ~95 s a case and 180 s for the shared uninterrupted run, on the shared, loaded 2 cores
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_run_resumes_exactly_with_another_number_of_worker_processes(tmp_path: Path, whole_run: Path,
                                                                       before: int, after: int) -> None:
    """K-FAC checkpointed by `before` worker processes (one replica each) and continued by `after` equals an
    uninterrupted run: every worker restores the chief's checkpoint, whichever workers wrote it."""
    def processes(count: int) -> list[str]:
        return ["--set", f"distribution.workers={count}", *(["--workers", str(count)] if count > 1 else [])]

    run_dir = assert_resumes_exactly(tmp_path, whole_run, processes(before), processes(after))
    record = json.loads((run_dir / "run.json").read_text())
    assert record["workers"] == after and record["status"] == "complete"
    assert not list(run_dir.glob(".worker-*"))  # the other workers' directories are gone once it is complete


def write_fashion(directory: Path, train_labels: list[int]) -> None:
    """Fashion-MNIST idx files with len(train_labels) training and 4 test images."""
    directory.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": np.zeros((len(train_labels), 28, 28), np.uint8),
              "train-labels-idx1-ubyte": np.array(train_labels, np.uint8),
              "t10k-images-idx3-ubyte": np.zeros((4, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(4, dtype=np.uint8)}
    for name, array in arrays.items():
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
        (directory / name).write_bytes(header + array.tobytes())


@pytest.mark.parametrize(("labels", "classes", "message"), [
    ([0, 1, 2, 3, 12, 9, 4, 5], 10, "train-labels-idx1-ubyte: label 12 at index 4 is outside 0..9"),
    ([0, 1, 2, 3, 8, 9, 4, 5], 5, "model.num_classes is 5 but data set 'fashion_mnist' has labels 0..9"),
])
def test_labels_out_of_range_give_a_clear_error(tmp_path: Path, labels: list[int], classes: int,
                                                message: str) -> None:
    write_fashion(tmp_path / "data" / "fashion-mnist", labels)
    spec = tmp_path / "labels.yaml"
    spec.write_text("name: labels\narms:\n  a:\n"
                    f"    model: {{name: cifar10_net, input_size: 8, num_classes: {classes}}}\n"
                    f"    data: {{name: fashion_mnist, data_dir: {tmp_path / 'data'}}}\n"
                    "    training: {batch_size: 4, steps: 2, log_every: 1, eval_every: 1}\n"
                    "    optimizer: {name: sgd}\n")
    result = kfac_repro("run", str(spec), "--out", str(tmp_path / "results"))
    assert result.returncode == 1 and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Graph execution error" not in result.stderr


def test_a_finite_blow_up_ends_the_run_diverged_with_exit_3(tmp_path: Path) -> None:
    result = kfac_repro("run", "cifar10-async", "--profile", "smoke", "--arm", "sgd-bn", "--set",
                        "optimizer.learning_rate=1000", "--set", "training.steps=30", "--set", "training.log_every=1",
                        "--set", "training.eval_every=10", "--out", str(tmp_path), "--run-id", "r")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "diverged: training loss is" in result.stderr and "above the divergence bound" in result.stderr
    run_dir = tmp_path / "cifar10-async" / "smoke" / "sgd-bn" / "r"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "diverged"
    assert len(rows(run_dir / "metrics.csv")) < 30


@pytest.mark.parametrize("argv", [
    ["cifar10-async", "--arm", "sgd-bn", "--profile", "smoke", "--set", "training.steps=2", "--set", "a.b=c",
     "--seeds", "3", "--resume", "--run-id", "r", "--tuned", "--workers", "4", "--out", "o"],
    ["cifar10-async"],
])
def test_a_child_command_line_gives_the_child_the_parents_parameters(argv: list[str]) -> None:
    from kfac_repro.commands.child import child_command
    from kfac_repro.commands.run import run, worker

    params = run.make_context("run", list(argv)).params
    line = child_command(run, params)
    assert line[:4] == [sys.executable, "-m", "cli", "run"]
    assert run.make_context("run", line[4:]).params == params
    worker_argv = ["cifar10-async", "--arm", "a", "--run-dir", "d", "--seed", "5", "--set", "x.y=1", "--resume"]
    worker_params = worker.make_context("worker", worker_argv).params
    assert worker.make_context("worker", child_command(worker, worker_params)[4:]).params == worker_params


def test_a_run_that_fails_after_starting_is_marked_failed_not_left_running(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An error between the `running` record and the first update (here building the evaluator) marks the run."""
    from kfac_repro.runner import experiment
    from kfac_repro.specs import load_spec

    spec = load_spec("cifar10-async", "smoke", arms=["sgd-bn"])
    run_dir = tmp_path / "run"
    identity = experiment.RunIdentity(spec.name, spec.figure, spec.profile, "sgd-bn", "SGD+BN", run_dir)

    def broken(*_: object) -> None:
        raise RuntimeError("no evaluator")

    monkeypatch.setattr(experiment, "_Evaluator", broken)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with pytest.raises(RuntimeError, match="no evaluator"):
            experiment.run_arm(spec.arms["sgd-bn"], identity, resume=False)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
