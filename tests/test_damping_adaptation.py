"""The Levenberg–Marquardt damping (`damping_adaptation_every`, kfac/damping_adaptation.py): ρ against a numpy
computation with an explicit Fisher, the rule's direction and clipping, the checkpoint, recovery from a bad λ."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.keras import KFAC as KerasKFAC
from kfac_repro.kfac import KFAC, KFACConfig, likelihoods
from kfac_repro.kfac.damping_adaptation import adapted, omega, reduction_ratio


def _model(seed: int = 0, inputs: int = 3, hidden: int = 4, classes: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(hidden, activation="tanh"),
                             keras.layers.Dense(classes)])


def _logits(theta: np.ndarray, shapes: list[tuple], x: np.ndarray) -> np.ndarray:
    """The model's forward pass in float64 from the flat weights (kernel, bias, kernel, bias)."""
    parts, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(theta[offset : offset + size].reshape(shape))
        offset += size
    w1, b1, w2, b2 = parts
    return np.tanh(x @ w1 + b1) @ w2 + b2


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _numpy_rho(theta: np.ndarray, delta: np.ndarray, shapes: list[tuple], x: np.ndarray, y: np.ndarray,
               wd: float) -> float:
    """ρ = (h(θ+δ) − h(θ)) / (½δᵀ(F + wd)δ + ∇hᵀδ), h the mean cross-entropy + ½wd‖θ‖², F = mean Jᵀ(diag p − ppᵀ)J
    with the Jacobian J of the logits by central differences, ∇h = mean Jᵀ(p − e_y) + wd·θ."""

    def h(t: np.ndarray) -> float:
        p = _softmax(_logits(t, shapes, x))
        return float(-np.mean(np.log(p[np.arange(len(y)), y])) + 0.5 * wd * t @ t)

    eps = 1e-6
    columns = []
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = eps
        columns.append((_logits(theta + step, shapes, x) - _logits(theta - step, shapes, x)) / (2 * eps))
    jacobian = np.stack(columns, axis=-1)  # [N, classes, parameters]
    p = _softmax(_logits(theta, shapes, x))
    onehot = np.eye(p.shape[1])[y]
    fisher = np.mean([j.T @ (np.diag(q) - np.outer(q, q)) @ j for j, q in zip(jacobian, p, strict=True)], axis=0)
    gradient = np.mean([j.T @ (q - e) for j, q, e in zip(jacobian, p, onehot, strict=True)], axis=0) + wd * theta
    predicted = 0.5 * delta @ (fisher + wd * np.eye(theta.size)) @ delta + gradient @ delta
    return (h(theta + delta) - h(theta)) / predicted


def _flat(model: keras.Model) -> np.ndarray:
    return np.concatenate([np.asarray(v.numpy(), np.float64).ravel() for v in model.trainable_variables])


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_reduction_ratio_equals_numpy_with_explicit_fisher(wd: float) -> None:
    model = _model()
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    every = 2
    optimizer = KFAC(model, KFACConfig(damping=0.1, weight_decay=wd, kl_clip=0.1, damping_adaptation_every=every,
                                       damping_min=1e-3, damping_max=1.0))
    try:
        first = optimizer.train_step(x, y)
        assert "reduction_ratio" not in first  # step 0 of every 2: no adaptation
        assert first["damping"] == pytest.approx(0.1)
        theta = _flat(model)
        metrics = optimizer.train_step(x, y)
        delta = _flat(model) - theta
        expected = _numpy_rho(theta, delta, shapes, x, y, wd)
        assert metrics["reduction_ratio"] == pytest.approx(expected, rel=1e-3)
        factor = omega(every)
        rule = 0.1 * factor if expected > 0.75 else 0.1 / factor if expected < 0.25 else 0.1
        assert metrics["damping"] == pytest.approx(rule, rel=1e-6)
        assert optimizer.inversion.damping == pytest.approx(rule + wd, rel=1e-6)  # the next inversions' λ + wd
    finally:
        optimizer.close()


