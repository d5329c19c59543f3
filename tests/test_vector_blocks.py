"""Exact blocks over small parameter vectors (BN γ/β, a generic layer) against per-example gradients in numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from tests.numpy_reference import exact_logit_cotangents

BATCH, D_IN, WIDTH, CLASSES = 6, 3, 4, 3


def model_with(middle: keras.layers.Layer) -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((D_IN,))
    h = keras.layers.Dense(WIDTH, name="dense")(inputs)
    y = middle(h)
    outputs = keras.layers.Dense(CLASSES, name="out")(y)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(3)  # γ, β away from their 1/0 initial values, so that mistakes show
    middle.gamma.assign(rng.uniform(0.5, 1.5, WIDTH).astype(np.float32))
    middle.beta.assign(rng.normal(size=WIDTH).astype(np.float32))
    return model


def exact_fisher_of_scale_shift(model: keras.Model, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """F = (1/B) Σ_b Σ_k g_bk g_bkᵀ with g = [dy ⊙ x̂, dy] the per-example gradient of (γ, β)."""
    gamma = model.layers[2].gamma.numpy().astype(np.float64)
    beta = model.layers[2].beta.numpy().astype(np.float64)
    w_out, b_out = (v.numpy().astype(np.float64) for v in model.get_layer("out").weights)
    logits = (gamma * x_hat + beta) @ w_out + b_out
    fisher = np.zeros((2 * WIDTH, 2 * WIDTH))
    for v in exact_logit_cotangents(logits):
        dy = v @ w_out.T
        per_example = np.concatenate([dy * x_hat, dy], axis=1)
        fisher += per_example.T @ per_example / len(x)
    return fisher


def pre_normalisation(model: keras.Model, x: np.ndarray) -> np.ndarray:
    w, b = (v.numpy().astype(np.float64) for v in model.get_layer("dense").weights)
    return x @ w + b


def test_batch_norm_block_equals_exact_fisher_of_gamma_and_beta() -> None:
    model = model_with(keras.layers.BatchNormalization(name="bn"))
    x = np.random.default_rng(0).normal(size=(BATCH, D_IN))
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact"))
    optimizer.accumulate_statistics(tf.constant(x, tf.float32))
    h = pre_normalisation(model, x)
    x_hat = (h - h.mean(axis=0)) / np.sqrt(h.var(axis=0) + model.layers[2].epsilon)  # batch statistics
    expected = exact_fisher_of_scale_shift(model, x, x_hat)
    np.testing.assert_allclose(optimizer.factors()["bn"]["F"], expected, rtol=2e-4, atol=1e-6)


def test_statistics_pass_leaves_batch_norm_moving_averages_alone() -> None:
    model = model_with(keras.layers.BatchNormalization(name="bn"))
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    KFAC(model, KFACConfig()).accumulate_statistics(tf.random.normal((BATCH, D_IN)))
    for old, new in zip(before, model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


class RewrittenLayerNorm(keras.layers.LayerNormalization):
    """A subclass with a call of its own: K-FAC cannot assume LayerNormalization's algebra, so it goes generic."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return super().call(inputs)


@pytest.mark.parametrize(("layer_class", "kind"), [(keras.layers.LayerNormalization, "scale-shift-exact"),
                                                   (RewrittenLayerNorm, "generic-exact")])
def test_layer_norm_block_equals_exact_fisher_of_gamma_and_beta(layer_class: type, kind: str) -> None:
    """LayerNormalization gets the scale-shift block (x̂ from its output); a subclass with its own call the generic
    block (per-example VJPs of its call): both equal the exact Fisher of (γ, β)."""
    model = model_with(layer_class(name="ln"))
    x = np.random.default_rng(1).normal(size=(BATCH, D_IN))
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact"))
    assert next(b for b in optimizer.blocks if b.name == "ln").kind == kind
    optimizer.accumulate_statistics(tf.constant(x, tf.float32))
    h = pre_normalisation(model, x)
    x_hat = (h - h.mean(axis=1, keepdims=True)) / np.sqrt(h.var(axis=1, keepdims=True) + model.layers[2].epsilon)
    expected = exact_fisher_of_scale_shift(model, x, x_hat)
    np.testing.assert_allclose(optimizer.factors()["ln"]["F"], expected, rtol=2e-4, atol=1e-6)
