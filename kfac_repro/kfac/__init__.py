"""The K-FAC core: Fisher blocks, statistics, damping, inverses and the K-FAC and SGD update rules.

Public API: `KFAC`, `KFACConfig`, `SGD`, `SGDConfig`, `optimizer_for` (the optimizer of a config),
`register_block` (see README, "Library API"). The optimizers and the block table are imported on first use, so
that `kfac_repro.kfac.config` (plain dataclasses) can be read without loading TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kfac_repro.kfac.config import KFACConfig, SGDConfig

if TYPE_CHECKING:
    from kfac_repro.kfac.block_table import register_block
    from kfac_repro.kfac.factory import optimizer_for
    from kfac_repro.kfac.optimizer import KFAC
    from kfac_repro.kfac.sgd import SGD

__all__ = ["KFAC", "SGD", "KFACConfig", "SGDConfig", "optimizer_for", "register_block"]
_LAZY = {"KFAC": "kfac_repro.kfac.optimizer", "SGD": "kfac_repro.kfac.sgd",
         "optimizer_for": "kfac_repro.kfac.factory", "register_block": "kfac_repro.kfac.block_table"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kfac_repro.kfac' has no attribute {name!r}")
