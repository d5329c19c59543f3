"""Starting N worker processes on this machine (127.0.0.1) and supervising them: their output is relayed with a
`[worker i]` prefix, and if one fails the others are stopped within `grace` seconds, so a job never hangs.

A SIGTERM or SIGINT to the launcher (see distribute.interrupts) is passed to worker 0 alone: it stops at its next step
boundary (which every worker has reached: steps end with an all-reduce), saves the checkpoint and marks the run
interrupted; the others, left waiting in the next all-reduce, are then stopped. Workers run in their own session
and get SIGHUP (see interrupts.PARENT_DEATH) if the launcher dies."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

from kfac_repro.distribute import interrupts
from kfac_repro.distribute.cluster import ClusterSpec, local_cluster

_FOLLOWERS_GRACE = 5.0  # seconds for workers other than 0 to exit once worker 0 has stopped


class WorkerFailure(RuntimeError):
    """A worker exited with a non-zero code; the others were stopped. `exit_code` is that worker's (128 + N for a
    worker killed by signal N)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code if code > 0 else 128 - code


def _relay(stream: IO[str], prefix: str, emit: Callable[[str], None]) -> None:
    for line in stream:
        emit(f"{prefix}{line.rstrip()}")


def run_local_workers(
    command: Callable[[ClusterSpec], Sequence[str]],
    count: int,
    emit: Callable[[str], None] = print,
    grace: float = 10.0,
    env: dict[str, str] | None = None,
    on_stop: Callable[[], None] = lambda: None,
    stop_grace: float = 60.0,
) -> float:
    """Run `command(spec)` for each of `count` local workers with its TF_CONFIG; return the wall-clock seconds.

    Raises WorkerFailure naming the first worker that failed, after stopping the others (SIGTERM, then SIGKILL
    after `grace` seconds); on a stop request, stops the workers as the module docstring says (worker 0 gets
    `stop_grace` seconds to checkpoint), calls `on_stop` and raises interrupts.Interrupted.
    """
    specs = local_cluster(count)
    start = time.perf_counter()
    processes: list[subprocess.Popen[str]] = []
    relays = []
    for spec in specs:
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": spec.tf_config()}
        process = interrupts.start_child(command(spec), env=worker_env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        assert process.stdout is not None
        relay = threading.Thread(target=_relay, args=(process.stdout, f"[worker {spec.index}] ", emit), daemon=True)
        relay.start()
        relays.append(relay)
    try:
        while True:
            signum = interrupts.requested()
            if signum is not None:
                interrupts.stop_children(processes[:1], stop_grace)
                interrupts.stop_children(processes[1:], _FOLLOWERS_GRACE)
                on_stop()
                raise interrupts.Interrupted(signum)
            codes = [p.poll() for p in processes]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                interrupts.stop_children(processes, grace)
                raise WorkerFailure(f"worker {index} exited with code {code}; stopped the other workers "
                                    f"after {time.perf_counter() - start:.1f} s", code)
            if all(c == 0 for c in codes):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        interrupts.stop_children(processes, _FOLLOWERS_GRACE, signal.SIGKILL)
        on_stop()
        raise
    for relay in relays:
        relay.join(timeout=grace)
    return time.perf_counter() - start
