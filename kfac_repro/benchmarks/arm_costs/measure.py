"""`bench arms`: every arm's steady-state cost per update, timed back to back in one process on one machine, and
the component times the cluster clock (`cluster_clock`) is built from.

An arm's update is timed exactly as configured (statistics every `stats_every` steps, inverses refreshed inline
every `inverse_every` steps or in the background thread, the arm's replicas) on one fixed batch of the arm's input
shape, in blocks of updates long enough to contain a whole inversion period; seconds per update = block time / block
length (median over blocks, with the range). Every quantity is timed in turns across the arms (a round times one
block of updates, or of CALLS_PER_TURN calls, of every arm), so that a slow spell of the machine (this VM has them)
falls on every arm alike instead of on whichever arm it met. Components, on one device: a gradient pass on B/n
examples (n = 1, 2, 4), the statistics pass, preconditioning, one inversion, and the bytes of the all-reduced
gradient and factors.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.benchmarks.arm_costs.cpu_identity import cpu_flags, cpu_model
from kfac_repro.benchmarks.arm_costs.table import Measurement
from kfac_repro.benchmarks.step_time import NEVER, in_turns, random_batch
from kfac_repro.kfac import KFAC, KFACConfig, SGDConfig, optimizer_for
from kfac_repro.models.registry import build_model
from kfac_repro.runner.experiment import optimizer_config

if TYPE_CHECKING:
    from kfac_repro.specs.resolve import ArmConfig

SHARDS = (1, 2, 4)
UPDATE_BLOCK = 20  # updates in a timed block, at least (a K-FAC arm's block spans its inversion period)
# A component's back-to-back calls in each turn, as many as an update block's: after another arm's turn the caches
# are cold, and the shorter the turn the more of it that costs. Timed in turns with SGD's update alone (7 rounds),
# AlexNet's gradient pass at 2048 examples read 1.05x SGD's whole update with 5 calls per turn and 1.00x with 20;
# in a sitting, beside the other arms' turns, 1.12x with 5.
CALLS_PER_TURN = UPDATE_BLOCK
SHORT_ROUNDS, STATISTICS_ROUNDS = 5, 3  # timed rounds of the gradient pass and preconditioning; of the statistics


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


@dataclasses.dataclass
class _Timed:
    """One arm ready to time: its config, batch, optimizer as configured, and its block of updates."""

    config: KFACConfig | SGDConfig
    batch: tuple[tf.Tensor, tf.Tensor]
    optimizer: KFAC | Any
    block: int
    updates: Callable[[], None]


def measure_arms(arms: Mapping[str, ArmConfig], blocks: int, strategy_for: Callable[[int], tf.distribute.Strategy],
                 progress: Callable[[str], None] = lambda _: None) -> list[Measurement]:
    """Every arm's seconds per update (as configured) and its components (module docstring), each quantity timed
    in turns: one block (or call) of every arm per round, so that a slow spell of the machine falls on every arm
    alike. `strategy_for(replicas)` gives the strategy of an arm's replica count (arms with as many replicas share
    one: a second strategy over the same devices reuses the first one's collective keys, and TensorFlow then
    refuses its all-reduces)."""
    timed_arms = {name: _prepare(arm, strategy_for(int(arm.distribution["workers"]))) for name, arm in arms.items()}
    progress(f"updates: {blocks} rounds, each a block of every arm in turn ("
             + ", ".join(f"{name} {t.block}" for name, t in timed_arms.items()) + " updates)")
    times = in_turns({name: t.updates for name, t in timed_arms.items()}, blocks, warmup=1)
    found: dict[str, list[Measurement]] = {}
    for name, t in timed_arms.items():
        if isinstance(t.optimizer, KFAC):
            t.optimizer.close()
        median, low, high = _spread(times[name])
        found[name] = [Measurement(name, "update", int(t.batch[0].shape[0]), median / t.block, low / t.block,
                                   high / t.block, "seconds", blocks)]
    progress("components, every arm in turn")
    _components(arms, timed_arms, found)
    return [m for name in arms for m in found[name]]


def _prepare(arm: ArmConfig, strategy: tf.distribute.Strategy) -> _Timed:
    """The arm's model and optimizer in `strategy`, on one fixed random batch, and a block of updates long enough
    to contain a whole inversion period."""
    keras.utils.set_random_seed(0)
    batch = int(arm.training["batch_size"])
    _, config = optimizer_config(arm.optimizer, 0)
    with strategy.scope():
        model, shape, classes = build_arm_model(arm)
        optimizer = optimizer_for(model, config)
    x, y = random_batch(batch, shape, classes)
    batches = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    block = max(UPDATE_BLOCK, config.inverse_every if isinstance(config, KFACConfig) else UPDATE_BLOCK)

    def updates() -> None:
        for _ in range(block):
            optimizer.train_step(*next(batches))

    return _Timed(config, (x, y), optimizer, block, updates)


def _spread(times: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(times), min(times), max(times)


def _components(arms: Mapping[str, ArmConfig], timed_arms: Mapping[str, _Timed],
                found: dict[str, list[Measurement]]) -> None:
    """Append to `found` each arm's gradient pass on B/n examples, and for K-FAC its statistics pass,
    preconditioning and one inversion, every quantity timed in turns across the arms, on one device."""
    gradients, kfacs, sizes = {}, {}, {}
    params: dict[str, list[tf.Variable]] = {}
    for name, arm in arms.items():
        keras.utils.set_random_seed(0)
        model, _, _ = build_arm_model(arm)
        params[name] = model.trainable_variables
        gradients[name] = _gradient_function(model)
        config = timed_arms[name].config
        if isinstance(config, KFACConfig):
            kfacs[name] = KFAC(model, dataclasses.replace(config, inverse_every=NEVER, inversion="sync"))
            sizes[name] = config.stats_batch_size
    data = {name: t.batch for name, t in timed_arms.items()}
    for n in SHARDS:
        shards = {name: int(x.shape[0]) // n for name, (x, _) in data.items()}
        times = _calls_in_turns({name: functools.partial(gradients[name], x[:shards[name]], y[:shards[name]])
                                 for name, (x, y) in data.items()}, SHORT_ROUNDS, 2)
        for name in data:
            found[name].append(Measurement(name, "gradient_pass", shards[name], *_spread(times[name]), "seconds",
                                           SHORT_ROUNDS * CALLS_PER_TURN))
    for name, (x, _) in data.items():
        size = 4 * sum(int(np.prod(p.shape)) for p in params[name])
        found[name].append(Measurement(name, "gradient_bytes", int(x.shape[0]), size, size, size, "bytes", 1))
    if not kfacs:
        return
    stats = {name: data[name][0][:sizes[name] or int(data[name][0].shape[0])] for name in kfacs}
    statistics_times = _calls_in_turns({name: functools.partial(k.accumulate_statistics, stats[name])
                                        for name, k in kfacs.items()}, STATISTICS_ROUNDS, 1)
    inversion_times = in_turns({name: k.refresh_inverses for name, k in kfacs.items()}, 3, 1)
    preconditions = {name: functools.partial(tf.function(k.precondition, reduce_retracing=True),
                                             gradients[name](*data[name])) for name, k in kfacs.items()}
    apply_times = _calls_in_turns(preconditions, SHORT_ROUNDS, 2)
    for name, kfac in kfacs.items():
        batch = int(data[name][0].shape[0])
        factor_bytes = int(kfac.communication_bytes()["factors_per_refresh"])
        found[name] += [
            Measurement(name, "statistics_pass", int(stats[name].shape[0]), *_spread(statistics_times[name]),
                        "seconds", STATISTICS_ROUNDS * CALLS_PER_TURN),
            Measurement(name, "factor_bytes", batch, factor_bytes, factor_bytes, factor_bytes, "bytes", 1),
            Measurement(name, "inversion", batch, *_spread(inversion_times[name]), "seconds", 3),
            Measurement(name, "apply", batch, *_spread(apply_times[name]), "seconds", SHORT_ROUNDS * CALLS_PER_TURN)]
        kfac.close()


def _calls_in_turns(calls: Mapping[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each short call, timed in turns as blocks of CALLS_PER_TURN back-to-back calls: one call
    after another arm's would find the caches cold (the arm-by-arm passes it follows evict them), and so come out
    slower than the same computation inside an update block."""
    def block(call: Callable[[], object]) -> None:
        for _ in range(CALLS_PER_TURN):
            call()

    times = in_turns({name: functools.partial(block, call) for name, call in calls.items()}, rounds, warmup)
    return {name: [t / CALLS_PER_TURN for t in values] for name, values in times.items()}


def _gradient_function(model: keras.Model) -> Callable[[tf.Tensor, tf.Tensor], list[tf.Tensor]]:
    """The traced gradient of the mean cross-entropy on a batch (the gradient pass of one device)."""
    params = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def gradient(xs: tf.Tensor, ys: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(ys, model(xs, training=True),
                                                                               from_logits=True))
        return tape.gradient(loss, params)

    return gradient
