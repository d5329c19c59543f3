"""The K-FAC core: Fisher blocks, statistics, damping, inverses and the K-FAC and SGD update rules.

Public API: `KFAC`, `KFACConfig`, `SGD`, `SGDConfig` (see README, "Library API").
"""

from kfac_repro.kfac.config import KFACConfig, SGDConfig
from kfac_repro.kfac.optimizer import KFAC
from kfac_repro.kfac.sgd import SGD

__all__ = ["KFAC", "SGD", "KFACConfig", "SGDConfig"]
