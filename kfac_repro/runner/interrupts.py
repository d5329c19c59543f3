"""SIGTERM and SIGINT, in every process: the first one is recorded (`requested()`), and the training loop stops
at its next step boundary, saves a checkpoint and marks the run `interrupted`; a second one aborts at once.
Parents (multi-arm `run`, `grid`, the worker launcher) pass the stop on to their children and wait for them within
a bound; children are started in their own session with a parent-death signal, so that they never outlive a
parent that was killed outright.

Exit status of an interrupted process: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1
PARENT_VAR = "KFAC_REPRO_PARENT_PID"
_received: list[int] = []


class Interrupted(Exception):
    """A stop was requested by a signal; `exit_code` is 128 + its number."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")


def _handler(signum: int, frame: FrameType | None) -> None:
    if _received:
        raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): aborting")
    _received.append(signum)


def install() -> None:
    """Record SIGTERM/SIGINT instead of dying (main thread only; idempotent; also after a library that installed
    its own SIGTERM handler, such as TensorFlow's multi-worker coordination)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)


def requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise Interrupted if a stop was requested."""
    signum = requested()
    if signum is not None:
        raise Interrupted(signum)


def follow_parent() -> None:
    """In a child started by `start_child`: get SIGTERM when the parent dies, even by SIGKILL (Linux prctl
    PR_SET_PDEATHSIG), and stop at once if it died already. Called first thing by the command line."""
    parent = os.environ.pop(PARENT_VAR, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != parent:
        sys.exit(128 + signal.SIGTERM)


def start_child(command: Sequence[str], env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
    """Popen in a new session (a terminal's Ctrl-C reaches only the parent, which passes the stop on); the child
    (a `kfac-repro` command) follows this process's death (see follow_parent)."""
    child_env = {**(os.environ if env is None else env), PARENT_VAR: str(os.getpid())}
    return subprocess.Popen(list(command), start_new_session=True, env=child_env, **kwargs)


def stop_children(processes: Sequence[subprocess.Popen[Any]], grace: float, signum: int = signal.SIGTERM) -> None:
    """Send `signum` to the children still running, wait up to `grace` seconds, then SIGKILL the rest."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_child(process: subprocess.Popen[Any], grace: float) -> int:
    """The child's exit code; on a stop request, the child is stopped (see stop_children) and Interrupted raised."""
    while True:
        try:
            return process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        signum = requested()
        if signum is not None:
            stop_children([process], grace)
            raise Interrupted(signum)
