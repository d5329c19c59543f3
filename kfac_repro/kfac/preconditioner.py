"""The K-FAC preconditioner of Ba, Grosse & Martens (2017), apart from any update rule.

It owns the Fisher blocks of an unmodified Keras model and their life cycle: capture layer inputs and
pre-activations (`taps`), back-propagate Fisher cotangents (targets sampled from the model, Eq. 1) to get each
block's batch factors, fold them into moving averages with decay min(1 − 1/k, stats_decay), precondition
v = (F̂ + λ)⁻¹ g block by block, and the KL-based step size η = min(η_max, √(c / vᵀg)) (Eq. 14; in `fit`, times
Keras's learning rate). The inverses are computed and installed by the refresh engine (`kfac_repro.kfac.inversion`).
The front ends (`kfac_repro.kfac.optimizer.KFAC`, `kfac_repro.keras.KFAC`) call these from their traced steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac import likelihoods
from kfac_repro.kfac.base import scheduled
from kfac_repro.kfac.blocks.base import FisherBlock
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.layer_capture import LayerCall, LayerTaps, in_float32
from kfac_repro.kfac.registration import build_blocks, skipped_layers, summary
from kfac_repro.kfac.replicas import all_reduce_mean

_TINY = 1e-12

# gradient(target, sources, cotangent) -> d target / d sources, with `cotangent` as the target's output gradient
Gradient = Callable[[tf.Tensor, list[tf.Tensor], tf.Tensor], Sequence[tf.Tensor]]


class Preconditioner:
    """Fisher blocks of `model`'s trainable layers; `params` lists the variables `precondition` aligns with.
    `owned`: only these variables (another optimizer trains the rest); a layer gets its block only if it owns all of
    the layer's variables, the others pass through unpreconditioned."""

    def __init__(self, model: keras.Model, config: KFACConfig, likelihood: likelihoods.Likelihood | None = None,
                 from_logits: bool | None = None, owned: Sequence[tf.Variable] | None = None):
        self.model = model
        self.config = config
        self.likelihood = config.likelihood if likelihood is None else likelihood
        self.from_logits = config.from_logits if from_logits is None else from_logits
        mine = {id(v) for v in (model.trainable_variables if owned is None else owned)}
        self.params = [v for v in model.trainable_variables if id(v) in mine]
        self.blocks: list[FisherBlock] = [b for b in build_blocks(model, config)
                                          if all(id(v) in mine for v in b.variables)]
        self.skipped = skipped_layers(model, config)
        self.taps = LayerTaps([b.layer for b in self.blocks if b.taps_preactivation],
                              [b.layer for b in self.blocks if not b.taps_preactivation])
        index = {id(p): i for i, p in enumerate(self.params)}
        self._block_params = [[index[id(v)] for v in block.variables] for block in self.blocks]
        self.stats_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="stats_updates")
        self.cotangent_scale = 1.0  # Fisher cotangents are multiplied by this (a loss at another scale than −log p)

    def summary(self) -> str:
        """Each layer, its block type, factor shapes, inverse path and why it got that block (or none)."""
        return summary(self.model, self.blocks, self.skipped)

    def communication_bytes(self) -> dict[str, int]:
        """Bytes each replica all-reduces: gradients every step, statistics (factors, EKFAC's scaling) every
        statistics step (float32)."""
        gradients = sum(int(np.prod(p.shape)) for p in self.params)
        factors = sum(int(np.prod(var.shape)) for block in self.blocks for var in block.statistics.values())
        return {"gradients_per_step": 4 * gradients, "factors_per_refresh": 4 * factors}

    def factors(self) -> dict[str, dict[str, np.ndarray]]:
        """The current (moving-average) factor matrices of every block, by layer name."""
        return {b.name: {name: var.numpy() for name, var in b.factors.items()} for b in self.blocks}

    def variables(self) -> list[tf.Variable]:
        """Its state: the statistics count, then every block's factors, installed inverse and scaling."""
        return [self.stats_updates, *(v for b in self.blocks
                                      for v in (*b.factors.values(), *b.inverse.values(), *b.scaling.values()))]

    def checkpoint_state(self) -> dict[str, object]:
        """The statistics count, every factor, installed inverse and scaling, as tf.train.Checkpoint children."""
        state: dict[str, object] = {"stats_updates": self.stats_updates}
        for i, block in enumerate(self.blocks):  # by position: auto-generated layer names differ between models
            state[f"block_{i}"] = {**block.factors, **block.inverse, **block.scaling}
        return state

    # ---- preconditioning and step size (traced) ---------------------------------------------------------------
    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """(F̂ + damping)⁻¹ g block by block, for gradients aligned with `params`."""
        result = [tf.convert_to_tensor(g) for g in grads]
        for block, indices in zip(self.blocks, self._block_params, strict=True):
            for i, solved in zip(indices, block.precondition([result[i] for i in indices]), strict=True):
                result[i] = solved
        return result

    def step_size(self, direction: list[tf.Tensor], grads: list[tf.Tensor], iterations: tf.Tensor,
                  examples: tf.Tensor, learning_rate: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """η = s · min(η_max, √(c / vᵀg)) (Eq. 14 scaled by s), c and η_max at step `iterations` (c times B/B₀ when
        `kl_clip_batch` B₀ is set, B the update's global batch: this replica's `examples` times the replicas in
        sync); s is Keras's `learning_rate` in fit (where η_max is 1), 1 in the host loop (where η_max carries the
        schedule). Called in a replica context. Also returns its parts, and whether the KL bound set η (1.0) or
        η_max did (0.0)."""
        v_dot_g = tf.add_n([tf.reduce_sum(v * g) for v, g in zip(direction, grads, strict=True)])
        kl_clip = scheduled(self.config.kl_schedule(), iterations)
        if self.config.kl_clip_batch is not None:
            batch = examples * tf.distribute.get_replica_context().num_replicas_in_sync
            kl_clip = kl_clip * tf.cast(batch, tf.float32) / float(self.config.kl_clip_batch)
        max_step = scheduled(self.config.max_step_schedule(), iterations)
        bound = tf.sqrt(kl_clip / tf.maximum(v_dot_g, _TINY))
        step_size = tf.minimum(max_step, bound)
        if learning_rate is not None:
            step_size = learning_rate * step_size
        return {"step_size": step_size, "learning_rate": max_step, "kl_clip": kl_clip, "v_dot_g": v_dot_g,
                "kl_bound_set": tf.cast(bound < max_step, tf.float32)}

    # ---- statistics (traced, per replica) ---------------------------------------------------------------------
    def statistics_pass(self, x: tf.Tensor) -> list[tf.Tensor]:
        """A separate forward pass for statistics only; BN moving averages are left as they were."""
        return all_reduce_mean(self.local_statistics_pass(x))

    def local_statistics_pass(self, x: tf.Tensor, sample_weight: tf.Tensor | None = None) -> list[tf.Tensor]:
        """`statistics_pass` on this replica's `x` alone (`local_batch_factors`' `sample_weight`)."""
        self.taps.clear()
        with kept(self.model.non_trainable_variables):
            with tf.GradientTape(persistent=True) as tape:
                outputs = tf.cast(self.model(x, training=True), tf.float32)
            return self.local_batch_factors(outputs, tape_gradient(tape), self.recorded_calls(), sample_weight)

    def batch_factors(self, outputs: tf.Tensor, gradient: Gradient) -> list[tf.Tensor]:
        """This step's statistics of every block (in `statistics` order), averaged over replicas, from the calls the
        taps recorded while computing `outputs`; `gradient` back-propagates a Fisher cotangent to the tapped points."""
        return all_reduce_mean(self.local_batch_factors(outputs, gradient, self.recorded_calls()))

    def recorded_calls(self) -> list[list[LayerCall]]:
        """Every block's calls the taps recorded (in the graph being traced, for `keras.KFAC`)."""
        calls = [self.taps.calls[b.name] for b in self.blocks]
        for block, block_calls in zip(self.blocks, calls, strict=True):
            if not block_calls:
                raise RuntimeError(f"layer {block.name!r} was not called in the forward pass")
        return calls

    def local_batch_factors(self, outputs: tf.Tensor, gradient: Gradient, calls: list[list[LayerCall]],
                            sample_weight: tf.Tensor | None = None) -> list[tf.Tensor]:
        """`batch_factors` of this replica's batch alone, from `calls` (`recorded_calls`). `sample_weight` w (per
        example, or per output position): the loss is Σ w ℓ / N, so each example's Fisher is weighted by w, its
        cotangents by √w (negative weights count as 0)."""
        seed = tf.stack([tf.constant(self.config.seed, tf.int64), self.stats_updates])
        cotangents = likelihoods.fisher_cotangents(
            self.likelihood, outputs, self.from_logits, self.config.fisher_targets, seed
        )
        if self.cotangent_scale != 1.0:
            cotangents = [self.cotangent_scale * v for v in cotangents]
        if sample_weight is not None:
            root = _broadcastable(tf.sqrt(tf.maximum(tf.cast(sample_weight, tf.float32), 0.0)), outputs)
            cotangents = [v * tf.cast(root, v.dtype) for v in cotangents]
        points = [call.point for block_calls in calls for call in block_calls]
        derivatives = [_float32_derivatives(gradient(outputs, points, v), calls, self.blocks) for v in cotangents]
        calls = [[in_float32(call) for call in block_calls] for block_calls in calls]
        batch = tf.shape(outputs)[0]
        values, offset = [], 0
        for block, block_calls in zip(self.blocks, calls, strict=True):
            n = len(block_calls)
            per_cotangent = [list(derivs[offset : offset + n]) for derivs in derivatives]
            offset += n
            statistics = block.batch_statistics(block_calls, per_cotangent, batch)
            values += [statistics[name] for name in block.statistics]
        return values

    def factor_assignments(self, batch_factors: list[tf.Tensor]) -> list[tuple]:
        """(factor, EMA) pairs with decay min(1 − 1/k, stats_decay), k counting statistics updates, and each block's
        `scaling_assignments`, for `batch_factors` as `batch_factors` returns them (every block's `statistics`)."""
        expected = sum(len(block.statistics) for block in self.blocks)
        if len(batch_factors) != expected:
            raise ValueError(f"factor_assignments: {len(batch_factors)} statistics for blocks holding {expected}")
        count = tf.cast(self.stats_updates + 1, tf.float32)
        decay = tf.minimum(1.0 - 1.0 / count, self.config.stats_decay)
        values = iter(batch_factors)
        pairs: list[tuple] = []
        for block in self.blocks:
            pairs += [(f, decay * f + (1.0 - decay) * next(values)) for f in block.factors.values()]
            pairs += block.scaling_assignments([next(values) for _ in block.scaling], self.config.stats_decay)
        return [*pairs, (self.stats_updates, self.stats_updates + 1)]


@contextlib.contextmanager
def kept(variables: Sequence) -> Iterator[None]:
    """Restore `variables` (e.g. a model's BN moving averages) to their values on entry when the block ends."""
    saved = [tf.identity(v.value) for v in variables]
    yield
    for variable, value in zip(variables, saved, strict=True):
        variable.assign(value)


def _broadcastable(weights: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """`weights` ([batch] or [batch, positions…]) with trailing axes of size 1 up to the outputs' rank."""
    while weights.shape.rank < outputs.shape.rank:
        weights = weights[..., None]
    return weights


def _float32_derivatives(derivatives: Sequence, calls: list[list[LayerCall]],
                         blocks: list[FisherBlock]) -> list[tf.Tensor]:
    """The derivatives as float32 (statistics stay float32 under mixed precision); a clear error where a layer's
    point has none (a layer called inside a loop: its per-call tensors cannot be differentiated from outside)."""
    owners = [block.name for block, block_calls in zip(blocks, calls, strict=True) for _ in block_calls]
    for derivative, owner in zip(derivatives, owners, strict=True):
        if derivative is None:
            raise RuntimeError(f"layer {owner!r}: the loss has no derivative with respect to its captured output "
                               "(is it called inside a loop?); leave it out with skip_layers")
    return [tf.cast(d, tf.float32) for d in derivatives]


def tape_gradient(tape: tf.GradientTape) -> Gradient:
    """`Preconditioner.batch_factors`'s `gradient` from a persistent tape that recorded the forward pass."""

    def gradient(target: tf.Tensor, sources: list[tf.Tensor], cotangent: tf.Tensor) -> Sequence[tf.Tensor]:
        return tape.gradient(target, sources, output_gradients=cotangent)

    return gradient

