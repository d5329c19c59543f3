"""Child process of test_damping_adaptation: the adaptive damping's ρ and λ over four steps, on one replica and on
two (MirroredStrategy over two logical CPUs, each holding half of the batch); prints them as JSON."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

from kfac_repro.kfac import KFAC, KFACConfig  # noqa: E402 (after the logical devices)
from tests.test_damping_adaptation import _model  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 3)).astype(np.float32)
Y = RNG.integers(0, 3, size=16)
CONFIG = KFACConfig(damping=0.1, weight_decay=0.01, kl_clip=0.1, damping_adaptation_every=2, damping_min=1e-3)


def run(strategy: tf.distribute.Strategy) -> list[list[float | None]]:
    with strategy.scope():
        optimizer = KFAC(_model(), CONFIG)
    halves = strategy.num_replicas_in_sync > 1
    x = strategy.experimental_distribute_values_from_function(lambda c: X[8 * c.replica_id_in_sync_group:][:8]) \
        if halves else X
    y = strategy.experimental_distribute_values_from_function(lambda c: Y[8 * c.replica_id_in_sync_group:][:8]) \
        if halves else Y
    rows = []
    for _ in range(4):
        metrics = optimizer.train_step(x, y)
        rows.append([metrics.get("reduction_ratio"), metrics["damping"]])
    optimizer.close()
    return rows


if __name__ == "__main__":
    print(json.dumps({"one": run(tf.distribute.get_strategy()),
                      "two": run(tf.distribute.MirroredStrategy(["/CPU:0", "/CPU:1"]))}))