def test_rule_direction_and_clipping() -> None:
    factor = omega(5)
    assert factor == pytest.approx(0.95**5)

    def new(damping: float, rho: float, low: float = 1e-8, high: float = 1e4) -> float:
        return float(adapted(tf.constant(damping), tf.constant(rho), factor, low, high))

    assert new(1.0, 0.9) == pytest.approx(factor)  # the model predicted well: less damping
    assert new(1.0, 0.1) == pytest.approx(1 / factor)  # badly: more
    assert new(1.0, -3.0) == pytest.approx(1 / factor)  # the loss rose
    assert new(1.0, 0.5) == 1.0
    assert new(1.0, float("nan")) == 1.0
    assert new(1.0, 0.9, low=0.9) == pytest.approx(0.9)
    assert new(1.0, 0.1, high=1.1) == pytest.approx(1.1)
    assert float(reduction_ratio(tf.constant(-1.0), tf.constant(-2.0))) == 0.5
    assert float(reduction_ratio(tf.constant(float("inf")), tf.constant(-2.0))) == float("-inf")
    assert np.isnan(float(reduction_ratio(tf.constant(-1.0), tf.constant(0.0))))


@pytest.mark.parametrize(("likelihood", "from_logits"), [("categorical", True), ("categorical", False),
                                                         ("gaussian", True), ("bernoulli", True),
                                                         ("bernoulli", False)])
def test_fisher_quadratic_equals_exact_cotangents(likelihood: str, from_logits: bool) -> None:
    """uᵀF_z u in closed form equals Σ_k (v_k·u)² over the exact Fisher cotangents (their defining property)."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 4)).astype(np.float32)
    outputs = tf.constant(z if from_logits or likelihood == "gaussian" else
                          (_softmax(z) if likelihood == "categorical" else 1 / (1 + np.exp(-z))).astype(np.float32))
    u = tf.constant(rng.normal(size=(5, 4)).astype(np.float32))
    cotangents = likelihoods.fisher_cotangents(likelihood, outputs, from_logits, "exact", tf.constant([0, 0]))
    expected = sum(np.sum(v.numpy() * u.numpy(), axis=1) ** 2 for v in cotangents)
    got = likelihoods.fisher_quadratic(likelihood, outputs, from_logits, u).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("inversion", ["sync", "async"])
def test_damping_is_checkpointed(tmp_path, inversion: str) -> None:
    config = KFACConfig(damping=1.0, weight_decay=0.001, kl_clip=0.1, damping_adaptation_every=1,
                        inversion=inversion, async_lag=2 if inversion == "async" else None, inverse_every=2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    model = _model()
    optimizer = KFAC(model, config)
    for _ in range(4):
        optimizer.train_step(x, y)
    damping = float(optimizer.adaptation.damping.numpy())
    assert damping != pytest.approx(1.0)
    path = tf.train.Checkpoint(model=model, **optimizer.checkpoint_state()).write(str(tmp_path / "ckpt"))
    optimizer.close()
    resumed_model = _model(seed=1)
    resumed = KFAC(resumed_model, config)
    try:
        tf.train.Checkpoint(model=resumed_model, **resumed.checkpoint_state()).read(path).assert_consumed()
        resumed.restored()
        assert float(resumed.adaptation.damping.numpy()) == damping
        assert resumed.inversion.damping == pytest.approx(damping + 0.001)
    finally:
        resumed.close()


def _task(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1024, 10)).astype(np.float32)
    teacher = rng.normal(size=(10, 4))
    return x, np.argmax(np.tanh(x @ teacher) + 0.3 * rng.normal(size=(1024, 4)), axis=1)


def _train(damping: float, adapt: bool, steps: int = 150, batch: int = 256) -> tuple[float, float, float]:
    """(first loss, mean loss of the last 10 steps, final λ) of K-FAC on the task from `damping`, in the
    Levenberg–Marquardt regime: no momentum, η_max = 1 and a KL bound too wide to bind, so that each step is the
    damped natural-gradient step and λ alone sets its length."""
    x, y = _task()
    model = _model(inputs=10, hidden=32, classes=4)
    optimizer = KFAC(model, KFACConfig(damping=damping, kl_clip=100.0, momentum=0.0, max_step_size=1.0,
                                       inverse_every=5, damping_adaptation_every=5 if adapt else None,
                                       damping_min=1e-6))
    losses, metrics = [], {}
    try:
        for step in range(steps):
            start = (step * batch) % len(x)
            metrics = optimizer.train_step(x[start : start + batch], y[start : start + batch])
            losses.append(metrics["loss"])
    finally:
        optimizer.close()
    return losses[0], float(np.mean(losses[-10:])), metrics.get("damping", damping)


@pytest.mark.parametrize("initial", [1e-4, 10.0])
def test_bad_initial_damping_recovers(initial: float) -> None:
    """From λ = 1e-4 a fixed damping diverges (its loss ends far above where it began); the adapted λ grows and
    trains. From λ = 10 the adapted λ falls by orders of magnitude and ends lower than the fixed one. 300 steps: λ
    moves by at most 1/ω ≈ 1.29 per adaptation, so from 1e-4 the loss, which the first steps throw far up (to 85 on
    an AVX2 CPU), comes back below its start only after 100-200 steps, depending on the machine's rounding (on that
    CPU the last 10 of 150 steps averaged 2.04 against the start's 1.46, of 300 steps 0.83)."""
    first, adaptive, damping = _train(initial, adapt=True, steps=300)
    _, fixed, _ = _train(initial, adapt=False, steps=300)
    assert adaptive < 0.8 * first
    if initial < 1:
        assert damping > 3 * initial
        assert fixed > 2 * first  # the bad λ really is bad here
    else:
        assert damping < initial / 100
        assert adaptive < fixed


