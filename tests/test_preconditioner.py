"""Preconditioning against explicit solves with numpy Kronecker products of the damped factors."""

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


@pytest.mark.parametrize("eigh_dtype", ["float64", "float32"])
def test_kronecker_preconditioning_equals_explicit_kron_solve(eigh_dtype: str) -> None:
    model = small_model()
    optimizer = KFAC(model, KFACConfig(damping=DAMPING, eigh_dtype=eigh_dtype))
    rng = np.random.default_rng(0)
    for block in optimizer.blocks:
        for factor in block.factors.values():
            factor.assign(random_spd(rng, factor.shape[0]).astype(np.float32))
    optimizer.refresh_inverses()
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in optimizer.params]
    solved = {v.path: s.numpy() for v, s in zip(optimizer.params, optimizer.precondition(grads), strict=True)}
    by_path = {v.path: g for v, g in zip(optimizer.params, grads, strict=True)}
    tolerance = 2e-4 if eigh_dtype == "float64" else 2e-3

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
