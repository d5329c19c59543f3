"""What K-FAC and SGD share: one training-step interface over a Keras model on any tf.distribute strategy,
momentum, weight decay, Polyak averaging, and the loss of the model's likelihood.

A step runs `replica_step` on every replica (`strategy.run`); gradients are all-reduced, every replica computes
the same new state, and `commit` assigns it once per variable through a cross-replica merge.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Protocol

import keras
import tensorflow as tf

from kfac_repro.kfac import likelihoods
from kfac_repro.kfac.config import Schedule
from kfac_repro.kfac.polyak import PolyakAverage
from kfac_repro.kfac.replicas import all_reduce_mean, assign_all, reduce_metrics
from kfac_repro.kfac.update import UpdateRule


def check_same_variables(model: keras.Model, built_for: Sequence, current: Sequence) -> None:
    """ValueError unless `current` (the model's trainable variables now) are those the optimizer was built for: a
    layer's `trainable` set afterwards would leave its blocks, velocities and update for the old set."""
    if [id(v) for v in current] != [id(v) for v in built_for]:
        changed = sorted({v.path for v in current} ^ {v.path for v in built_for})
        raise ValueError(f"the trainable variables of model {model.name!r} changed after its optimizer was built (a "
                         f"layer's `trainable` was set; differing: {changed}): build a new optimizer (and compile "
                         "again)")


def scheduled(schedule: Schedule, step: tf.Tensor) -> tf.Tensor:
    """schedule.initial · rate^⌊step / every⌋ as a float32 tensor."""
    if schedule.every is None or schedule.rate == 1.0:
        return tf.constant(schedule.initial, tf.float32)
    exponent = tf.cast(step // schedule.every, tf.float32)
    return schedule.initial * tf.pow(tf.constant(schedule.rate, tf.float32), exponent)


class UpdateSettings(Protocol):
    """What both KFACConfig and SGDConfig say about the loss and the momentum update."""

    @property
    def likelihood(self) -> likelihoods.Likelihood: ...
    @property
    def from_logits(self) -> bool: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def polyak_decay(self) -> float | None: ...


Metrics = dict[str, tf.Tensor | float]


class ModelOptimizer(abc.ABC):
    """Trains `model` one mini-batch at a time: `train_step(x, y)` returns the step's metrics as floats;
    `step(x, y)` does the same update and leaves them as tensors (no host synchronisation per update).

    Build it inside `strategy.scope()` to train data-parallel; x and y are then per-replica values (from a
    distributed dataset or `experimental_distribute_values_from_function`), each replica holding its share.
    """

    def __init__(self, model: keras.Model, config: UpdateSettings, rule: UpdateRule | None = None):
        if not model.built:
            raise ValueError(f"model {model.name!r} is not built: call it once or give it an Input first")
        self.model = model
        self.strategy = tf.distribute.get_strategy()  # the one whose scope the optimizer is built in
        self.likelihood = config.likelihood
        self.from_logits = config.from_logits
        self.rule = rule or UpdateRule(config.momentum, config.weight_decay)
        polyak_decay = config.polyak_decay
        self.params = list(model.trainable_variables)
        self.velocity = [tf.Variable(tf.zeros(p.shape, p.dtype), trainable=False, name=f"velocity_{i}")
                         for i, p in enumerate(self.params)]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.polyak = PolyakAverage(self.params, polyak_decay) if polyak_decay is not None else None

    def check_trainable(self) -> None:
        """Refuse to train once `trainable` changed since construction (see `check_same_variables`)."""
        check_same_variables(self.model, self.params, self.model.trainable_variables)

    def checkpoint_state(self) -> dict[str, object]:
        """Everything besides the model's weights that a resumed run needs, as tf.train.Checkpoint children."""
        state: dict[str, object] = {"velocity": self.velocity, "iterations": self.iterations}
        if self.polyak is not None:
            state["polyak"] = self.polyak.averages
        return state

    @abc.abstractmethod
    def restored(self) -> None:
        """Re-derive host-side counters after the checkpointed variables were restored."""

    @abc.abstractmethod
    def step(self, x: tf.Tensor, y: tf.Tensor) -> Metrics:
        """One update on the batch (x, y); returns loss, error, step_size, learning_rate, and method extras, as
        tensors not waited for (or host floats)."""

    def train_step(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, float]:
        """`step`, its metrics converted to floats (waits for the update)."""
        return as_floats(self.step(x, y))

    def distributed(self, replica_step: Callable) -> Callable:
        """A compiled function running `replica_step(x, y, *extra)` on every replica and reducing its metrics."""

        def step(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            return reduce_metrics(self.strategy, self.strategy.run(replica_step, args=args))

        return tf.function(step, reduce_retracing=True, autograph=False)

    def loss_and_outputs(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean negative log-likelihood of the (local) batch plus the model's own losses, and the outputs."""
        outputs = tf.cast(self.model(x, training=training), tf.float32)  # mixed precision: the loss in float32
        loss = tf.reduce_mean(likelihoods.negative_log_likelihood(self.likelihood, outputs, y, self.from_logits))
        if self.model.losses:
            loss += tf.add_n(self.model.losses)
        return loss, outputs

    def global_gradients(self, tape: tf.GradientTape, loss: tf.Tensor) -> list[tf.Tensor]:
        """∇L + wd·θ averaged over replicas (zeros for a variable the loss does not reach)."""
        return self.rule.gradients(tape.gradient(loss, self.params), self.params, all_reduce_mean)

    def update_assignments(self, direction: list[tf.Tensor], step_size: tf.Tensor) -> list[tuple]:
        """(variable, new value) pairs of the update rule (`kfac.update`), the Polyak average, the step count."""
        pairs, new_params = self.rule.assignments(self.params, self.velocity, direction, step_size)
        if self.polyak is not None:
            pairs += self.polyak.assignments(new_params)
        pairs.append((self.iterations, self.iterations + 1))
        return pairs

    @staticmethod
    def commit(pairs: list[tuple]) -> None:
        """Assign every (variable, value) pair on all replicas."""
        assign_all([v for v, _ in pairs], [value for _, value in pairs])

    def error_rate(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return likelihoods.error_rate(self.likelihood, outputs, y)

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Evaluate with the Polyak-averaged weights (no-op without averaging)."""
        with self.polyak.swapped_in() if self.polyak is not None else nullcontext():
            yield


def as_floats(metrics: Metrics) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}
