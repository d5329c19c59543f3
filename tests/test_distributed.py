"""Data-parallel training equals single-process training on the same global batches (weights and loss), for SGD
and K-FAC, under MirroredStrategy (2 replicas in one process) and MultiWorkerMirroredStrategy (2 processes on
loopback); a failed worker stops the job."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kfac_repro.distribute.launcher import WorkerFailure, run_local_workers

CHECK = [sys.executable, "-m", "kfac_repro.distribute.consistency", "--steps", "4", "--global-batch", "16"]


def single_process(tmp_path: Path, *options: str) -> dict[str, np.ndarray]:
    import subprocess

    out = tmp_path / "single.npz"
    subprocess.run([*CHECK, *options, "--out", str(out)], check=True, capture_output=True, timeout=300)
    return dict(np.load(out))


def assert_same_training(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> None:
    assert reference.keys() == other.keys()
    np.testing.assert_allclose(other["losses"], reference["losses"], rtol=1e-5)
    for key in reference:
        np.testing.assert_allclose(other[key], reference[key], rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("options", [("--optimizer", "sgd"), ("--optimizer", "kfac")], ids=["sgd", "kfac"])
def test_mirrored_two_replicas_equal_one_process(tmp_path: Path, options: tuple[str, ...]) -> None:
    import subprocess

    out = tmp_path / "mirrored.npz"
    subprocess.run([*CHECK, *options, "--local-replicas", "2", "--out", str(out)], check=True, capture_output=True,
                   timeout=300)
    assert_same_training(single_process(tmp_path, *options), dict(np.load(out)))


@pytest.mark.parametrize(
    "options",
    [("--optimizer", "sgd"), ("--optimizer", "kfac"), ("--optimizer", "kfac", "--async-lag", "2")],
    ids=["sgd", "kfac-sync", "kfac-async"],
)
def test_two_workers_on_loopback_agree_and_equal_one_process(tmp_path: Path, options: tuple[str, ...]) -> None:
    run_local_workers(lambda spec: [*CHECK, *options, "--out", str(tmp_path / f"worker{spec.index}.npz")], 2,
                      emit=lambda _: None)
    worker0, worker1 = (dict(np.load(tmp_path / f"worker{i}.npz")) for i in range(2))
    for key in worker0:  # identical preconditioners and updates on both workers
        np.testing.assert_array_equal(worker0[key], worker1[key], err_msg=key)
    assert_same_training(single_process(tmp_path, *options), worker0)


def test_a_failing_worker_stops_the_others_quickly() -> None:
    def command(spec: object) -> list[str]:
        code = "import sys, time; time.sleep(0.5); sys.exit(3)" if spec.index == 1 else "import time; time.sleep(120)"
        return [sys.executable, "-c", code]

    start = time.perf_counter()
    with pytest.raises(WorkerFailure, match="worker 1 exited with code 3"):
        run_local_workers(command, 2, emit=lambda _: None, grace=2.0)
    assert time.perf_counter() - start < 15
