"""The K-FAC optimizer of Ba, Grosse & Martens (2017) for an unmodified Keras model.

Each step: forward once; gradient of the mean loss; every `stats_every` steps also back-propagate Fisher
cotangents (targets sampled from the model) to the tapped layers and fold the batch factors into exponential
moving averages (decay min(1 − 1/k, stats_decay)); precondition each block with its latest installed inverse;
η = min(η_max, √(c / vᵀg)) (Eq. 14); momentum on η·v. Inverses are refreshed between steps by `refresh_inverses`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac import likelihoods
from kfac_repro.kfac.base import ModelOptimizer, as_floats, scheduled
from kfac_repro.kfac.blocks import FisherBlock
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.kronecker_blocks import KroneckerBlock
from kfac_repro.kfac.layer_capture import LayerTaps
from kfac_repro.kfac.registration import build_blocks, summary

_TINY = 1e-12


class KFAC(ModelOptimizer):
    """Distributed-K-FAC update rule on one model; `train_step(x, y)` as for `SGD`."""

    def __init__(self, model: keras.Model, config: KFACConfig | None = None):
        self.config = config or KFACConfig()
        super().__init__(
            model,
            likelihood=self.config.likelihood,
            from_logits=self.config.from_logits,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
            polyak_decay=self.config.polyak_decay,
        )
        self.blocks: list[FisherBlock] = build_blocks(model, self.config)
        kronecker = [b.layer for b in self.blocks if isinstance(b, KroneckerBlock)]
        others = [b.layer for b in self.blocks if not isinstance(b, KroneckerBlock)]
        self.taps = LayerTaps(kronecker, others)
        index = {id(p): i for i, p in enumerate(self.params)}
        self._block_params = [[index[id(v)] for v in block.variables] for block in self.blocks]
        self.stats_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="stats_updates")
        self.generator = tf.random.Generator.from_seed(self.config.seed)
        self.inverse_iteration = -1
        self._host_iteration = 0
        self._steps = {
            with_stats: tf.function(lambda x, y, s=with_stats: self._compiled_step(x, y, s), reduce_retracing=True)
            for with_stats in (True, False)
        }
        self._stats_only = tf.function(self._compiled_stats, reduce_retracing=True)

    # ---- public API -------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """Each layer, its block type and factor shapes."""
        return summary(self.model, self.blocks)

    def factors(self) -> dict[str, dict[str, np.ndarray]]:
        """The current (moving-average) factor matrices of every block, by layer name."""
        return {b.name: {name: var.numpy() for name, var in b.factors.items()} for b in self.blocks}

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """(F̂ + damping)⁻¹ g block by block, for gradients aligned with model.trainable_variables."""
        result = [tf.convert_to_tensor(g) for g in grads]
        for block, indices in zip(self.blocks, self._block_params, strict=True):
            for i, solved in zip(indices, block.precondition([result[i] for i in indices]), strict=True):
                result[i] = solved
        return result

    def accumulate_statistics(self, x: tf.Tensor) -> None:
        """Fold one batch of Fisher statistics into the factors, without updating the weights."""
        with self.taps:
            self._stats_only(x)

    def refresh_inverses(self) -> None:
        """Eigendecompose the damped factors now (synchronously) and install them."""
        snapshot = self.factors()
        damping = self.config.damping + self.config.weight_decay
        for block in self.blocks:
            block.install_inverse(block.compute_inverse(snapshot[block.name], damping, self.config.eigh_dtype))
        self.inverse_iteration = self._host_iteration

    def train_step(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, float]:
        step = self._host_iteration
        if self.inverse_iteration < 0:
            self.accumulate_statistics(x)
            self.refresh_inverses()
        elif step % self.config.inverse_every == 0:
            self.refresh_inverses()
        with self.taps:
            metrics = as_floats(self._steps[step % self.config.stats_every == 0](x, y))
        metrics["inverse_staleness"] = float(step - self.inverse_iteration)
        self._host_iteration += 1
        return metrics

    # ---- compiled pieces --------------------------------------------------------------------------------------
    def _compiled_stats(self, x: tf.Tensor) -> None:
        """A separate forward pass for statistics only; BN moving averages are left as they were."""
        saved = [tf.identity(v.value) for v in self.model.non_trainable_variables]
        self.taps.clear()
        with tf.GradientTape(persistent=True) as tape:
            outputs = self.model(x, training=True)
        self._update_statistics(tape, outputs)
        for variable, value in zip(self.model.non_trainable_variables, saved, strict=True):
            variable.assign(value)

    def _compiled_step(self, x: tf.Tensor, y: tf.Tensor, with_stats: bool) -> dict[str, tf.Tensor]:
        separate_stats = with_stats and self.config.stats_batch_size is not None
        if separate_stats:
            self._compiled_stats(x[: self.config.stats_batch_size])
        self.taps.clear()
        with tf.GradientTape(persistent=with_stats) as tape:
            loss, outputs = self.loss_and_outputs(x, y, training=True)
        grads = self.regularised(self.gradients(tape, loss))
        if with_stats and not separate_stats:
            self._update_statistics(tape, outputs)
        del tape
        direction = self.precondition(grads)
        v_dot_g = tf.add_n([tf.reduce_sum(v * g) for v, g in zip(direction, grads, strict=True)])
        kl_clip = scheduled(self.config.kl_schedule(), self.iterations)
        max_step = scheduled(self.config.max_step_schedule(), self.iterations)
        step_size = tf.minimum(max_step, tf.sqrt(kl_clip / tf.maximum(v_dot_g, _TINY)))
        self.apply_update(direction, step_size)
        return {
            "loss": loss,
            "error": self.error_rate(outputs, y),
            "step_size": step_size,
            "learning_rate": max_step,
            "kl_clip": kl_clip,
            "v_dot_g": v_dot_g,
        }

    def _update_statistics(self, tape: tf.GradientTape, outputs: tf.Tensor) -> None:
        """Back-propagate the Fisher cotangents to every tapped point and fold the batch factors into the EMAs."""
        cotangents = likelihoods.fisher_cotangents(
            self.likelihood, outputs, self.from_logits, self.config.fisher_targets, self.generator
        )
        calls = [self.taps.calls[b.name] for b in self.blocks]
        for block, block_calls in zip(self.blocks, calls, strict=True):
            if not block_calls:
                raise RuntimeError(f"layer {block.name!r} was not called in the forward pass")
        points = [call.point for block_calls in calls for call in block_calls]
        derivatives = [tape.gradient(outputs, points, output_gradients=v) for v in cotangents]
        batch = tf.shape(outputs)[0]
        self.stats_updates.assign_add(1)
        count = tf.cast(self.stats_updates, tf.float32)
        decay = tf.minimum(1.0 - 1.0 / count, self.config.stats_decay)
        offset = 0
        for block, block_calls in zip(self.blocks, calls, strict=True):
            n = len(block_calls)
            per_cotangent = [list(derivs[offset : offset + n]) for derivs in derivatives]
            offset += n
            for name, value in block.batch_statistics(block_calls, per_cotangent, batch).items():
                factor = block.factors[name]
                factor.assign(decay * factor + (1.0 - decay) * value)
