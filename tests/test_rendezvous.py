"""A worker whose peers never answer: the wait is bounded, reported and stoppable (distribute/rendezvous.py), and
one endpoint written two ways is a configuration error."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kfac_repro.distribute import interrupts, rendezvous
from kfac_repro.distribute.cluster import ClusterConfigError, ClusterSpec, parse_tf_config


def free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_workers_that_all_start_meet(monkeypatch: pytest.MonkeyPatch) -> None:
    workers = tuple(f"127.0.0.1:{port}" for port in free_ports(3))
    waited: dict[int, float] = {}

    def worker(index: int) -> None:
        if index == 2:
            time.sleep(1.0)  # a late starter is waited for
        waited[index] = rendezvous.await_peers(ClusterSpec(workers, index), 30.0, lambda line: None)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(waited) == [0, 1, 2] and waited[0] >= 0.9


def test_a_peer_that_never_answers_ends_the_wait_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendezvous, "PROGRESS", 0.5)
    mine, absent, alive = free_ports(3)
    listener = socket.create_server(("127.0.0.1", alive))  # a peer that is up
    lines: list[str] = []
    workers = (f"127.0.0.1:{mine}", f"127.0.0.1:{absent}", f"localhost:{alive}")
    start = time.monotonic()
    with pytest.raises(rendezvous.ClusterTimeout, match=rf"worker 0: worker 1 \(127\.0\.0\.1:{absent}\) never "
                                                        r"answered within 2 s \(KFAC_REPRO_CLUSTER_TIMEOUT\)"):
        rendezvous.await_peers(ClusterSpec(workers, 0), 2.0, lines.append)
    listener.close()
    assert time.monotonic() - start < 10
    assert lines[0] == f"worker 0: waiting for worker 1 (127.0.0.1:{absent}) to answer (0 s of at most 2 s)"
    assert len(lines) >= 3  # reported every PROGRESS seconds


def test_a_stop_request_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupts, "_received", [signal.SIGTERM])
    workers = tuple(f"127.0.0.1:{port}" for port in free_ports(2))
    with pytest.raises(interrupts.Interrupted):
        rendezvous.await_peers(ClusterSpec(workers, 1), 60.0, lambda line: None)


@pytest.mark.parametrize("text", ["0", "-3", "soon"])
def test_the_bound_must_be_a_positive_number(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(rendezvous.TIMEOUT_VAR, text)
    with pytest.raises(ValueError, match=f"KFAC_REPRO_CLUSTER_TIMEOUT: expected a number of seconds > 0, found "
                                         f"'{text}'"):
        rendezvous.cluster_timeout()


def test_one_endpoint_written_two_ways_is_a_configuration_error() -> None:
    config = {"cluster": {"worker": ["127.0.0.1:5000", "localhost:5001", "localhost:5000"]},
              "task": {"type": "worker", "index": 0}}
    with pytest.raises(ClusterConfigError, match=r"cluster\.worker\[0\] '127\.0\.0\.1:5000' and cluster\.worker\[2\] "
                                                 r"'localhost:5000' are the same endpoint"):
        parse_tf_config(json.dumps(config))
    config["cluster"]["worker"] = ["127.0.0.1:5000", "localhost:5001", "unresolvable.invalid:5000"]
    assert parse_tf_config(json.dumps(config)).workers[2] == "unresolvable.invalid:5000"


def start_worker(tmp_path: Path, timeout: str) -> tuple[subprocess.Popen, int]:
    """`kfac-repro worker` as worker 0 of a 2-worker cluster whose worker 1 is never started."""
    mine, absent = free_ports(2)
    env = {**os.environ, rendezvous.TIMEOUT_VAR: timeout, "TF_CONFIG": json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{mine}", f"127.0.0.1:{absent}"]}, "task": {"type": "worker", "index": 0}})}
    command = [sys.executable, "-m", "cli", "worker", "cifar10-async", "--profile", "smoke", "--arm", "sync-gpu1",
               "--set", "distribution.workers=2", "--run-dir", str(tmp_path / "run")]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), absent


def test_a_worker_whose_peer_never_starts_fails_within_the_bound(tmp_path: Path) -> None:
    process, absent = start_worker(tmp_path, "3")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    assert f"worker 0: waiting for worker 1 (127.0.0.1:{absent}) to answer" in stderr
    assert f"worker 1 (127.0.0.1:{absent}) never answered within 3 s" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()


def test_sigterm_ends_a_worker_waiting_for_its_peers(tmp_path: Path) -> None:
    process, _ = start_worker(tmp_path, "600")
    assert process.stderr is not None
    for line in process.stderr:  # the wait has begun
        if "waiting for worker 1" in line:
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and time.monotonic() - sent < 30
    assert "worker 0: stopped by SIGTERM while waiting for its peers, before training started" in stderr


WATCHED = """
import os, sys
from kfac_repro.distribute.rendezvous import StartWatch
from kfac_repro.distribute import interrupts
interrupts.install()
watch = StartWatch("worker 0", float(sys.argv[1]), lambda line: print(line, file=sys.stderr, flush=True))
watch.hold()
watch.start()
if sys.argv[2] == "started":
    watch.started()
