"""`kfac-repro bench arms`: every arm's cost per update and its components in one CSV, with the machine."""

import subprocess
import sys
from pathlib import Path

import pytest

from kfac_repro.benchmarks.arm_costs.table import FILE_NAME, read_costs


@pytest.mark.slow
def test_bench_arms_writes_every_arm_and_component_with_the_machine(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "arms", "cifar10-async", "--profile", "smoke", "--arm", "sync-gpu4",
         "--arm", "sgd-bn", "--blocks", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    costs = read_costs(tmp_path / "cifar10-async" / "smoke" / FILE_NAME)
    assert set(costs) == {"sync-gpu4", "sgd-bn"}
    kfac, sgd = costs["sync-gpu4"], costs["sgd-bn"]
    assert {q for q, _ in kfac.values} == {"update", "gradient_pass", "gradient_bytes", "statistics_pass",
                                          "factor_bytes", "inversion", "apply"}
    assert kfac.get("factor_bytes").value > kfac.get("gradient_bytes").value  # the conv input factors: K⁴C² floats
    assert {q for q, _ in sgd.values} == {"update", "gradient_pass", "gradient_bytes"}
    assert sorted(e for q, e in kfac.values if q == "gradient_pass") == [8, 16, 32]  # B/4, B/2, B (batch 32)
    update = kfac.get("update")
    assert update is not None and 0 < update.low <= update.value <= update.high
    assert kfac.machine["cpus"] and kfac.machine["load_before"] and kfac.machine["commit"]
    assert kfac.machine["cpu_model"] and kfac.machine["cpu_flags"] is not None
    assert 0 <= float(kfac.machine["other_cpu"]) <= 1
    kind = "a shared" if kfac.shared else "an idle"  # what it prints is the reading the report gives the table
    assert f"so the report reads these timings as taken on {kind} machine (shared above 5%)" in result.stdout
    assert "wrote" in result.stdout and "earlier sittings" not in result.stdout
