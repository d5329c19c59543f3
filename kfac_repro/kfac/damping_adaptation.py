"""Levenberg–Marquardt adaptation of the damping λ (Martens & Grosse 2015, §6.5), for the host loop (`kfac.KFAC`).

Every `damping_adaptation_every` = T steps, on the step's own batch, with δ the update the step applied:
ρ = (h(θ+δ) − h(θ)) / M(δ), M(δ) = ½ δᵀ(F + wd·I)δ + ∇hᵀδ, where h is the training loss plus ½ wd‖θ‖² (the
objective whose gradient K-FAC follows) and F the exact Fisher of the model's predictive distribution on the batch
(the Gauss–Newton matrix: δᵀFδ = mean over examples of (Jδ)ᵀ F_z (Jδ), one Jacobian-vector product), as in the
paper: the exact curvature makes ρ measure how far the loss departs from its local quadratic model, the trust-region
question λ answers, rather than how far K-FAC's approximation departs from it. Then λ ← ω·λ if ρ > 3/4, λ ← λ/ω if
ρ < 1/4, with ω = (19/20)^T, and λ is clipped to [damping_min, damping_max]. Inverses computed after the change
use the new λ (the inversion's damping is λ + wd, as for a fixed λ).
"""

from __future__ import annotations

import tensorflow as tf

from kfac_repro.kfac.config import KFACConfig

HIGH, LOW = 0.75, 0.25  # ρ above HIGH: the quadratic model is trusted, λ shrinks; below LOW: λ grows
BASE = 19.0 / 20.0  # ω = BASE^T for adaptation every T steps (the paper's ω₁ = (19/20)^T₁)


def omega(every: int) -> float:
    """ω = (19/20)^every: λ's factor per adaptation."""
    return BASE**every


def reduction_ratio(change: tf.Tensor, predicted: tf.Tensor) -> tf.Tensor:
    """ρ = change / predicted where the model predicts a decrease (predicted < 0). −∞ (λ grows) where it predicts
    an increase, the step having gone past the model's minimum along δ (the KL bound, not the model, sets the step
    length here, so this happens: change/predicted would then be positive, even large, for a loss that rose), or
    where the loss at θ+δ is not finite; NaN (λ kept) where it predicts no change (δ = 0)."""
    ratio = tf.math.divide_no_nan(change, predicted)
    ratio = tf.where(predicted > 0.0, tf.constant(float("-inf")), ratio)
    ratio = tf.where(tf.equal(predicted, 0.0), tf.constant(float("nan")), ratio)
    return tf.where(tf.math.is_finite(change), ratio, tf.constant(float("-inf")))


def adapted(damping: tf.Tensor, rho: tf.Tensor, factor: float, minimum: float, maximum: float) -> tf.Tensor:
    """λ·factor if ρ > 3/4, λ/factor if ρ < 1/4, else λ (a NaN ρ keeps it), clipped to [minimum, maximum]."""
    new = tf.where(rho > HIGH, damping * factor, tf.where(rho < LOW, damping / factor, damping))
    return tf.clip_by_value(new, minimum, maximum)


class DampingAdaptation:
    """λ as a variable (checkpointed) and the rule that moves it; `due(step)` says which steps adapt it."""

    def __init__(self, config: KFACConfig):
        assert config.damping_adaptation_every is not None
        self.every = config.damping_adaptation_every
        self.factor = omega(self.every)
        self.minimum, self.maximum = config.damping_min, config.damping_max
        self.damping = tf.Variable(config.damping, dtype=tf.float32, trainable=False, name="damping")

    def due(self, step: int) -> bool:
        """Step `step` (counted from 0) adapts λ: every `every` steps, after the `every`-th."""
        return (step + 1) % self.every == 0

    def new_damping(self, rho: tf.Tensor) -> tf.Tensor:
        return adapted(self.damping, rho, self.factor, self.minimum, self.maximum)
