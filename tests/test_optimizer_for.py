"""The one place that chooses K-FAC or SGD from a config (the runner, the benchmarks and the consistency check
all go through it)."""

import ast
from pathlib import Path

import keras
import pytest

from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig, optimizer_for


def model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_the_config_type_chooses_the_optimizer() -> None:
    kfac = optimizer_for(model(), KFACConfig(damping=0.2))
    sgd = optimizer_for(model(), SGDConfig(learning_rate=0.5))
    assert type(kfac) is KFAC and kfac.config.damping == 0.2
    assert type(sgd) is SGD and sgd.config.learning_rate == 0.5
    with pytest.raises(TypeError, match="expected a KFACConfig or an SGDConfig, found dict"):
        optimizer_for(model(), {"damping": 0.2})


def test_no_other_module_chooses_between_kfac_and_sgd() -> None:
    """No `if` statement or conditional expression in the package builds both KFAC and SGD (the factory tests the
    config's type in two separate ifs)."""
    root = Path(__file__).resolve().parent.parent / "kfac_repro"
    choosers = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If | ast.IfExp):
                called = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
                if {"KFAC", "SGD"} <= called:
                    choosers.append(f"{path.relative_to(root)}:{node.lineno}")
    assert choosers == [], choosers
