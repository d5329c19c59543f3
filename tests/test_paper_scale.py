"""Every paper-profile arm of the ImageNet experiments at full model size (224×224, 1000 classes), one worker, a
few updates on one batch of 16 learnable synthetic examples (`kfac-repro bench paper-scale`): the untrained model
starts near ln(1000), the loss stays finite and goes down. Prints the table (first and last loss, s/update, peak
MB). About 20 minutes on 2 cores: `make test-slow` only."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kfac_repro.specs import load_spec, spec_names

IMAGENET_SPECS = [n for n in spec_names() if all(a.model["num_classes"] == 1000 for a in load_spec(n).arms.values())]
UPDATES = 8


def test_every_imagenet_experiment_is_checked() -> None:
    assert set(IMAGENET_SPECS) == set(spec_names()) - {"cifar10-async"}


def test_arm_with_several_experiments_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "cli", "bench", "paper-scale", "alexnet-bs2048", "resnet50-bs512",
                             "--arm", "kfac", "--csv", str(tmp_path / "t.csv")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "--arm selects arms of one experiment; 2 were named: alexnet-bs2048, resnet50-bs512" in result.stderr
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGENET_SPECS)
def test_paper_scale_arms_start_near_chance_and_learn(name: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "paper-scale.csv"
    result = subprocess.run([sys.executable, "-m", "cli", "bench", "paper-scale", name, "--updates", str(UPDATES),
                             "--csv", str(table)], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    with capsys.disabled():
        print(f"\n{result.stdout}")
    rows = list(csv.DictReader(table.open()))
    assert [row["arm"] for row in rows] == list(load_spec(name).arms)
    for row in rows:
        losses = [float(x) for x in row["losses"].split()]
        assert len(losses) == UPDATES and all(math.isfinite(x) for x in losses), row
        assert losses[0] == pytest.approx(math.log(1000), abs=0.5), row
        assert losses[-1] < losses[0] - 0.5, row
        assert float(row["seconds_per_update"]) > 0 and float(row["peak_mb"]) > 0
