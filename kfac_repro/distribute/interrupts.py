"""SIGTERM and SIGINT, in every process: the first one is recorded (`requested()`), and the training loop stops
at its next step boundary, saves a checkpoint and marks the run `interrupted`; a second one aborts at once (though
not in the middle of a `shielded` block, such as the write of run.json).
Parents (multi-arm `run`, `grid`, the worker launcher) pass the stop on to their children and wait for them within
a bound; children are started in their own session with a parent-death signal (SIGHUP), so that they never
outlive a parent that was killed outright: it is a stop like the others, but it may arrive several times for one
death (see PARENT_DEATH), so its repeats are ignored.

Exit status of an interrupted process: 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for a child
whose parent died).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The signal a child started by `start_child` gets when its parent dies. Linux sends it each time the child is
# reparented, not once: when the parent thread that started the child exits the child passes to another thread of
# the parent (signal), and so on until it passes to init or a subreaper (signal again). A parent with several
# threads that is SIGKILLed thus signals its children several times, milliseconds apart. These repeats ask for
# nothing new, so the parent's death has a signal of its own, whose repeats are ignored, and a second SIGTERM or
# SIGINT (a person insisting) still aborts at once.
PARENT_DEATH = signal.SIGHUP
_PR_SET_PDEATHSIG = 1
PARENT_VAR = "KFAC_REPRO_PARENT_PID"
_received: list[int] = []
_follows_parent = False  # set by follow_parent: this process handles PARENT_DEATH too
_shielding = False  # a `shielded` block is running
_deferred_abort: str | None = None  # the abort a `shielded` block held back


class Interrupted(Exception):
    """A stop was requested by a signal; `exit_code` is 128 + its number."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum
        cause = " (the parent process died)" if signum == PARENT_DEATH else ""
        super().__init__(message or f"stopped by {signal.Signals(signum).name}{cause}")


def _handler(signum: int, frame: FrameType | None) -> None:
    if not _received:
        _received.append(signum)
    elif signum != PARENT_DEATH:
        _abort(f"second signal ({signal.Signals(signum).name}): aborting")


def _abort(message: str) -> None:
    """Raise KeyboardInterrupt(message) now, or at the end of the `shielded` block running."""
    global _deferred_abort
    if _shielding:
        _deferred_abort = message
        return
    raise KeyboardInterrupt(message)


@contextmanager
def shielded() -> Iterator[None]:
    """A block (not nested) that an abort by a second signal does not cut short: the KeyboardInterrupt is raised
    when the block ends. For short writes that must be whole, such as a run's final status in run.json."""
    global _shielding, _deferred_abort
    _shielding = True
    try:
        yield
    finally:
        _shielding = False
        deferred, _deferred_abort = _deferred_abort, None
    if deferred is not None:
        raise KeyboardInterrupt(deferred)


def handled() -> tuple[int, ...]:
    """The signals that ask this process to stop: SIGNALS, and PARENT_DEATH in a child that follows its parent."""
    return (*SIGNALS, PARENT_DEATH) if _follows_parent else SIGNALS


def install() -> None:
    """Record the `handled()` signals instead of dying (main thread only; idempotent; also after a library that
    installed its own SIGTERM handler, such as TensorFlow's multi-worker coordination)."""
    if threading.current_thread() is threading.main_thread():
        for signum in handled():
            signal.signal(signum, _handler)


def hold() -> None:
    """Block SIGNALS and PARENT_DEATH in the calling thread and in every thread it starts from now on (they inherit
    its mask): a stop then stays pending, seen by `requested()` (when `handled()`) and from outside
    (/proc/PID/status, ShdPnd), and no handler runs, not even one that a library installed over ours (TensorFlow's,
    which swallows SIGTERM while it registers a worker). Call it before the threads exist (before importing numpy
    or TensorFlow, and before `follow_parent` decides whether PARENT_DEATH is handled); `release()` ends it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, (*SIGNALS, PARENT_DEATH))


def release() -> None:
    """Unblock what `hold` blocked in the calling thread: a signal pending is handled now (by `install`'s handler,
    or its default action)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (*SIGNALS, PARENT_DEATH))


def requested() -> int | None:
    """The signal that asked this process to stop (handled, or pending while held), or None."""
    if _received:
        return _received[0]
    pending = signal.sigpending() & set(handled())
    return min(pending) if pending else None


def check() -> None:
    """Raise Interrupted if a stop was requested."""
    signum = requested()
    if signum is not None:
        raise Interrupted(signum)


def follow_parent() -> None:
    """In a child started by `start_child`: get PARENT_DEATH when the parent dies, even by SIGKILL (Linux prctl
    PR_SET_PDEATHSIG), and stop at once if it died already. The handlers are installed first, so that no signal
    finds this process without them. Called first thing by the command line."""
    global _follows_parent
    parent = os.environ.pop(PARENT_VAR, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    _follows_parent = True
    install()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, PARENT_DEATH, 0, 0, 0)
    if str(os.getppid()) != parent:
        sys.exit(128 + PARENT_DEATH)


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
