"""Waiting for a cluster's peers before TensorFlow's does, within a bound, saying who is missing.

TensorFlow's MultiWorkerMirroredStrategy waits for every worker to register with no bound, no message and no way
out but SIGKILL (it holds SIGTERM while it waits). So each worker first meets its peers here: it answers TCP
connections on its own host:port (the port TensorFlow's server takes next) and connects to each peer's, every
`POLL` seconds, until every peer has answered once (a peer already past this point answers from TensorFlow's
server; a worker that has seen them all answers `LINGER` seconds more). Every `PROGRESS` seconds it reports the
peers that have not answered; after `timeout` seconds it gives up with ClusterTimeout naming them; a stop request
(SIGTERM, SIGINT: distribute.interrupts) ends the wait at once.
The bound is KFAC_REPRO_CLUSTER_TIMEOUT seconds (default 300).

Then, until the first update has finished (TensorFlow's registration, the broadcast of the initial weights, the
first all-reduces), `StartWatch` ends the process within the same bound, and at once on SIGTERM or SIGINT: the main
thread is then blocked inside TensorFlow holding the GIL, where no Python code runs (signal handlers, other threads),
and TensorFlow's registration replaces the SIGTERM handler with one that only records it. So both are left to
mechanisms outside Python: faulthandler's watchdog thread for the bound, and for a stop the signals held blocked
(interrupts.hold, from before TensorFlow starts its threads) and a guard process (distribute/stop_guard.py) that
sees one pending and ends the worker, saying it was stopped before training.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kfac_repro.distribute import interrupts
from kfac_repro.distribute.cluster import ClusterSpec

TIMEOUT_VAR = "KFAC_REPRO_CLUSTER_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
POLL = 0.2  # seconds between two rounds of connections to the peers not yet answered
PROGRESS = 10.0  # seconds between two reports of the peers still missing
LINGER = 2.0  # seconds a worker that has seen every peer still answers on its port


class ClusterTimeout(RuntimeError):
    """Some peers of a cluster never answered within the bound."""


def cluster_timeout() -> float:
    """The bound on the wait for the peers, in seconds: $KFAC_REPRO_CLUSTER_TIMEOUT, else DEFAULT_TIMEOUT."""
    text = os.environ.get(TIMEOUT_VAR)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_VAR}: expected a number of seconds > 0, found {text!r}")
    return value


def await_peers(cluster: ClusterSpec, timeout: float, emit: Callable[[str], None]) -> float:
    """Return once every other worker of `cluster` has answered on its host:port (the seconds it took); answer on
    this worker's own port meanwhile. ClusterTimeout after `timeout` seconds, naming the peers never reached;
    interrupts.Interrupted on a stop request."""
    me = f"worker {cluster.index}"
    missing = {index: address for index, address in enumerate(cluster.workers) if index != cluster.index}
    start = time.monotonic()
    reported = -PROGRESS
    with _answering(cluster.workers[cluster.index], me) as listener:
        while True:
            _drain(listener)
            for index, address in list(missing.items()):
                if _answers(address):
                    del missing[index]
            waited = time.monotonic() - start
            if not missing:
                if waited >= PROGRESS:
                    emit(f"{me}: every peer answered after {waited:.0f} s")
                _linger(listener)
                return waited
            if waited >= timeout:
                raise ClusterTimeout(
                    f"{me}: {_names(missing)} never answered within {timeout:g} s ({TIMEOUT_VAR}): check that "
                    "each was started, with the same cluster, and that its host:port is right and reachable from "
                    "here")
            if waited - reported >= PROGRESS:
                emit(f"{me}: waiting for {_names(missing)} to answer ({waited:.0f} s of at most {timeout:g} s)")
                reported = waited
            signum = interrupts.requested()
            if signum is not None:
                raise interrupts.Interrupted(signum, f"{me}: stopped by {signal.Signals(signum).name} while "
                                                     "waiting for its peers, before training started")
            time.sleep(POLL)


def _names(missing: dict[int, str]) -> str:
    return ", ".join(f"worker {index} ({address})" for index, address in sorted(missing.items()))


@contextlib.contextmanager
def _answering(address: str, me: str) -> Iterator[socket.socket]:
    port = int(address.rpartition(":")[2])
    try:
        listener = socket.create_server(("", port), backlog=64)
    except OSError as error:
        raise ClusterTimeout(f"{me}: cannot listen on its own address {address} ({error.strerror}): another "
                             "process holds the port") from error
    listener.setblocking(False)
    try:
        yield listener
    finally:
        listener.close()


def _linger(listener: socket.socket) -> None:
    """Go on answering for LINGER seconds, so that the peers still polling see this worker before the port passes
    to TensorFlow's server (which answers from then on)."""
    end = time.monotonic() + LINGER
    while time.monotonic() < end:
        _drain(listener)
        time.sleep(POLL / 4)


def _drain(listener: socket.socket) -> None:
    """Accept and close the connections waiting (so that the backlog never fills)."""
    while True:
        try:
            connection, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        connection.close()


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except OSError:
        return False



class StartWatch:
    """From `hold()` until `started()`, the stop signals are held pending (interrupts.hold); from `start()` on, the
    process ends after `timeout` seconds (exit 1, every thread's stack on stderr: faulthandler's watchdog, which
    needs no GIL, since TensorFlow's calls may hold it), and at once on a stop (the guard process ends it, exit
    137, see distribute/stop_guard.py) instead of at a step boundary that may never come."""

    def __init__(self, me: str, timeout: float, emit: Callable[[str], None]):
        self.me, self.timeout, self.emit = me, timeout, emit
        self._held = False
        self._guard: subprocess.Popen[bytes] | None = None

    def hold(self) -> None:
        """Hold the stop signals (main thread, before TensorFlow starts its threads): `await_peers` still sees
        one (interrupts.requested)."""
        interrupts.hold()
        self._held = True

    def start(self) -> None:
        self.emit(f"{self.me}: every peer answered; training must start within {self.timeout:g} s "
                  f"({TIMEOUT_VAR}), else this worker exits with code 1")
        faulthandler.dump_traceback_later(self.timeout, exit=True)
        if self._held and sys.platform.startswith("linux"):
            numbers = ",".join(str(int(signum)) for signum in interrupts.handled())
            package_root = str(Path(__file__).resolve().parents[2])  # importable from any directory, installed or not
            path = os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))
            self._guard = subprocess.Popen([sys.executable, "-m", "kfac_repro.distribute.stop_guard",
                                            str(os.getpid()), numbers, self.me], stdin=subprocess.PIPE,
                                           env={**os.environ, "PYTHONPATH": path})

    def started(self) -> None:
        """Training has started (or ended before it): no bound any more, and signals are the training loop's again
        (main thread); a stop pending now is handled (the loop stops at its next step boundary)."""
        faulthandler.cancel_dump_traceback_later()
        if self._guard is not None:
            assert self._guard.stdin is not None
            self._guard.stdin.close()
            self._guard.wait()
            self._guard = None
        if self._held:
            interrupts.install()
            interrupts.release()
            self._held = False
