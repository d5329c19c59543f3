"""`bench arms`: every arm's steady-state cost per update, timed back to back in one process on one machine, and
the component times the cluster clock (`cluster_clock`) is built from.

An arm's update is timed exactly as configured (statistics every `stats_every` steps, inverses refreshed inline
every `inverse_every` steps or in the background thread, the arm's replicas) on one fixed batch of the arm's input
shape, in blocks of updates long enough to contain a whole inversion period; seconds per update = block time /
block length (median over blocks, with the range). Components, on one device: a gradient pass on B/n examples
(n = 1, 2, 4), the statistics pass, preconditioning, one inversion, and the bytes of the all-reduced gradient and
factors.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.benchmarks.arm_costs.cpu_identity import cpu_flags, cpu_model
from kfac_repro.benchmarks.arm_costs.table import Measurement
from kfac_repro.benchmarks.step_time import NEVER, random_batch, timed
from kfac_repro.kfac import KFAC, KFACConfig, SGDConfig, optimizer_for
from kfac_repro.models.registry import build_model
from kfac_repro.runner.experiment import optimizer_config

if TYPE_CHECKING:
    from kfac_repro.specs.resolve import ArmConfig

SHARDS = (1, 2, 4)


def machine_record() -> dict[str, Any]:
    """Where the timings are taken: host, device, the CPU's model and instruction-set flags, cores, TensorFlow, and
    the 1-minute load average now (work other than this benchmark: a load near 0 means an otherwise idle machine)."""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    device = ", ".join(gpus) or f"CPU ({platform.processor() or platform.machine()})"
    return {"host": platform.node(), "device": device, "cpu_model": cpu_model(), "cpu_flags": cpu_flags(),
            "cpus": os.cpu_count(), "tensorflow": tf.__version__, "load_before": round(os.getloadavg()[0], 2)}


def build_arm_model(arm: ArmConfig) -> tuple[keras.Model, tuple[int, ...], int]:
    """(the arm's model, its input shape (S, S, C), its class count)."""
    model_section = arm.model
    size, classes = int(model_section["input_size"]), int(model_section["num_classes"])
    channels = 1 if arm.data["name"] == "fashion_mnist" else 3
    knobs = {k: v for k, v in model_section.items() if k not in ("name", "input_size", "num_classes")}
    shape = (size, size, channels)
    return build_model(model_section["name"], input_shape=shape, num_classes=classes, **knobs), shape, classes


def measure_arm(name: str, arm: ArmConfig, blocks: int, strategy: tf.distribute.Strategy,
                progress: Callable[[str], None] = lambda _: None) -> list[Measurement]:
    """The arm's seconds per update (as configured) and its components; see the module docstring. `strategy` has
    the arm's replicas; arms with as many replicas must share one strategy in a process (a second strategy over the
    same devices reuses the first one's collective keys, and TensorFlow then refuses its all-reduces)."""
    keras.utils.set_random_seed(0)
    batch = int(arm.training["batch_size"])
    _, config = optimizer_config(arm.optimizer, 0)
    with strategy.scope():
        model, shape, classes = build_arm_model(arm)
        optimizer = optimizer_for(model, config)
    x, y = random_batch(batch, shape, classes)
    batches = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    period = config.inverse_every if isinstance(config, KFACConfig) else 20
    block = max(20, period)

    def updates() -> None:
        for _ in range(block):
            optimizer.train_step(*next(batches))

    progress(f"{name}: {blocks} blocks of {block} updates")
    median, low, high = timed(updates, blocks, warmup=1)
    if isinstance(optimizer, KFAC):
        optimizer.close()
    found = [Measurement(name, "update", batch, median / block, low / block, high / block, "seconds", blocks)]
    progress(f"{name}: components")
    return found + _components(name, arm, config, x, y)


def _components(name: str, arm: ArmConfig, config: KFACConfig | SGDConfig, x: tf.Tensor,
                y: tf.Tensor) -> list[Measurement]:
    """Gradient pass on B/n examples, and for K-FAC the statistics pass, preconditioning and one inversion."""
    keras.utils.set_random_seed(0)
    model, _, _ = build_arm_model(arm)
    params = model.trainable_variables
    batch = int(x.shape[0])

    @tf.function(reduce_retracing=True)
    def gradient(xs: tf.Tensor, ys: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(ys, model(xs, training=True),
                                                                               from_logits=True))
        return tape.gradient(loss, params)

    found = []
    for n in SHARDS:
        shard = batch // n
        median, low, high = timed(functools.partial(gradient, x[:shard], y[:shard]), 10, 3)
        found.append(Measurement(name, "gradient_pass", shard, median, low, high, "seconds", 10))
    gradient_bytes = 4 * sum(int(np.prod(p.shape)) for p in params)
    found.append(Measurement(name, "gradient_bytes", batch, gradient_bytes, gradient_bytes, gradient_bytes, "bytes",
                             1))
    if not isinstance(config, KFACConfig):
        return found
    kfac = KFAC(model, dataclasses.replace(config, inverse_every=NEVER, inversion="sync"))
    stats_batch = config.stats_batch_size or batch
    median, low, high = timed(lambda: kfac.accumulate_statistics(x[:stats_batch]), 5, 2)
    found.append(Measurement(name, "statistics_pass", stats_batch, median, low, high, "seconds", 5))
    factor_bytes = int(kfac.communication_bytes()["factors_per_refresh"])
    found.append(Measurement(name, "factor_bytes", batch, factor_bytes, factor_bytes, factor_bytes, "bytes", 1))
    median, low, high = timed(kfac.refresh_inverses, 3, 1)
    found.append(Measurement(name, "inversion", batch, median, low, high, "seconds", 3))
    grads = gradient(x, y)
    precondition = tf.function(kfac.precondition, reduce_retracing=True)
    median, low, high = timed(lambda: precondition(grads), 10, 3)
    found.append(Measurement(name, "apply", batch, median, low, high, "seconds", 10))
    kfac.close()
    return found
