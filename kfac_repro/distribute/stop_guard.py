"""The stop guard: a small process that ends a worker stopped while it cannot stop itself.

While TensorFlow registers a worker with its cluster and runs the first collectives, the worker's main thread is
inside TensorFlow holding the GIL (no Python code runs, in any thread) and TensorFlow has replaced the SIGTERM
handler with its own, which only records the signal. The worker therefore blocks its stop signals first
(interrupts.hold: they stay pending) and starts this guard, which reads the worker's pending signals every `POLL`
seconds from /proc/PID/status and, when one of the given signals is pending, says so on stderr (shared with the
worker) and ends the worker with SIGKILL. The worker closes the guard's stdin once training has started (or the
pipe closes when the worker exits): the guard then exits without doing anything.

Run as `python -m kfac_repro.distribute.stop_guard PID SIGNUMS NAME` (SIGNUMS comma-separated); Linux only.
"""

from __future__ import annotations

import os
import select
import signal
import sys

POLL = 0.1  # seconds between two readings of the worker's pending signals


def pending(pid: int) -> set[int]:
    """The signals pending for process `pid`: sent to the process (ShdPnd) or to its main thread (SigPnd)."""
    mask = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("ShdPnd:", "SigPnd:")):
                mask |= int(line.split()[1], 16)
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


def guard(pid: int, signals: set[int], name: str) -> None:
    """Until stdin closes: end `pid` (SIGKILL) once one of `signals` is pending for it, saying so on stderr."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a terminal's Ctrl-C reaches this process too:
        signal.signal(signum, signal.SIG_IGN)  # the worker's pending signal decides
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL)
        if ready and not os.read(sys.stdin.fileno(), 1):
            return
        try:
            found = pending(pid) & signals
        except OSError:  # the worker is gone
            return
        if found:
            stop = signal.Signals(min(found)).name
            sys.stderr.write(f"{name}: stopped by {stop} before training started (while TensorFlow registered it "
                             "with its cluster or ran its first update, when it cannot stop itself): ended now, "
                             "nothing of this start was trained (exit 137, SIGKILL)\n")
            sys.stderr.flush()
            os.kill(pid, signal.SIGKILL)
            return


if __name__ == "__main__":
    guard(int(sys.argv[1]), {int(number) for number in sys.argv[2].split(",")}, sys.argv[3])
