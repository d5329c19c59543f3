"""`kfac-repro run <spec> --profile smoke` for every experiment spec: by default one K-FAC and one SGD arm of each
(the cheapest representatives) but for those whose models are slowest to trace (ResNet-50 and GoogLeNet; the
GoogLeNet model is stepped by K-FAC and SGD in test_models_kfac.py; their representatives and every arm of every spec
run under `make test-slow`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfac_repro.specs import load_spec, spec_names


def representative_arms(name: str) -> list[str]:
    arms = load_spec(name, "smoke").arms
    chosen = []
    for method in ("kfac", "sgd"):
        candidates = [a for a, c in arms.items() if c.optimizer["name"] == method]
        if candidates:  # the one without BN if any: fewer blocks to trace
            chosen.append(min(candidates, key=lambda a: (arms[a].model["batch_norm"], a)))
    return chosen


def run_smoke(name: str, arms: list[str], out: Path) -> None:
    arm_args = [a for arm in arms for a in ("--arm", arm)]
    result = subprocess.run([sys.executable, "-m", "cli", "run", name, "--profile", "smoke", *arm_args,
                             "--out", str(out)], capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    for arm in arms:
        (run_dir,) = (out / name / "smoke" / arm).iterdir()
        assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
        assert (run_dir / "metrics.csv").read_text().count("\n") == 2 + load_spec(name, "smoke").arms[arm].training[
            "steps"] // load_spec(name, "smoke").arms[arm].training["log_every"]  # header, step 0, logged steps


# the slowest to trace (15–50 s each on 2 cores), out of the default run, which must stay under 10 minutes (568 s
# on 2924d9f with googlenet-kfc-vs-cheap still in it)
SLOWEST_TO_TRACE = {"resnet50-bs512", "googlenet-batch-scaling", "googlenet-bs256", "googlenet-kl-decay",
                    "googlenet-kfc-vs-cheap"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOWEST_TO_TRACE else n
                                  for n in spec_names()])
def test_smoke_representative_arms(name: str, tmp_path: Path) -> None:
    run_smoke(name, representative_arms(name), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", spec_names())
def test_smoke_every_arm(name: str, tmp_path: Path) -> None:
    run_smoke(name, list(load_spec(name, "smoke").arms), tmp_path)
