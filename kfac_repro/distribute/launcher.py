"""Starting N worker processes on this machine (127.0.0.1) and supervising them: their output is relayed with a
`[worker i]` prefix, and if one fails the others are stopped within `grace` seconds, so a job never hangs."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

from kfac_repro.distribute.cluster import ClusterSpec, local_cluster


class WorkerFailure(RuntimeError):
    """A worker exited with a non-zero code; the others were stopped."""


def _relay(stream: IO[str], prefix: str, emit: Callable[[str], None]) -> None:
    for line in stream:
        emit(f"{prefix}{line.rstrip()}")


def run_local_workers(
    command: Callable[[ClusterSpec], Sequence[str]],
    count: int,
    emit: Callable[[str], None] = print,
    grace: float = 10.0,
    env: dict[str, str] | None = None,
) -> float:
    """Run `command(spec)` for each of `count` local workers with its TF_CONFIG; return the wall-clock seconds.

    Raises WorkerFailure naming the first worker that failed, after stopping the others (SIGTERM, then SIGKILL
    after `grace` seconds).
    """
    specs = local_cluster(count)
    start = time.perf_counter()
    processes: list[subprocess.Popen[str]] = []
    relays = []
    for spec in specs:
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": spec.tf_config()}
        process = subprocess.Popen(list(command(spec)), env=worker_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        assert process.stdout is not None
        relay = threading.Thread(target=_relay, args=(process.stdout, f"[worker {spec.index}] ", emit), daemon=True)
        relay.start()
        relays.append(relay)
    try:
        while True:
            codes = [p.poll() for p in processes]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                _stop(processes, grace)
                raise WorkerFailure(f"worker {index} exited with code {code}; stopped the other workers "
                                    f"after {time.perf_counter() - start:.1f} s")
            if all(c == 0 for c in codes):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(processes, grace)
        raise
    for relay in relays:
        relay.join(timeout=grace)
    return time.perf_counter() - start


def _stop(processes: list[subprocess.Popen[str]], grace: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
