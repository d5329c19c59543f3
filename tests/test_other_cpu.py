"""The other processes' share of the machine's CPU time while a benchmark runs (benchmarks/arm_costs/other_cpu.py),
and the shared-machine rule the report applies to bench-arms.csv."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfac_repro.benchmarks.arm_costs import other_cpu
from kfac_repro.benchmarks.arm_costs.table import FILE_NAME, Measurement, read_costs, write_costs

linux = pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="reads Linux's /proc/stat")


@linux
def test_a_busy_process_beside_the_benchmark_is_counted() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # started
        others = other_cpu.OtherCPU()
        time.sleep(2.0)
        share = others.share()
    finally:
        spinner.kill()
        spinner.wait()
    assert share is not None and share >= 0.8 / (os.cpu_count() or 1)  # one core of the machine's, at least 80%


def test_the_share_is_the_machines_busy_time_less_this_processs(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter([(100.0, 10.0, 50.0), (100.0 + 7.0, 10.0 + 6.0, 55.0)])  # busy, own CPU, wall seconds
    sample = {"now": (0.0, 0.0, 0.0)}

    def advance() -> None:
        sample["now"] = next(samples)

    monkeypatch.setattr(other_cpu, "machine_busy_seconds", lambda: sample["now"][0])
    monkeypatch.setattr(other_cpu, "own_cpu_seconds", lambda: sample["now"][1])
    monkeypatch.setattr(other_cpu.time, "monotonic", lambda: sample["now"][2])
    monkeypatch.setattr(other_cpu.os, "cpu_count", lambda: 2)
    advance()
    others = other_cpu.OtherCPU()
    advance()
    assert others.share() == pytest.approx((7.0 - 6.0) / (5.0 * 2))  # 1 CPU-second of 10 went to others


def test_machine_busy_seconds_reads_the_first_line_of_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 20 30 4000 50 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    ticks = os.sysconf("SC_CLK_TCK")
    assert other_cpu.machine_busy_seconds(stat) == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / ticks)
    stat.write_text("intr 1 2 3\n")
    assert other_cpu.machine_busy_seconds(stat) is None
    assert other_cpu.machine_busy_seconds(tmp_path / "absent") is None


@pytest.mark.parametrize(("machine", "shared"), [
    ({"other_cpu": "0.01", "load_before": "3.0"}, False),  # busy before the benchmark, idle while it ran
    ({"other_cpu": "0.2", "load_before": "0.1", "load_after": "0.2"}, True),
    ({"other_cpu": "", "load_before": "0.1", "load_after": "0.2"}, False),  # an older table: the load rule
    ({"other_cpu": "", "load_before": "3.0", "load_after": "0.2"}, True),
])
def test_shared_by_the_other_processes_share_else_by_the_load_averages(tmp_path: Path, machine: dict,
                                                                       shared: bool) -> None:
    path = tmp_path / FILE_NAME
    write_costs(path, "s", "cpu", [Measurement("a", "update", 8, 0.1, 0.1, 0.1, "seconds", 3)],
                {"host": "h", "device": "CPU", "cpus": 2, **machine})
    costs = read_costs(path)["a"]
    assert costs.shared is shared
    assert ("other processes used" in costs.load) is bool(machine["other_cpu"])
