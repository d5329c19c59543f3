"""Doubly-factored blocks (paper §4): rank-1 factors against numpy SVD, the three-factor preconditioner against an
explicit Kronecker solve, π by Eq. 12, and the bias block against the exact Fisher of the bias."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from kfac_repro.kfac.linalg.damping import geometric_mean_pis
from tests.numpy_reference import exact_logit_cotangents

H, W, C, OUT, BATCH = 3, 2, 4, 5, 6
DAMPING = 0.02


def fc_over_map(doubly: bool = True, **config: object) -> tuple[keras.Model, KFAC]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, C))
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(OUT, name="fc6")(flat)
    model = keras.Model(inputs, outputs)
    settings = {"doubly_factored": ("fc6",) if doubly else (), "damping": DAMPING, **config}
    return model, KFAC(model, KFACConfig(**settings))  # type: ignore[arg-type]


def numpy_rank_one(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ks, psis = [], []
    for m in maps:
        u, s, vt = np.linalg.svd(m)
        ks.append(np.sqrt(s[0]) * u[:, 0])
        psis.append(np.sqrt(s[0]) * vt[0])
    return np.array(ks), np.array(psis)


def test_rank_one_factors_equal_numpy_svd() -> None:
    model, optimizer = fc_over_map(fisher_targets="exact")
    assert optimizer.blocks[0].kind == "doubly-factored"
    x = np.random.default_rng(0).normal(size=(BATCH, H, W, C))
    optimizer.accumulate_statistics(tf.constant(x, tf.float32))
    ks, psis = numpy_rank_one(x.reshape(BATCH, H * W, C))
    kernel, bias = (v.numpy().astype(np.float64) for v in model.get_layer("fc6").weights)
    logits = x.reshape(BATCH, -1) @ kernel + bias
    g = sum(v.T @ v for v in exact_logit_cotangents(logits)) / BATCH
    factors = optimizer.factors()["fc6"]
    np.testing.assert_allclose(factors["K"], ks.T @ ks / BATCH, rtol=1e-4, atol=1e-6)  # sign of u, v cancels
    np.testing.assert_allclose(factors["Psi"], psis.T @ psis / BATCH, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(factors["G"], g, rtol=1e-4, atol=1e-7)


def test_pi_follows_equation_12() -> None:
    rng = np.random.default_rng(1)
    factors = [np.diag(rng.uniform(0.1, 5.0, size=d)) for d in (3, 4, 5)]
    means = [np.trace(f) / len(f) for f in factors]
    pis = geometric_mean_pis(factors)
    expected_a = np.cbrt(means[0] ** 2 / (means[1] * means[2]))  # π_a = ((‖A‖*/d_A)² / ((‖B‖*/d_B)(‖C‖*/d_C)))^⅓
    assert pis[0] == pytest.approx(expected_a)
    assert pis[1] == pytest.approx(np.cbrt(means[1] ** 2 / (means[0] * means[2])))
    assert np.prod(pis) == pytest.approx(1.0)
    two = geometric_mean_pis(factors[:2])  # two factors: the trace-norm rule √(m_A / m_G)
    assert two[0] == pytest.approx(np.sqrt(means[0] / means[1]))


def test_three_factor_preconditioner_equals_explicit_kronecker_solve() -> None:
    _, optimizer = fc_over_map()
    rng = np.random.default_rng(2)
    block = optimizer.blocks[0]
    for name, dim in (("K", H * W), ("Psi", C), ("G", OUT)):
        m = rng.normal(size=(dim, dim + 2))
        block.factors[name].assign((m @ m.T / dim).astype(np.float32))
    optimizer.refresh_inverses()
    factors = {n: v.astype(np.float64) for n, v in optimizer.factors()["fc6"].items()}
    pis = geometric_mean_pis([factors["K"], factors["Psi"], factors["G"]])
    root = DAMPING ** (1 / 3)
    damped = [factors[n] + pi * root * np.eye(len(factors[n])) for n, pi in zip(("K", "Psi", "G"), pis, strict=True)]
    kernel_grad = rng.normal(size=(H * W * C, OUT)).astype(np.float32)
    bias_grad = rng.normal(size=OUT).astype(np.float32)
    solved_kernel, solved_bias = (t.numpy() for t in optimizer.precondition([kernel_grad, bias_grad]))
    explicit = np.kron(np.kron(damped[0], damped[1]), damped[2])
    expected = np.linalg.solve(explicit, kernel_grad.reshape(-1).astype(np.float64))
    np.testing.assert_allclose(solved_kernel.reshape(-1), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    # the bias block is exact: E[ds dsᵀ] + λ I
    expected_bias = np.linalg.solve(factors["G"] + DAMPING * np.eye(OUT), bias_grad.astype(np.float64))
    np.testing.assert_allclose(solved_bias, expected_bias, rtol=1e-3, atol=1e-5)


def test_automatic_selection_above_input_size_and_clear_errors() -> None:
    _, auto = fc_over_map(doubly=False, doubly_factored_min_inputs=H * W * C)
    assert auto.blocks[0].kind == "doubly-factored"
    _, below = fc_over_map(doubly=False, doubly_factored_min_inputs=H * W * C + 1)
    assert below.blocks[0].kind == "kronecker-dense"
    model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(3, name="plain")])
    with pytest.raises(ValueError, match="Flatten of an"):
        KFAC(model, KFACConfig(doubly_factored=("plain",)))
    with pytest.raises(ValueError, match="no trainable layer named"):
        KFAC(model, KFACConfig(doubly_factored=("fc7",)))


def test_conv_with_one_by_one_output_is_doubly_factored_and_trains() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3, 3, 4)), keras.layers.Conv2D(6, 3, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    optimizer = KFAC(model, KFACConfig(doubly_factored=("conv",), inverse_every=2))
    assert optimizer.blocks[0].factor_shapes == {"K": (9, 9), "Psi": (4, 4), "G": (6, 6)}
    x = tf.random.normal((16, 3, 3, 4), seed=1)
    y = tf.random.uniform((16,), 0, 3, tf.int32, seed=2)
    losses = [optimizer.train_step(x, y)["loss"] for _ in range(6)]
    assert losses[-1] < losses[0]


def test_the_bias_keeps_a_cholesky_factor_costed_at_a_third_of_an_inverse() -> None:
    _, optimizer = fc_over_map()
    block = optimizer.blocks[0]
    rng = np.random.default_rng(5)
    m = rng.normal(size=(OUT, OUT + 2))
    block.factors["G"].assign((m @ m.T / OUT).astype(np.float32))
    optimizer.refresh_inverses()
    g = block.factors["G"].numpy().astype(np.float64)
    np.testing.assert_allclose(block.inverse["bias_cholesky"].numpy(), np.linalg.cholesky(g + DAMPING * np.eye(OUT)),
                               rtol=1e-4, atol=1e-6)
    costs = block.inverse_costs()
    assert costs["bias_cholesky"] == pytest.approx(OUT**3 / 3)
    assert costs["G_inverse"] == OUT**3 and costs["K_inverse"] == (H * W) ** 3