@pytest.mark.parametrize(("setting", "value"), [("damping_adaptation_every", 5), ("damping_min", 1e-3),
                                                ("damping_max", 10.0)])
def test_fit_refuses_it_by_name(setting: str, value: float) -> None:
    with pytest.raises(TypeError, match=f"{setting} does not apply in fit: the adaptive damping runs in the host"):
        KerasKFAC(_model(), **{setting: value})


def test_initial_damping_outside_bounds_refused() -> None:
    with pytest.raises(ValueError, match=r"damping: expected a number in \[damping_min, damping_max\]"):
        KFACConfig(damping=10.0, damping_adaptation_every=5, damping_max=1.0)
    assert KFACConfig(damping=10.0, damping_max=1.0).damping == 10.0  # bounds bind only an adapted λ


def test_two_replicas_adapt_as_one() -> None:
    """Under MirroredStrategy (two replicas, half the batch each) ρ and λ are those of one replica on the batch."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "tests.damping_replicas"], cwd=root, env=env, check=True,
                          capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [rho is None for rho, _ in result["one"]] == [True, False, True, False]
    for (rho_one, damping_one), (rho_two, damping_two) in zip(result["one"], result["two"], strict=True):
        assert (rho_one is None) == (rho_two is None)
        if rho_one is not None:
            assert rho_two == pytest.approx(rho_one, rel=1e-4)
        assert damping_two == pytest.approx(damping_one, rel=1e-6)
    assert result["one"][-1][1] != pytest.approx(0.1)  # λ moved, so that its agreement means something


def test_next_refresh_inverts_with_the_adapted_damping() -> None:
    """The inverses installed at the refresh after an adaptation are the damped inverses of the factors with the
    adapted λ + wd (computed here by the block itself from the factors), not with the initial λ."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    wd = 0.001
    optimizer = KFAC(_model(), KFACConfig(damping=1.0, weight_decay=wd, kl_clip=0.1, damping_adaptation_every=1,
                                          inverse_every=3))
    try:
        for _ in range(3):  # steps 0, 1, 2 adapt λ; step 3 starts with a refresh
            optimizer.train_step(x, y)
        damping = float(optimizer.adaptation.damping.numpy())
        assert damping != pytest.approx(1.0)
        factors = optimizer.factors()
        optimizer.train_step(x, y)
        assert optimizer.refresh.history[-1].installed_at == 3
        for block in optimizer.blocks:
            adapted_inverse = block.compute_inverse(factors[block.name], damping + wd, "float32")
            initial_inverse = block.compute_inverse(factors[block.name], 1.0 + wd, "float32")
            for name, value in adapted_inverse.items():
                installed = block.inverse[name].numpy()
                np.testing.assert_allclose(installed, value, rtol=1e-5, atol=1e-7)
                assert not np.allclose(installed, initial_inverse[name], rtol=1e-3)
    finally:
        optimizer.close()
