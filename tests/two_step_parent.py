"""A parent that dies in two steps, as a SIGKILLed parent with several threads does (its threads exit one after
another): `python tests/two_step_parent.py PID ERR RELEASE FINAL CHILD_ARGV...` starts CHILD_ARGV with
interrupts.start_child from a thread, writes the child's pid to PID and its stderr to ERR. The thread exits once
the file RELEASE exists (Linux then passes the child to this process's main thread, with a first parent-death
signal); once the file FINAL exists, the process SIGKILLs itself (the child passes to init or a subreaper, with
the signal again)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kfac_repro.distribute import interrupts

TIMEOUT = 300.0  # seconds to wait for each file; the test's own timeouts are shorter


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{path} did not appear within {TIMEOUT} s")
        time.sleep(0.001)


def start_and_hold(argv: list[str], pid: Path, err: Path, release: Path) -> None:
    with err.open("w") as stderr:
        child = interrupts.start_child(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    pid.write_text(str(child.pid))
    wait_for(release)


def main(pid: Path, err: Path, release: Path, final: Path, argv: list[str]) -> None:
    starter = threading.Thread(target=start_and_hold, args=(argv, pid, err, release))
    starter.start()
    starter.join()
    wait_for(final)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
