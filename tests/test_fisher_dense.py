"""Dense-layer factors against an independent numpy computation, and A ⊗ G against the exact Fisher block."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from tests.numpy_reference import exact_logit_cotangents, softmax, with_ones

BATCH, D_IN, HIDDEN, CLASSES = 7, 4, 5, 3


def tiny_mlp(seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D_IN,))
    hidden = keras.layers.Dense(HIDDEN, activation="tanh", name="hidden")(inputs)
    logits = keras.layers.Dense(CLASSES, name="out")(hidden)
    return keras.Model(inputs, logits)


def numpy_factors(model: keras.Model, x: np.ndarray, weights: np.ndarray | None = None
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Forward and backward of the MLP by hand; G = (1/B) Σ_b w_b Σ_k ds_bk ds_bkᵀ (exact expectation over y; the
    Fisher of the loss (1/B) Σ_b w_b ℓ_b, w = 1 unless given)."""
    w = np.ones((len(x), 1)) if weights is None else np.asarray(weights, np.float64)[:, None]
    w1, b1 = (v.numpy().astype(np.float64) for v in model.get_layer("hidden").weights)
    w2, b2 = (v.numpy().astype(np.float64) for v in model.get_layer("out").weights)
    hidden = np.tanh(x @ w1 + b1)
    logits = hidden @ w2 + b2
    g_hidden, g_out = np.zeros((HIDDEN, HIDDEN)), np.zeros((CLASSES, CLASSES))
    for ds_out in exact_logit_cotangents(logits):
        ds_hidden = (ds_out @ w2.T) * (1 - hidden**2)
        g_out += (w * ds_out).T @ ds_out / BATCH
        g_hidden += (w * ds_hidden).T @ ds_hidden / BATCH
    a_in, a_hidden = with_ones(x), with_ones(hidden)
    return {
        "hidden": {"A": a_in.T @ a_in / BATCH, "G": g_hidden},
        "out": {"A": a_hidden.T @ a_hidden / BATCH, "G": g_out},
    }


def test_dense_factors_equal_numpy_with_exact_expectation() -> None:
    model = tiny_mlp()
    x = np.random.default_rng(0).normal(size=(BATCH, D_IN)).astype(np.float32)
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact"))
    optimizer.accumulate_statistics(tf.constant(x))
    expected = numpy_factors(model, x.astype(np.float64))
    for layer, factors in optimizer.factors().items():
        for name, value in factors.items():
            np.testing.assert_allclose(value, expected[layer][name], rtol=1e-4, atol=1e-6, err_msg=f"{layer}.{name}")


def test_sampled_targets_converge_to_the_true_fisher_not_the_empirical_one() -> None:
    """Averaging many sampled-target statistics approaches the exact-expectation G (the model's distribution)."""
    model = tiny_mlp()
    x = np.random.default_rng(0).normal(size=(BATCH, D_IN)).astype(np.float32)
    repeats = 600
    optimizer = KFAC(model, KFACConfig(fisher_targets="sample", stats_decay=0.9999, seed=3))
    for _ in range(repeats):  # with decay min(1 − 1/k, 0.9999) the EMA is the running mean of all k batches
        optimizer.accumulate_statistics(tf.constant(x))
    expected = numpy_factors(model, x.astype(np.float64))
    for layer in ("hidden", "out"):
        g = optimizer.factors()[layer]["G"]
        error = np.linalg.norm(g - expected[layer]["G"]) / np.linalg.norm(expected[layer]["G"])
        assert error < 0.1, f"{layer}: sampled G is {error:.3f} away from the true-Fisher G"
        np.testing.assert_allclose(optimizer.factors()[layer]["A"], expected[layer]["A"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer_name", ["hidden", "out"])
def test_single_example_kronecker_product_equals_exact_fisher_block(layer_name: str) -> None:
    """For one example, E_y[vec(DW) vec(DW)ᵀ] = Jᵀ (diag p − p pᵀ) J exactly equals A ⊗ G."""
    model = tiny_mlp(seed=2)
    x = np.random.default_rng(1).normal(size=(1, D_IN)).astype(np.float32)
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact"))
    optimizer.accumulate_statistics(tf.constant(x))
    factors = optimizer.factors()[layer_name]
    kernel, bias = model.get_layer(layer_name).weights
    with tf.GradientTape(persistent=True) as tape:
        logits = model(tf.constant(x))[0]
    # Jacobian of the logits w.r.t. [W; b] (homogeneous layout, row-major vec), by autodiff on a plain call.
    jac_kernel = tape.jacobian(logits, kernel).numpy().reshape(CLASSES, -1)
    jac_bias = tape.jacobian(logits, bias).numpy()
    d_out = kernel.shape[1]
    jacobian = np.concatenate([jac_kernel, jac_bias], axis=1).astype(np.float64)
    assert jacobian.shape[1] == (kernel.shape[0] + 1) * d_out
    p = softmax(logits.numpy()[None].astype(np.float64))[0]
    exact_block = jacobian.T @ (np.diag(p) - np.outer(p, p)) @ jacobian
    np.testing.assert_allclose(np.kron(factors["A"], factors["G"]), exact_block, rtol=1e-4, atol=1e-7)
