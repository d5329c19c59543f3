"""The K-FAC optimizer of Ba, Grosse & Martens (2017) for an unmodified Keras model, on any tf.distribute strategy.

Each step, on every replica: forward once; all-reduced gradient of the mean loss; every `stats_every` steps also
the preconditioner's statistics (`kfac_repro.kfac.preconditioner`: Fisher cotangents back-propagated to the tapped
layers, all-reduced, folded into moving averages); precondition each block with its installed inverse;
η = min(η_max, √(c / vᵀg)) (Eq. 14); momentum on (1 − μ)·η·v, so that the update it sums to meets the KL bound
(`kl_bound: increment`: on η·v), the update rule of `kfac_repro.kfac.update`. Between steps the refresh engine
(`kfac_repro.kfac.inversion.refresh`, the one `keras.KFAC` runs too) installs inverses as its policy says:
synchronously every `inverse_every` steps or asynchronously from a background thread (paper §3.1), each block
inverted by one replica and shared (`kfac_repro.kfac.inversion.divided`). With `damping_adaptation_every` the
damping λ adapts (`kfac_repro.kfac.damping_adaptation`): those steps also evaluate the loss at the updated weights
and the exact Fisher's quadratic form of the update (one Jacobian-vector product) on their batch.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac import likelihoods
from kfac_repro.kfac.base import Metrics, ModelOptimizer
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.damping_adaptation import DampingAdaptation, reduction_ratio
from kfac_repro.kfac.inversion.divided import BlockInversion
from kfac_repro.kfac.inversion.policy import policy_for
from kfac_repro.kfac.inversion.refresh import InverseRefresh
from kfac_repro.kfac.preconditioner import Preconditioner, kept, tape_gradient
from kfac_repro.kfac.replicas import all_reduce_mean, every_replica
from kfac_repro.kfac.update import UpdateRule


class KFAC(ModelOptimizer):
    """Distributed-K-FAC update rule on one model; `train_step(x, y)` and `step(x, y)` as for `SGD`. Call
    `close()` when done (it stops the background inversion thread)."""

    def __init__(self, model: keras.Model, config: KFACConfig | None = None):
        self.config = config or KFACConfig()
        super().__init__(model, self.config, UpdateRule(self.config.momentum, self.config.weight_decay,
                                                        self.config.kl_bound))
        self.preconditioner = Preconditioner(model, self.config)
        self.blocks = self.preconditioner.blocks
        self.taps = self.preconditioner.taps
        self.inverse_source = tf.Variable(-1, dtype=tf.int64, trainable=False, name="inverse_source")
        self.inverse_iteration = -1
        self._host_iteration = 0
        self.inversion = BlockInversion(self.blocks, self.config, self.strategy)
        self.refresh = InverseRefresh(self.inversion, policy_for(self.config))
        adapting = self.config.damping_adaptation_every is not None
        self.adaptation = DampingAdaptation(self.config) if adapting else None
        self._steps = {(s, a): self.distributed(functools.partial(self._replica_step, with_stats=s, adapt=a))
                       for s in (True, False) for a in {False, adapting}}
        self._stats_only = tf.function(
            lambda x: self.strategy.run(self._replica_statistics, args=(x,)), reduce_retracing=True, autograph=False
        )

    # ---- public API -------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """Each layer, its block type, factor shapes, inverse path and why it got that block (or none)."""
        return self.preconditioner.summary()

    def communication_bytes(self) -> dict[str, int]:
        """Bytes each replica all-reduces: gradients every step, factors every statistics step (float32)."""
        return self.preconditioner.communication_bytes()

    def factors(self) -> dict[str, dict[str, np.ndarray]]:
        """The current (moving-average) factor matrices of every block, by layer name."""
        return self.preconditioner.factors()

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """(F̂ + damping)⁻¹ g block by block, for gradients aligned with model.trainable_variables."""
        return self.preconditioner.precondition(grads)

    def accumulate_statistics(self, x: tf.Tensor) -> None:
        """Fold one batch of Fisher statistics into the factors, without updating the weights."""
        with self.taps:
            self._stats_only(x)

    def refresh_inverses(self) -> None:
        """Invert the damped factors now (synchronously, divided among the replicas) and install them; every
        worker must call it at the same step."""
        step = self._host_iteration
        self.inversion.install(self.refresh.invert_now(step))
        self._set_source(step)

    def step(self, x: tf.Tensor, y: tf.Tensor) -> Metrics:
        self.check_trainable()
        step = self._host_iteration
        if self.inverse_iteration < 0:
            self.accumulate_statistics(x)
            self.refresh_inverses()
        installed = self.refresh.before_step(step)
        if installed is not None:
            self._set_source(installed)
        ready = tf.constant(1.0 if self.refresh.locally_ready() else 0.0)
        adapt = self.adaptation is not None and self.adaptation.due(step)
        with self.taps:
            metrics: Metrics = dict(self._steps[step % self.config.stats_every == 0, adapt](x, y, ready))
        if adapt:
            self._use_damping()
        agreed, replicas = metrics.pop("inverses_ready"), self.strategy.num_replicas_in_sync
        self.refresh.after_step(lambda: bool(every_replica(float(agreed), replicas)))  # read at the next boundary
        metrics["inverse_staleness"] = float(step - self.inverse_iteration)
        self._host_iteration += 1
        return metrics

    def close(self) -> None:
        """Stop background inversion."""
        self.refresh.close()

    def checkpoint_state(self) -> dict[str, object]:
        state = {**super().checkpoint_state(), **self.preconditioner.checkpoint_state()}
        state["inverse_source"] = self.inverse_source
        state.update(self.refresh.checkpoint_state())
        if self.adaptation is not None:
            state["damping"] = self.adaptation.damping
        return state

    def restored(self) -> None:
        """A resumed run continues at the checkpointed step with the checkpointed inverses; an asynchronous
        inversion that was in flight is restarted on its checkpointed snapshot."""
        self._host_iteration = int(self.iterations.numpy())
        self.inverse_iteration = int(self.inverse_source.numpy())
        if self.adaptation is not None:
            self._use_damping()
        self.refresh.restored()

    def _use_damping(self) -> None:
        """Inversions started from now on use the adapted λ (plus the weight decay, as a fixed λ)."""
        assert self.adaptation is not None
        self.inversion.damping = float(self.adaptation.damping.numpy()) + self.config.weight_decay

    def _set_source(self, snapshot_step: int) -> None:
        self.inverse_iteration = snapshot_step
        self.inverse_source.assign(snapshot_step)

    # ---- per-replica computation ------------------------------------------------------------------------------
    def _replica_statistics(self, x: tf.Tensor) -> None:
        self.commit(self.preconditioner.factor_assignments(self.preconditioner.statistics_pass(x)))

    def _replica_step(self, x: tf.Tensor, y: tf.Tensor, ready: tf.Tensor, with_stats: bool,
                      adapt: bool) -> dict[str, tf.Tensor]:
        preconditioner = self.preconditioner
        separate = with_stats and self.config.stats_batch_size is not None
        batch_factors = preconditioner.statistics_pass(x[: self.config.stats_batch_size]) if separate else []
        self.taps.clear()
        with tf.GradientTape(persistent=with_stats and not separate) as tape:
            loss, outputs = self.loss_and_outputs(x, y, training=True)
        grads = self.global_gradients(tape, loss)
        if with_stats and not separate:
            batch_factors = preconditioner.batch_factors(outputs, tape_gradient(tape))
        del tape
        if with_stats:  # before preconditioning, as in fit: EKFAC's scaling includes this batch
            self.commit(preconditioner.factor_assignments(batch_factors))
        direction = preconditioner.precondition(grads)
        scale = preconditioner.step_size(direction, grads, self.iterations, tf.shape(tf.nest.flatten(x)[0])[0])
        updates = self.update_assignments(direction, scale["step_size"])
        extra: dict[str, tf.Tensor] = {}
        if adapt:
            old = [tf.convert_to_tensor(p) for p in self.params]
            new = {id(variable): value for variable, value in updates}
            update = [new[id(variable)] - p for variable, p in zip(self.params, old, strict=True)]
            with kept(self.model.non_trainable_variables):  # the extra passes leave BN's moving averages be
                curvature = self._fisher_quadratic(x, update)
                self.commit(updates)
                extra = self._adapt(x, y, loss, grads, old, update, curvature)
        else:
            self.commit(updates)
        ready = tf.identity(ready)  # a copy on this replica's device, for the all-reduce (inversion.refresh)
        loss, error, ready = all_reduce_mean([loss, self.error_rate(outputs, y), ready])
        if self.adaptation is not None:
            extra["damping"] = tf.convert_to_tensor(self.adaptation.damping)
        return {"loss": loss, "error": error, **scale, "inverses_ready": ready, **extra}

    def _fisher_quadratic(self, x: tf.Tensor, update: list[tf.Tensor]) -> tf.Tensor:
        """δᵀFδ on this replica's batch: F the exact Fisher of the predictive distribution (one Jacobian-vector
        product through the model at θ)."""
        with tf.autodiff.ForwardAccumulator([p.value for p in self.params], update) as accumulator:
            outputs = tf.cast(self.model(x, training=True), tf.float32)
        tangent = accumulator.jvp(outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        per_example = likelihoods.fisher_quadratic(self.likelihood, outputs, self.from_logits, tangent)
        return tf.reduce_mean(per_example)

    def _adapt(self, x: tf.Tensor, y: tf.Tensor, loss: tf.Tensor, grads: list[tf.Tensor], old: list[tf.Tensor],
               update: list[tf.Tensor], curvature: tf.Tensor) -> dict[str, tf.Tensor]:
        """ρ of the update just committed and the adapted λ (`kfac.damping_adaptation`), assigned on every
        replica; the weight decay wd counts as ½ wd‖θ‖² in h and wd·I in the curvature."""
        assert self.adaptation is not None
        moved, _ = self.loss_and_outputs(x, y, training=True)
        difference, curvature = all_reduce_mean([moved - loss, tf.identity(curvature)])
        wd = self.config.weight_decay
        length = tf.add_n([tf.reduce_sum(tf.square(d)) for d in update])
        cross = tf.add_n([tf.reduce_sum(p * d) for p, d in zip(old, update, strict=True)])
        change = difference + wd * (cross + 0.5 * length)  # ½wd(‖θ+δ‖² − ‖θ‖²)
        predicted = 0.5 * (curvature + wd * length) + tf.add_n(
            [tf.reduce_sum(g * d) for g, d in zip(grads, update, strict=True)])
        rho = reduction_ratio(change, predicted)
        self.commit([(self.adaptation.damping, self.adaptation.new_damping(rho))])
        return {"reduction_ratio": rho}