print("blocked", flush=True)
read, _ = os.pipe()
os.read(read, 1)  # blocked, as in a collective that never completes (a signal's handler runs, the read goes on)
"""


def watched(timeout: str, state: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", WATCHED, timeout, state], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "blocked\n"
    return process


def test_sigterm_ends_a_process_blocked_before_training_started() -> None:
    process = watched("600", "waiting")
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL and time.monotonic() - sent < 5  # ended by the guard: 137
    assert "worker 0: stopped by SIGTERM before training started" in stderr


def test_the_start_of_training_is_bounded() -> None:
    process = watched("1", "waiting")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "worker 0: every peer answered; training must start within 1 s (KFAC_REPRO_CLUSTER_TIMEOUT)" in stderr
    assert "Timeout (0:00:01)!" in stderr  # and where each thread was


def test_once_training_started_the_watch_is_over() -> None:
    process = watched("1", "started")
    time.sleep(2)  # past the bound
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)  # recorded for the training loop, which would stop at its next step
    time.sleep(1)
    assert process.poll() is None
    process.kill()
    process.communicate()


def start_impostor_worker(tmp_path: Path, timeout: str) -> tuple[subprocess.Popen, socket.socket]:
    """`kfac-repro worker` as worker 0 of a 2-worker cluster whose worker 1's port answers (another program holds
    it): the rendezvous passes, TensorFlow's registration would wait for worker 1 forever."""
    mine, other = free_ports(2)
    impostor = socket.create_server(("127.0.0.1", other))
    env = {**os.environ, rendezvous.TIMEOUT_VAR: timeout, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CONFIG": json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{mine}", f"127.0.0.1:{other}"]}, "task": {"type": "worker", "index": 0}})}
    command = [sys.executable, "-m", "cli", "worker", "cifar10-async", "--profile", "smoke", "--arm", "sync-gpu1",
               "--set", "distribution.workers=2", "--run-dir", str(tmp_path / "run")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, impostor


@pytest.mark.slow  # 20-30 s; `make test-slow`
def test_a_peer_that_answers_but_never_joins_ends_the_worker_within_the_bound(tmp_path: Path) -> None:
    """The watch ends worker 0 after the bound."""
    process, impostor = start_impostor_worker(tmp_path, "15")
    try:
        _, stderr = process.communicate(timeout=300)
    finally:
        impostor.close()
    assert process.returncode == 1, stderr[-3000:]
    assert "worker 0: every peer answered; training must start within 15 s" in stderr
    assert "Timeout (0:00:15)!" in stderr


@pytest.mark.slow  # 15-25 s (TensorFlow's import and start); `make test-slow`
def test_sigterm_during_tensorflows_registration_ends_the_worker_at_once(tmp_path: Path) -> None:
    """TensorFlow's registration holds the GIL and swallows SIGTERM (its own handler): the held signal and the
    guard process end the worker within seconds, saying it was stopped before training."""
    process, impostor = start_impostor_worker(tmp_path, "60")  # the bound ends it if the test fails
    assert process.stderr is not None
    try:
        for line in process.stderr:  # TensorFlow's coordination service waits for worker 1
            if "tasks to connect" in line:
                break
        time.sleep(1.0)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        impostor.close()
    assert process.returncode == -signal.SIGKILL and time.monotonic() - sent < 5, stderr[-3000:]
    assert "worker 0: stopped by SIGTERM before training started" in stderr
