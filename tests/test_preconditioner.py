"""Preconditioning (explicit damped inverses, two products per Kronecker block) against explicit solves with numpy
Kronecker products of the damped factors and against the eigenbasis path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig

DAMPING = 0.05


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    m = rng.normal(size=(dim, dim + 3))
    return m @ m.T / dim


def trace_pi(a: np.ndarray, g: np.ndarray) -> float:
    return float(np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g))))


def small_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 3, padding="valid", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, use_bias=False, name="nobias")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("inverse_dtype", ["float64", "float32"])
def test_kronecker_preconditioning_equals_explicit_kron_solve(inverse_dtype: str) -> None:
    model = small_model()
    optimizer = KFAC(model, KFACConfig(damping=DAMPING, inverse_dtype=inverse_dtype))
    rng = np.random.default_rng(0)
    for block in optimizer.blocks:
        for factor in block.factors.values():
            factor.assign(random_spd(rng, factor.shape[0]).astype(np.float32))
    optimizer.refresh_inverses()
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in optimizer.params]
    solved = {v.path: s.numpy() for v, s in zip(optimizer.params, optimizer.precondition(grads), strict=True)}
    by_path = {v.path: g for v, g in zip(optimizer.params, grads, strict=True)}
    tolerance = 2e-4 if inverse_dtype == "float64" else 2e-3

    for name, use_bias in (("conv", True), ("nobias", False), ("out", True)):
        layer = model.get_layer(name)
        factors = optimizer.factors()[name]
        a, g = factors["A"].astype(np.float64), factors["G"].astype(np.float64)
        pi = trace_pi(a, g)
        damped = np.kron(a + pi * np.sqrt(DAMPING) * np.eye(len(a)), g + np.sqrt(DAMPING) / pi * np.eye(len(g)))
        matrix = by_path[layer.kernel.path].reshape(-1, g.shape[0])
        if use_bias:
            matrix = np.vstack([matrix, by_path[layer.bias.path][None]])
        expected = np.linalg.solve(damped, matrix.reshape(-1)).reshape(matrix.shape)
        got = solved[layer.kernel.path].reshape(-1, g.shape[0])
        if use_bias:
            got = np.vstack([got, solved[layer.bias.path][None]])
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())

    bn = model.get_layer("bn")
    fisher = optimizer.factors()["bn"]["F"].astype(np.float64)
    flat = np.concatenate([by_path[bn.gamma.path], by_path[bn.beta.path]])
    expected_bn = np.linalg.solve(fisher + DAMPING * np.eye(len(fisher)), flat)
    np.testing.assert_allclose(np.concatenate([solved[bn.gamma.path], solved[bn.beta.path]]), expected_bn,
                               rtol=tolerance, atol=tolerance * np.abs(expected_bn).max())


def eigenbasis_solve(matrix: np.ndarray, a: np.ndarray, g: np.ndarray, shift_a: float, shift_g: float) -> np.ndarray:
    """The eigenbasis path: Q_A [(Q_Aᵀ M Q_G) / ((e_A + δ_A)(e_G + δ_G)ᵀ)] Q_Gᵀ, four products, in float64."""
    e_a, q_a = np.linalg.eigh(a)
    e_g, q_g = np.linalg.eigh(g)
    rotated = q_a.T @ matrix @ q_g / np.outer(np.maximum(e_a, 0) + shift_a, np.maximum(e_g, 0) + shift_g)
    return q_a @ rotated @ q_g.T


@pytest.mark.parametrize(("d_in", "d_out", "use_bias"), [(7, 5, True), (30, 12, False), (120, 40, True)])
def test_kronecker_preconditioning_equals_the_eigenbasis_path(d_in: int, d_out: int, use_bias: bool) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((d_in,)), keras.layers.Dense(d_out, use_bias=use_bias, name="dense")])
    optimizer = KFAC(model, KFACConfig(damping=1e-3))
    block = optimizer.blocks[0]
    rng = np.random.default_rng(d_in)
    # an ill-conditioned A (eigenvalues spread over three decades), as EMA'd statistics are
    rows = rng.normal(size=(d_in + use_bias, d_in + use_bias)) * np.logspace(-1.5, 0, d_in + use_bias)
    a = rows @ rows.T / (d_in + use_bias)
    g = random_spd(rng, d_out)
    block.factors["A"].assign(a.astype(np.float32))
    block.factors["G"].assign(g.astype(np.float32))
    optimizer.refresh_inverses()
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in optimizer.params]
    solved = [s.numpy() for s in optimizer.precondition(grads)]
    a, g = optimizer.factors()["dense"]["A"].astype(np.float64), optimizer.factors()["dense"]["G"].astype(np.float64)
    pi = trace_pi(a, g)
    matrix = np.vstack([grads[0], grads[1][None]]) if use_bias else grads[0]
    expected = eigenbasis_solve(matrix.astype(np.float64), a, g, pi * np.sqrt(1e-3), np.sqrt(1e-3) / pi)
    got = np.vstack([solved[0], solved[1][None]]) if use_bias else solved[0]
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_diagonal_fallback_divides_by_damped_diagonal() -> None:
    model = small_model()
    optimizer = KFAC(model, KFACConfig(damping=DAMPING, exact_block_max=2))  # BN's 6 parameters → diagonal
    bn_block = next(b for b in optimizer.blocks if b.name == "bn")
    assert bn_block.kind == "scale-shift-diagonal"
    diagonal = np.linspace(0.5, 3.0, 6).astype(np.float32)
    bn_block.factors["F"].assign(diagonal)
    optimizer.refresh_inverses()
    grads = [np.ones(v.shape, np.float32) for v in optimizer.params]
    solved = optimizer.precondition(grads)
    index = [i for i, v in enumerate(optimizer.params) if v.path.startswith("bn/")]
    got = np.concatenate([solved[i].numpy() for i in index])
    np.testing.assert_allclose(got, 1.0 / (diagonal + DAMPING), rtol=1e-6)


def test_update_rule_is_kl_clipped_preconditioned_step() -> None:
    """Δθ = −η v with v = F̂⁻¹ g (inverse from the statistics before the step), η = min(η_max, √(c / vᵀg))."""
    model = small_model()
    config = KFACConfig(damping=DAMPING, momentum=0.0, kl_clip=1e-3, max_step_size=10.0, fisher_targets="exact")
    optimizer = KFAC(model, config)
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(6, 5, 5, 2)), tf.float32)
    y = tf.constant(rng.integers(0, 3, size=6), tf.int32)
    optimizer.accumulate_statistics(x)
    optimizer.refresh_inverses()
    before = [v.numpy() for v in optimizer.params]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True),
                                                                           from_logits=True))
    grads = tape.gradient(loss, optimizer.params)
    for variable, value in zip(model.non_trainable_variables, [v.numpy() for v in model.non_trainable_variables],
                               strict=True):
        variable.assign(value)
    direction = [d.numpy() for d in optimizer.precondition(grads)]
    v_dot_g = sum(float(np.sum(d * g.numpy())) for d, g in zip(direction, grads, strict=True))
    eta = min(10.0, np.sqrt(1e-3 / v_dot_g))
    metrics = optimizer.train_step(x, y)
    assert metrics["step_size"] == pytest.approx(eta, rel=1e-4)
    for b, a, d in zip(before, optimizer.params, direction, strict=True):
        np.testing.assert_allclose(a.numpy(), b - eta * d, rtol=1e-4, atol=1e-6)
