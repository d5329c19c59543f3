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

from kfac_repro.distribute import rendezvous
from kfac_repro.distribute.cluster import ClusterConfigError, ClusterSpec, parse_tf_config
from kfac_repro.runner import interrupts


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
    process.communicate(timeout=60)
    assert process.returncode == 143 and time.monotonic() - sent < 30
