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


def test_every_quantity_is_timed_in_turns_across_the_arms(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow spell of the machine must fall on every arm alike: each timing round holds every arm (every K-FAC arm
    for K-FAC's components), never one arm's repeats back to back."""
    import tensorflow as tf

    from kfac_repro.benchmarks.arm_costs import measure
    from kfac_repro.specs import load_spec

    rounds: list[list[str]] = []

    def recording(runs: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
        rounds.append(list(runs))  # what one round times; the calls themselves are not made (no training here)
        return {name: [0.002, 0.001, 0.003] for name in runs}

    monkeypatch.setattr(measure, "in_turns", recording)
    spec = load_spec("cifar10-async", profile="smoke", arms=("sync-gpu1", "sgd-bn"))
    found = measure.measure_arms(spec.arms, 1, lambda _: tf.distribute.get_strategy())
    assert rounds[:4] == [["sync-gpu1", "sgd-bn"]] * 4  # the update blocks, then the gradient pass at B, B/2, B/4
    assert rounds[4:] == [["sync-gpu1"]] * 3  # statistics, inversion, preconditioning: the K-FAC arms
    update = next(m for m in found if m.arm == "sgd-bn" and m.quantity == "update")
    assert (update.low, update.value, update.high) == pytest.approx((0.001 / 20, 0.002 / 20, 0.003 / 20))
    assert [m.quantity for m in found if m.arm == "sgd-bn"] == ["update"] + ["gradient_pass"] * 3 + ["gradient_bytes"]
    passes = [m for m in found if m.quantity == "gradient_pass"]  # a turn: CALLS_PER_TURN calls back to back
    assert all(m.value == pytest.approx(0.002 / measure.CALLS_PER_TURN) for m in passes)
