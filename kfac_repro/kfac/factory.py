"""The optimizer a config names: `KFAC` for a `KFACConfig`, `SGD` for an `SGDConfig` (the one place that chooses)."""

from __future__ import annotations

from typing import Any

from kfac_repro.kfac.config import KFACConfig, SGDConfig
from kfac_repro.kfac.optimizer import KFAC
from kfac_repro.kfac.sgd import SGD


def optimizer_for(model: Any, config: KFACConfig | SGDConfig) -> KFAC | SGD:
    """`KFAC(model, config)` or `SGD(model, config)`, by the type of `config`."""
    if isinstance(config, KFACConfig):
        return KFAC(model, config)
    if isinstance(config, SGDConfig):
        return SGD(model, config)
    raise TypeError(f"optimizer_for: expected a KFACConfig or an SGDConfig, found {type(config).__name__}")
