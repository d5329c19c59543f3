"""The model's predictive distribution: the training loss, and the output cotangents whose back-propagation gives
the pre-activation derivatives for the Fisher statistics (targets from the model, never the labels; paper Eq. 1).

For an output z and a cotangent v, back-propagating v gives ds = J_sᵀ v. A list of cotangents v_k with weights
folded in must satisfy Σ_k E[v_k v_kᵀ] = E_{y~model}[∇_z log p(y|z) ∇_z log p(y|z)ᵀ] (exactly, or by sampling).
"""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

from kfac_repro.kfac.replicas import global_example_offset

Likelihood = Literal["categorical", "gaussian", "bernoulli"]
FisherTargets = Literal["sample", "exact"]
_EPSILON = 1e-7


def negative_log_likelihood(
    likelihood: Likelihood, outputs: tf.Tensor, targets: tf.Tensor, from_logits: bool
) -> tf.Tensor:
    """Per-example loss [B]: cross-entropy with integer labels, ½‖z − y‖² for a unit Gaussian, or the summed
    binary cross-entropy of independent Bernoulli outputs."""
    if likelihood == "bernoulli":
        targets = tf.cast(targets, outputs.dtype)
        if from_logits:
            per_element = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=outputs)
        else:
            clipped = tf.clip_by_value(outputs, _EPSILON, 1.0 - _EPSILON)
            per_element = -(targets * tf.math.log(clipped) + (1.0 - targets) * tf.math.log(1.0 - clipped))
        return tf.reduce_sum(tf.reshape(per_element, [tf.shape(outputs)[0], -1]), axis=1)
    if likelihood == "categorical":
        labels = tf.cast(tf.reshape(targets, [-1]), tf.int32)
        if from_logits:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=outputs)
        probabilities = tf.gather(outputs, labels, axis=1, batch_dims=1)
        return -tf.math.log(tf.maximum(probabilities, _EPSILON))
    residual = tf.reshape(outputs - tf.cast(targets, outputs.dtype), [tf.shape(outputs)[0], -1])
    return 0.5 * tf.reduce_sum(tf.square(residual), axis=1)


