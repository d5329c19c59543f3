"""The model's predictive distribution: the training loss, and the output cotangents whose back-propagation gives
the pre-activation derivatives for the Fisher statistics (targets from the model, never the labels; paper Eq. 1).

For an output z and a cotangent v, back-propagating v gives ds = J_sᵀ v. A list of cotangents v_k with weights
folded in must satisfy Σ_k E[v_k v_kᵀ] = E_{y~model}[∇_z log p(y|z) ∇_z log p(y|z)ᵀ] (exactly, or by sampling).
"""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

Likelihood = Literal["categorical", "gaussian"]
FisherTargets = Literal["sample", "exact"]
_EPSILON = 1e-7


def negative_log_likelihood(
    likelihood: Likelihood, outputs: tf.Tensor, targets: tf.Tensor, from_logits: bool
) -> tf.Tensor:
    """Per-example loss [B]: cross-entropy with integer labels, or ½‖z − y‖² for a unit Gaussian."""
    if likelihood == "categorical":
        labels = tf.cast(tf.reshape(targets, [-1]), tf.int32)
        if from_logits:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=outputs)
        probabilities = tf.gather(outputs, labels, axis=1, batch_dims=1)
        return -tf.math.log(tf.maximum(probabilities, _EPSILON))
    residual = tf.reshape(outputs - tf.cast(targets, outputs.dtype), [tf.shape(outputs)[0], -1])
    return 0.5 * tf.reduce_sum(tf.square(residual), axis=1)


def error_rate(likelihood: Likelihood, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Top-1 classification error of the batch (NaN for a Gaussian likelihood)."""
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
    generator: tf.random.Generator,
) -> list[tf.Tensor]:
    """Cotangents w.r.t. the model output, each [B, ...], for the Fisher statistics.

    sample: one target y_b ~ p(·|x_b) per example; v = −∇_z log p(y|z) (for logits: softmax(z) − onehot(y)).
    exact: one cotangent per class k, v_k = √p_k (p − e_k) for logits (Σ_k v_k v_kᵀ = diag p − p pᵀ), or
    −e_k/√p_k for probabilities; for a Gaussian, v_k = e_k (Σ v_k v_kᵀ = I).
    """
    outputs = tf.stop_gradient(outputs)
    if likelihood == "gaussian":
        if mode == "sample":
            return [generator.normal(tf.shape(outputs), dtype=outputs.dtype)]
        flat = tf.reshape(outputs, [tf.shape(outputs)[0], -1])
        return [tf.reshape(tf.one_hot(tf.fill([tf.shape(flat)[0]], k), flat.shape[1], dtype=outputs.dtype),
                           tf.shape(outputs)) for k in range(flat.shape[1])]
    probabilities = tf.nn.softmax(outputs) if from_logits else outputs
    classes = outputs.shape[-1]
    if mode == "sample":
        log_p = outputs if from_logits else tf.math.log(tf.maximum(outputs, _EPSILON))
        seed = generator.make_seeds(1)[:, 0]
        sampled = tf.random.stateless_categorical(log_p, 1, seed=seed)[:, 0]
        onehot = tf.one_hot(sampled, classes, dtype=outputs.dtype)
        if from_logits:
            return [probabilities - onehot]
        return [-onehot / tf.maximum(probabilities, _EPSILON)]
    cotangents = []
    for k in range(classes):
        onehot = tf.one_hot(tf.fill([tf.shape(outputs)[0]], k), classes, dtype=outputs.dtype)
        weight = tf.sqrt(probabilities[:, k : k + 1])
        if from_logits:
            cotangents.append(weight * (probabilities - onehot))
        else:
            cotangents.append(-onehot / tf.maximum(weight, _EPSILON))
    return cotangents
