"""What K-FAC and SGD share: one training-step interface over a Keras model, momentum, weight decay, Polyak
averaging, the loss of the model's likelihood, and compiled steps."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import keras
import tensorflow as tf

from kfac_repro.kfac import likelihoods
from kfac_repro.kfac.config import Schedule
from kfac_repro.kfac.polyak import PolyakAverage


def scheduled(schedule: Schedule, step: tf.Tensor) -> tf.Tensor:
    """schedule.initial · rate^⌊step / every⌋ as a float32 tensor."""
    if schedule.every is None or schedule.rate == 1.0:
        return tf.constant(schedule.initial, tf.float32)
    exponent = tf.cast(step // schedule.every, tf.float32)
    return schedule.initial * tf.pow(tf.constant(schedule.rate, tf.float32), exponent)


class ModelOptimizer(abc.ABC):
    """Trains `model` one mini-batch at a time: `train_step(x, y)` returns the step's metrics as floats."""

    def __init__(
        self,
        model: keras.Model,
        *,
        likelihood: likelihoods.Likelihood,
        from_logits: bool,
        momentum: float,
        weight_decay: float,
        polyak_decay: float | None,
    ):
        if not model.built:
            raise ValueError(f"model {model.name!r} is not built: call it once or give it an Input first")
        self.model = model
        self.likelihood = likelihood
        self.from_logits = from_logits
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.params = list(model.trainable_variables)
        self.velocity = [tf.Variable(tf.zeros_like(p), trainable=False, name=f"velocity_{i}")
                         for i, p in enumerate(self.params)]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.polyak = PolyakAverage(self.params, polyak_decay) if polyak_decay is not None else None

    @abc.abstractmethod
    def train_step(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, float]:
        """One update on the batch (x, y); returns loss, error, step_size, learning_rate, and method extras."""

    def loss_and_outputs(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean negative log-likelihood of the batch (plus the model's own regularisation losses), outputs."""
        outputs = self.model(x, training=training)
        loss = tf.reduce_mean(likelihoods.negative_log_likelihood(self.likelihood, outputs, y, self.from_logits))
        if self.model.losses:
            loss += tf.add_n(self.model.losses)
        return loss, outputs

    def gradients(self, tape: tf.GradientTape, loss: tf.Tensor) -> list[tf.Tensor]:
        """∇L for every trainable variable (zeros for a variable the loss does not reach)."""
        grads = tape.gradient(loss, self.params)
        return [tf.zeros_like(p) if g is None else tf.convert_to_tensor(g)
                for g, p in zip(grads, self.params, strict=True)]

    def regularised(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """∇L + wd·θ (the L2 term the paper folds into the damping for K-FAC)."""
        if self.weight_decay == 0:
            return grads
        return [g + self.weight_decay * p for g, p in zip(grads, self.params, strict=True)]

    def apply_update(self, direction: list[tf.Tensor], step_size: tf.Tensor) -> None:
        """v ← μ v + η·direction; θ ← θ − v; then the Polyak average and the iteration count."""
        for variable, velocity, d in zip(self.params, self.velocity, direction, strict=True):
            velocity.assign(self.momentum * velocity + step_size * d)
            variable.assign_sub(velocity)
        if self.polyak is not None:
            self.polyak.update()
        self.iterations.assign_add(1)

    def error_rate(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return likelihoods.error_rate(self.likelihood, outputs, y)

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Evaluate with the Polyak-averaged weights (no-op without averaging)."""
        with self.polyak.swapped_in() if self.polyak is not None else nullcontext():
            yield


def as_floats(metrics: dict[str, tf.Tensor]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}