def error_rate(likelihood: Likelihood, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Top-1 classification error of the batch (NaN for a Gaussian or Bernoulli likelihood)."""
    if likelihood != "categorical":
        return tf.constant(float("nan"))
    labels = tf.cast(tf.reshape(targets, [-1]), tf.int64)
    wrong = tf.not_equal(tf.argmax(outputs, axis=1), labels)
    return tf.reduce_mean(tf.cast(wrong, tf.float32))


def fisher_cotangents(
    likelihood: Likelihood,
    outputs: tf.Tensor,
    from_logits: bool,
    mode: FisherTargets,
    seed: tf.Tensor,
) -> list[tf.Tensor]:
    """Cotangents w.r.t. the model output, each [B, ...], for the Fisher statistics.

    sample: one target y_b ~ p(·|x_b) per example; v = −∇_z log p(y|z) (for logits: softmax(z) − onehot(y)).
    The randomness is stateless, keyed by `seed` and the example's index in the global batch, so it does not
    depend on how the batch is split across replicas.
    exact: one cotangent per class k, v_k = √p_k (p − e_k) for logits (Σ_k v_k v_kᵀ = diag p − p pᵀ), or
    −e_k/√p_k for probabilities; for a Gaussian, v_k = e_k (Σ v_k v_kᵀ = I).
    bernoulli (independent elements, p = σ(z) or the output itself): sample: y ~ Bernoulli(p) per element,
    v = p − y for logits, (p − y)/(p(1 − p)) for probabilities; exact: v_k = √(p_k(1 − p_k)) e_k, or
    e_k/√(p_k(1 − p_k)).
    Computed in float32 and returned in the outputs' dtype (a float16 or bfloat16 output layer under mixed
    precision), as a cotangent of them must be.
    """
    dtype = outputs.dtype
    cotangents = _float32_cotangents(likelihood, tf.cast(tf.stop_gradient(outputs), tf.float32), from_logits, mode,
                                     seed)
    return [tf.cast(v, dtype) for v in cotangents]


def fisher_quadratic(likelihood: Likelihood, outputs: tf.Tensor, from_logits: bool, u: tf.Tensor) -> tf.Tensor:
    """uᵀ F_z u per example [B], F_z the exact Fisher of the predictive distribution in output space (= Σ_k (v_k·u)²
    for `fisher_cotangents`' exact v_k): Σ p u² − (p·u)² for a softmax of logits, Σ u²/p for probabilities, ‖u‖²
    for a unit Gaussian, Σ p(1 − p) u² for Bernoulli logits, Σ u²/(p(1 − p)) for Bernoulli probabilities."""
    batch = tf.shape(outputs)[0]
    z = tf.reshape(tf.cast(tf.stop_gradient(outputs), tf.float32), [batch, -1])
    u = tf.reshape(tf.cast(u, tf.float32), [batch, -1])
    if likelihood == "gaussian":
        return tf.reduce_sum(tf.square(u), axis=1)
    if likelihood == "bernoulli":
        p = tf.sigmoid(z) if from_logits else tf.clip_by_value(z, _EPSILON, 1.0 - _EPSILON)
        variance = p * (1.0 - p)
        return tf.reduce_sum(tf.square(u) * (variance if from_logits else 1.0 / variance), axis=1)
    if from_logits:
        p = tf.nn.softmax(z)
        return tf.reduce_sum(p * tf.square(u), axis=1) - tf.square(tf.reduce_sum(p * u, axis=1))
    return tf.reduce_sum(tf.square(u) / tf.square(tf.maximum(tf.sqrt(z), _EPSILON)), axis=1)


def _float32_cotangents(likelihood: Likelihood, outputs: tf.Tensor, from_logits: bool, mode: FisherTargets,
                        seed: tf.Tensor) -> list[tf.Tensor]:
    batch = tf.shape(outputs)[0]
    if likelihood == "bernoulli":
        return _bernoulli_cotangents(outputs, from_logits, mode, seed)
    if likelihood == "gaussian":
        flat = tf.reshape(outputs, [batch, -1])
        dims = flat.shape[1]
        if mode == "sample":
            return [tf.reshape(_global_noise(seed, batch, dims, normal=True), tf.shape(outputs))]
        return [tf.reshape(tf.one_hot(tf.fill([batch], k), dims, dtype=outputs.dtype), tf.shape(outputs))
                for k in range(dims)]
    probabilities = tf.nn.softmax(outputs) if from_logits else outputs
    classes = outputs.shape[-1]
    if mode == "sample":
        uniform = _global_noise(seed, batch, 1, normal=False)
        cumulative = tf.cumsum(probabilities, axis=1)
        sampled = tf.minimum(tf.reduce_sum(tf.cast(cumulative < uniform, tf.int32), axis=1), classes - 1)
        onehot = tf.one_hot(sampled, classes, dtype=outputs.dtype)
        if from_logits:
            return [probabilities - onehot]
        return [-onehot / tf.maximum(probabilities, _EPSILON)]
    cotangents = []
    for k in range(classes):
        onehot = tf.one_hot(tf.fill([batch], k), classes, dtype=outputs.dtype)
        weight = tf.sqrt(probabilities[:, k : k + 1])
        if from_logits:
            cotangents.append(weight * (probabilities - onehot))
        else:
            cotangents.append(-onehot / tf.maximum(weight, _EPSILON))
    return cotangents


def _bernoulli_cotangents(outputs: tf.Tensor, from_logits: bool, mode: FisherTargets, seed: tf.Tensor
                          ) -> list[tf.Tensor]:
    batch = tf.shape(outputs)[0]
    flat = tf.reshape(outputs, [batch, -1])
    p = tf.sigmoid(flat) if from_logits else tf.clip_by_value(flat, _EPSILON, 1.0 - _EPSILON)
    variance = p * (1.0 - p)
    if mode == "sample":
        sampled = tf.cast(_global_noise(seed, batch, flat.shape[1], normal=False) < p, p.dtype)
        flat_v = (p - sampled) if from_logits else (p - sampled) / variance
        return [tf.reshape(flat_v, tf.shape(outputs))]
    weight = tf.sqrt(variance) if from_logits else 1.0 / tf.sqrt(variance)
    return [tf.reshape(weight * tf.one_hot(tf.fill([batch], k), flat.shape[1], dtype=p.dtype), tf.shape(outputs))
            for k in range(flat.shape[1])]


def _global_noise(seed: tf.Tensor, local_batch: tf.Tensor, width: int, normal: bool) -> tf.Tensor:
    """This replica's rows of a [global batch, width] stateless random draw (uniform or standard normal)."""
    offset, global_batch = global_example_offset(local_batch)
    draw = tf.random.stateless_normal if normal else tf.random.stateless_uniform
    rows = draw(tf.stack([global_batch, width]), seed=seed)
    return rows[offset : offset + local_batch]
