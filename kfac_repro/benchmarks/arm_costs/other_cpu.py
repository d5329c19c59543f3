"""How much of the machine's CPU time went to other processes while a benchmark ran: the evidence that its timings
come from an otherwise idle machine. Unlike a load average, it is not raised by work that ended before the
benchmark began, and it does not count the benchmark itself.

share = (Δ busy CPU seconds of the whole machine − Δ CPU seconds of this process) / (Δ wall seconds × cores), the
machine's from the first line of Linux's /proc/stat, this process's (all its threads) from os.times().
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_STAT = Path("/proc/stat")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (idle and iowait are fields 3 and 4)


def machine_busy_seconds(stat: Path = _STAT) -> float | None:
    """CPU seconds every core of the machine has spent busy since boot; None where /proc/stat is unreadable."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(value) for value in fields[1:9]]
    return sum(ticks[i] for i in _BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads; not its children)."""
    times = os.times()
    return times.user + times.system


class OtherCPU:
    """Started when created; `share()` is the other processes' share of the machine's CPU since then (0..1), or
    None where the machine's counters cannot be read."""

    def __init__(self) -> None:
        self._start = (machine_busy_seconds(), own_cpu_seconds(), time.monotonic())

    def share(self) -> float | None:
        busy, own, wall = machine_busy_seconds(), own_cpu_seconds(), time.monotonic()
        busy_start, own_start, wall_start = self._start
        if busy is None or busy_start is None or wall <= wall_start:
            return None
        others = (busy - busy_start) - (own - own_start)
        return max(0.0, others / ((wall - wall_start) * (os.cpu_count() or 1)))
