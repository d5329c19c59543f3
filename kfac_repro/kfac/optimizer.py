"""The K-FAC optimizer of Ba, Grosse & Martens (2017) for an unmodified Keras model, on any tf.distribute strategy.

Each step, on every replica: forward once; all-reduced gradient of the mean loss; every `stats_every` steps also
back-propagate Fisher cotangents (targets sampled from the model) to the tapped layers, all-reduce the batch
factors and fold them into exponential moving averages (decay min(1 − 1/k, stats_decay)); precondition each block
with its installed inverse; η = min(η_max, √(c / vᵀg)) (Eq. 14); momentum on η·v. Between steps the inverses are
refreshed synchronously every `inverse_every` steps or asynchronously in a background thread (paper §3.1).
"""

from __future__ import annotations

import functools
import time

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac import likelihoods
from kfac_repro.kfac.base import ModelOptimizer, as_floats, scheduled
from kfac_repro.kfac.blocks import FisherBlock
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.inverse_refresh import AsyncRefresh, Inverses, Snapshot, SyncRefresh
from kfac_repro.kfac.layer_capture import LayerTaps
from kfac_repro.kfac.registration import build_blocks, summary
from kfac_repro.kfac.replicas import all_reduce_mean

_TINY = 1e-12


class KFAC(ModelOptimizer):
    """Distributed-K-FAC update rule on one model; `train_step(x, y)` as for `SGD`. Call `close()` when done
    (it stops the background inversion thread)."""

    def __init__(self, model: keras.Model, config: KFACConfig | None = None):
        self.config = config or KFACConfig()
        super().__init__(model, self.config)
        self.blocks: list[FisherBlock] = build_blocks(model, self.config)
        self.taps = LayerTaps([b.layer for b in self.blocks if b.taps_preactivation],
                              [b.layer for b in self.blocks if not b.taps_preactivation])
        index = {id(p): i for i, p in enumerate(self.params)}
        self._block_params = [[index[id(v)] for v in block.variables] for block in self.blocks]
        self.stats_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="stats_updates")
        self.inverse_source = tf.Variable(-1, dtype=tf.int64, trainable=False, name="inverse_source")
        self.inverse_iteration = -1
        self._host_iteration = 0
        self.refresh: SyncRefresh | AsyncRefresh = (
            AsyncRefresh(self.config.async_lag, self._agree_on_lag) if self.config.inversion == "async"
            else SyncRefresh(self.config.inverse_every)
        )
        self._steps = {s: self.distributed(functools.partial(self._replica_step, with_stats=s)) for s in (True, False)}
        self._stats_only = tf.function(
            lambda x: self.strategy.run(self._replica_statistics, args=(x,)), reduce_retracing=True, autograph=False
        )

    # ---- public API -------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """Each layer, its block type and factor shapes."""
        return summary(self.model, self.blocks)

    def communication_bytes(self) -> dict[str, int]:
        """Bytes each replica all-reduces: gradients every step, factors every statistics step (float32)."""
        gradients = sum(int(np.prod(p.shape)) for p in self.params)
        factors = sum(int(np.prod(var.shape)) for block in self.blocks for var in block.factors.values())
        return {"gradients_per_step": 4 * gradients, "factors_per_refresh": 4 * factors}

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
        self._install(self._invert(self._snapshot()), self._host_iteration)

    def train_step(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, float]:
        step = self._host_iteration
        if self.inverse_iteration < 0:
            self.accumulate_statistics(x)
            start = time.perf_counter()
            self.refresh_inverses()
            if isinstance(self.refresh, AsyncRefresh):
                self.refresh.inversion_seconds = time.perf_counter() - start
        self.refresh.before_step(step, self._snapshot, self._invert, self._install)
        with self.taps:
            metrics = as_floats(self._steps[step % self.config.stats_every == 0](x, y))
        metrics["inverse_staleness"] = float(step - self.inverse_iteration)
        self._host_iteration += 1
        return metrics

    def close(self) -> None:
        """Stop background inversion."""
        self.refresh.close()

    def checkpoint_state(self) -> dict[str, object]:
        state = super().checkpoint_state()
        state["stats_updates"] = self.stats_updates
        state["inverse_source"] = self.inverse_source
        for i, block in enumerate(self.blocks):  # by position: auto-generated layer names differ between models
            state[f"block_{i}"] = {**block.factors, **block.inverse}
        return state

    def restored(self) -> None:
        """A resumed run continues at the checkpointed step with the checkpointed inverses (an asynchronous
        inversion that was in flight is started afresh from the restored factors)."""
        self._host_iteration = int(self.iterations.numpy())
        self.inverse_iteration = int(self.inverse_source.numpy())

    # ---- inverses (host side) ---------------------------------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        return self.factors()

    def _invert(self, snapshot: Snapshot) -> Inverses:
        damping = self.config.damping + self.config.weight_decay
        return {b.name: b.compute_inverse(snapshot[b.name], damping, self.config.eigh_dtype) for b in self.blocks}

    def _install(self, inverses: Inverses, snapshot_iteration: int) -> None:
        for block in self.blocks:
            block.install_inverse(inverses[block.name])
        self.inverse_iteration = snapshot_iteration
        self.inverse_source.assign(snapshot_iteration)

    def _agree_on_lag(self, lag: int) -> int:
        """Every replica takes replica 0's lag (an all-reduced sum with zeros elsewhere)."""
        strategy = self.strategy
        if strategy.num_replicas_in_sync == 1:
            return lag

        def replica() -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            mine = tf.where(tf.equal(context.replica_id_in_sync_group, 0), lag, 0)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        agreed = strategy.run(tf.function(replica))
        return int(strategy.experimental_local_results(agreed)[0])

    # ---- per-replica computation ------------------------------------------------------------------------------
    def _replica_statistics(self, x: tf.Tensor) -> None:
        self.commit(self._factor_assignments(self._statistics_pass(x)))

    def _replica_step(self, x: tf.Tensor, y: tf.Tensor, with_stats: bool) -> dict[str, tf.Tensor]:
        separate = with_stats and self.config.stats_batch_size is not None
        batch_factors = self._statistics_pass(x[: self.config.stats_batch_size]) if separate else []
        self.taps.clear()
        with tf.GradientTape(persistent=with_stats and not separate) as tape:
            loss, outputs = self.loss_and_outputs(x, y, training=True)
        grads = self.global_gradients(tape, loss)
        if with_stats and not separate:
            batch_factors = self._batch_factors(tape, outputs)
        del tape
        direction = self.precondition(grads)
        v_dot_g = tf.add_n([tf.reduce_sum(v * g) for v, g in zip(direction, grads, strict=True)])
        kl_clip = scheduled(self.config.kl_schedule(), self.iterations)
        max_step = scheduled(self.config.max_step_schedule(), self.iterations)
        step_size = tf.minimum(max_step, tf.sqrt(kl_clip / tf.maximum(v_dot_g, _TINY)))
        pairs = self._factor_assignments(batch_factors) if with_stats else []
        self.commit(pairs + self.update_assignments(direction, step_size))
        loss, error = all_reduce_mean([loss, self.error_rate(outputs, y)])
        return {"loss": loss, "error": error, "step_size": step_size, "learning_rate": max_step,
                "kl_clip": kl_clip, "v_dot_g": v_dot_g}

    def _statistics_pass(self, x: tf.Tensor) -> list[tf.Tensor]:
        """A separate forward pass for statistics only; BN moving averages are left as they were."""
        saved = [tf.identity(v.value) for v in self.model.non_trainable_variables]
        self.taps.clear()
        with tf.GradientTape(persistent=True) as tape:
            outputs = self.model(x, training=True)
        batch_factors = self._batch_factors(tape, outputs)
        for variable, value in zip(self.model.non_trainable_variables, saved, strict=True):
            variable.assign(value)
        return batch_factors

    def _batch_factors(self, tape: tf.GradientTape, outputs: tf.Tensor) -> list[tf.Tensor]:
        """This step's factors of every block (in `_factor_order`), averaged over replicas."""
        seed = tf.stack([tf.constant(self.config.seed, tf.int64), self.stats_updates])
        cotangents = likelihoods.fisher_cotangents(
            self.likelihood, outputs, self.from_logits, self.config.fisher_targets, seed
        )
        calls = [self.taps.calls[b.name] for b in self.blocks]
        for block, block_calls in zip(self.blocks, calls, strict=True):
            if not block_calls:
                raise RuntimeError(f"layer {block.name!r} was not called in the forward pass")
        points = [call.point for block_calls in calls for call in block_calls]
        derivatives = [tape.gradient(outputs, points, output_gradients=v) for v in cotangents]
        batch = tf.shape(outputs)[0]
        values, offset = [], 0
        for block, block_calls in zip(self.blocks, calls, strict=True):
            n = len(block_calls)
            per_cotangent = [list(derivs[offset : offset + n]) for derivs in derivatives]
            offset += n
            statistics = block.batch_statistics(block_calls, per_cotangent, batch)
            values += [statistics[name] for name in block.factors]
        return all_reduce_mean(values)

    def _factor_assignments(self, batch_factors: list[tf.Tensor]) -> list[tuple]:
        """(factor, EMA) pairs with decay min(1 − 1/k, stats_decay), k counting statistics updates."""
        count = tf.cast(self.stats_updates + 1, tf.float32)
        decay = tf.minimum(1.0 - 1.0 / count, self.config.stats_decay)
        factors = [var for block in self.blocks for var in block.factors.values()]
        pairs: list[tuple] = [(f, decay * f + (1.0 - decay) * v) for f, v in zip(factors, batch_factors, strict=True)]
        return [*pairs, (self.stats_updates, self.stats_updates + 1)]
