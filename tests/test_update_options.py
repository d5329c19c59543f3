"""Step-size schedules (KL-threshold decay, learning-rate decay), statistics decay, Polyak averaging, SGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig
from kfac_repro.kfac.base import scheduled
from kfac_repro.kfac.config import Schedule


def tiny() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])


def batch() -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(0)
    return tf.constant(rng.normal(size=(8, 3)), tf.float32), tf.constant(rng.integers(0, 2, 8), tf.int32)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.01), (9, 0.01), (10, 0.0096), (25, 0.01 * 0.96**2)])
def test_schedule_decays_every_interval(step: int, expected: float) -> None:
    assert float(scheduled(Schedule(0.01, 0.96, 10), tf.constant(step, tf.int64))) == pytest.approx(expected)


def test_kl_decay_shrinks_the_kl_threshold_and_lr_decay_the_maximum_step() -> None:
    x, y = batch()
    kl = KFAC(tiny(), KFACConfig(kl_clip=0.01, decay_rate=0.5, decay_every=2, decay_target="kl"))
    lr = KFAC(tiny(), KFACConfig(kl_clip=0.01, max_step_size=0.2, decay_rate=0.5, decay_every=2,
                                 decay_target="lr"))
    kl_metrics = [kl.train_step(x, y) for _ in range(5)]
    lr_metrics = [lr.train_step(x, y) for _ in range(5)]
    assert [m["kl_clip"] for m in kl_metrics] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
    assert [m["learning_rate"] for m in kl_metrics] == pytest.approx([1.0] * 5)
    assert [m["learning_rate"] for m in lr_metrics] == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05])
    assert [m["kl_clip"] for m in lr_metrics] == pytest.approx([0.01] * 5)
    for m in kl_metrics + lr_metrics:
        assert m["step_size"] == pytest.approx(min(m["learning_rate"], np.sqrt(m["kl_clip"] / m["v_dot_g"])),
                                               rel=1e-5)


def test_kl_bound_on_the_update_feeds_momentum_one_minus_mu_of_the_clipped_step() -> None:
    """kl_bound 'update': v ← μ v + (1 − μ) η·F̂⁻¹g, so the steady-state update η·F̂⁻¹g meets the bound;
    'increment': v ← μ v + η·F̂⁻¹g (the same η), 1/(1 − μ) times larger once momentum has summed."""
    x, y = batch()
    moves = {}
    for bound in ("update", "increment"):
        optimizer = KFAC(tiny(), KFACConfig(momentum=0.75, kl_bound=bound, damping=0.1))
        start = [v.numpy() for v in optimizer.params]
        metrics = optimizer.train_step(x, y)
        moves[bound] = (np.concatenate([(s - v.numpy()).ravel() for s, v in zip(start, optimizer.params,
                                                                                  strict=True)]), metrics)
    (update, m_update), (increment, m_increment) = moves["update"], moves["increment"]
    assert m_update["step_size"] == pytest.approx(m_increment["step_size"], rel=1e-6)
    np.testing.assert_allclose(update, 0.25 * increment, rtol=1e-4, atol=1e-8)
    # the update's squared F̂-norm: (η v)ᵀ F̂ (η v) = η² vᵀg ≤ c at the steady state the buffer converges to
    assert m_update["step_size"] ** 2 * m_update["v_dot_g"] <= m_update["kl_clip"] * (1 + 1e-5)


def test_statistics_are_an_exponential_moving_average_with_warm_start() -> None:
    """decay_k = min(1 − 1/k, stats_decay): the first batch is taken whole, later ones blended."""
    x1, x2 = tf.random.normal((8, 3), seed=1), tf.random.normal((8, 3), seed=2)
    optimizer = KFAC(tiny(), KFACConfig(stats_decay=0.3, fisher_targets="exact"))
    alone = KFAC(tiny(), KFACConfig(fisher_targets="exact"))
    optimizer.accumulate_statistics(x1)
    first = optimizer.factors()
    alone.accumulate_statistics(x2)
    second = alone.factors()
    optimizer.accumulate_statistics(x2)  # k = 2: decay min(1/2, 0.3) = 0.3
    blended = zip(optimizer.factors().values(), first.values(), second.values(), strict=True)
    for factors, old, new in blended:  # same architecture and seed: blocks align by position
        for name, value in factors.items():
            np.testing.assert_allclose(value, 0.3 * old[name] + 0.7 * new[name], rtol=1e-5, atol=1e-7)


def test_inverse_refresh_interval_and_staleness() -> None:
    x, y = batch()
    optimizer = KFAC(tiny(), KFACConfig(inverse_every=3))
    staleness = [optimizer.train_step(x, y)["inverse_staleness"] for _ in range(7)]
    assert staleness == [0, 1, 2, 0, 1, 2, 0]


def test_polyak_average_follows_the_weights_and_is_swapped_in_for_evaluation() -> None:
    x, y = batch()
    model = tiny()
    sgd = SGD(model, SGDConfig(learning_rate=0.1, polyak_decay=0.5))
    start = [v.numpy() for v in model.trainable_variables]
    sgd.train_step(x, y)
    after_one = [v.numpy() for v in model.trainable_variables]
    with sgd.averaged_weights():
        for variable, s, a in zip(model.trainable_variables, start, after_one, strict=True):
            np.testing.assert_allclose(variable.numpy(), 0.5 * s + 0.5 * a, rtol=1e-6)
    for variable, a in zip(model.trainable_variables, after_one, strict=True):
        np.testing.assert_array_equal(variable.numpy(), a)


def test_sgd_momentum_update_and_learning_rate_decay() -> None:
    x, y = batch()
    model = tiny()
    sgd = SGD(model, SGDConfig(learning_rate=0.1, momentum=0.5, lr_decay_rate=0.5, lr_decay_every=1))
    velocity = [np.zeros(v.shape) for v in model.trainable_variables]
    for step in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x, training=True)))
        grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
        before = [v.numpy() for v in model.trainable_variables]
        metrics = sgd.train_step(x, y)
        assert metrics["learning_rate"] == pytest.approx(0.1 * 0.5**step)
        velocity = [0.5 * v + metrics["learning_rate"] * g for v, g in zip(velocity, grads, strict=True)]
        for variable, b, v in zip(model.trainable_variables, before, velocity, strict=True):
            np.testing.assert_allclose(variable.numpy(), b - v, rtol=1e-5, atol=1e-7)


def test_statistics_from_a_separate_pass_on_the_first_examples() -> None:
    """stats_batch_size m: the step's factors are those of x[:m] (a separate pass), not of the whole batch."""
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(8, 3)), tf.float32)
    y = tf.constant(rng.integers(0, 2, 8), tf.int32)
    subset = KFAC(tiny(), KFACConfig(stats_batch_size=3, fisher_targets="exact", inverse_every=100))
    reference = KFAC(tiny(), KFACConfig(fisher_targets="exact"))
    subset.accumulate_statistics(x[:3])
    subset.refresh_inverses()
    subset.train_step(x, y)  # factors: EMA(k=2) of x[:3] twice at the same weights = the x[:3] factors
    reference.accumulate_statistics(x[:3])
    for got, want in zip(subset.factors().values(), reference.factors().values(), strict=True):
        for name in got:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7)
