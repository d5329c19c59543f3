"""Asynchronous inversion: inverses come from earlier statistics, are installed at a fixed step, the logged
staleness is right, and training still converges on real data."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from threadpoolctl import threadpool_limits

from kfac_repro.data.fashion_mnist import load_fashion_mnist
from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig

pytestmark = pytest.mark.fashion_mnist  # skipped, saying why, where the data set is absent


def mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(64, activation="relu", name="hidden"),
                             keras.layers.Dense(10, name="out")])


def fashion(count: int) -> tuple[np.ndarray, np.ndarray]:
    (images, labels), _ = load_fashion_mnist()
    x = ((images[:count].reshape(-1, 784).astype(np.float32) / 255.0) - 0.286) / 0.353
    return x, labels[:count].astype(np.int32)


def test_installed_inverses_come_from_the_snapshot_taken_lag_steps_earlier() -> None:
    x, y = fashion(2048)
    lag = 3
    optimizer = KFAC(mlp(), KFACConfig(inversion="async", async_lag=lag, damping=0.3))
    snapshots, staleness = {}, []
    rng = np.random.default_rng(0)
    for step in range(11):
        index = rng.choice(len(x), 128, replace=False)
        if step > 0:
            snapshots[step] = optimizer.factors()  # what a snapshot at this step sees (before the step's stats)
        staleness.append(optimizer.train_step(tf.constant(x[index]), tf.constant(y[index]))["inverse_staleness"])
        source = optimizer.inverse_iteration
        if source > 0:
            block = optimizer.blocks[0]
            expected = block.compute_inverse(snapshots[source]["hidden"], 0.3, "float64")
            for name in ("A_inverse", "G_inverse"):
                np.testing.assert_allclose(block.inverse[name].numpy(), expected[name], rtol=1e-5, atol=1e-7)
            current = block.compute_inverse(optimizer.factors()["hidden"], 0.3, "float64")
            assert not np.allclose(current["G_inverse"], expected["G_inverse"], rtol=1e-5)  # stale, not current
    optimizer.close()
    # initial synchronous inversion at step 0; then snapshots at 0, 3, 6, 9 installed at 3, 6, 9
    assert staleness == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4]


def test_free_running_inversion_restarts_at_each_hand_over_and_logs_the_staleness_in_use() -> None:
    x, y = fashion(2048)
    optimizer = KFAC(mlp(), KFACConfig(inversion="async", damping=0.3))
    refresh = optimizer.refresh
    rng = np.random.default_rng(0)
    factors_at, staleness, ready_after = {}, [], []
    step = 0
    while len(refresh.history) < 3:
        assert step < 2000, "no third hand-over"
        index = rng.choice(len(x), 128, replace=False)
        factors_at[step] = optimizer.factors()
        staleness.append(optimizer.train_step(tf.constant(x[index]), tf.constant(y[index]))["inverse_staleness"])
        ready_after.append(refresh._all_ready())
        step += 1
    optimizer.close()
    installed = [r.installed_at for r in refresh.history]
    assert [r.snapshot_step for r in refresh.history] == [0, *installed[:-1]]  # restarted at each hand-over
    for r in refresh.history:  # the hand-over is the step after the first one that reported the result finished
        assert r.installed_at > r.snapshot_step and r.seconds > 0
        assert ready_after[r.installed_at - 1] and not any(ready_after[r.snapshot_step : r.installed_at - 1])
    sources = [max([0] + [r.snapshot_step for r in refresh.history if r.installed_at <= k]) for k in range(step)]
    assert staleness == [k - s for k, s in enumerate(sources)]
    last = refresh.history[-1]  # the inverses in use are those of the factors of the last snapshot
    block = optimizer.blocks[0]
    with threadpool_limits(limits=1, user_api="blas"):  # as the refresh computes a part of this size (run_parts)
        expected = block.compute_inverse(factors_at[last.snapshot_step]["hidden"], 0.3, "float32")
    for name in ("A_inverse", "G_inverse"):
        np.testing.assert_array_equal(block.inverse[name].numpy(), expected[name])


def test_training_with_asynchronous_inversion_converges_on_fashion_mnist() -> None:
    x, y = fashion(60000)
    rng = np.random.default_rng(1)
    batches = [rng.choice(len(x), 256, replace=False) for _ in range(100)]
    subset = rng.choice(len(x), 5000, replace=False)

    def final_loss(optimizer: KFAC | SGD) -> float:
        for index in batches:
            optimizer.train_step(tf.constant(x[index]), tf.constant(y[index]))
        logits = optimizer.model(x[subset])
        return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y[subset], logits)))

    asynchronous = KFAC(mlp(), KFACConfig(inversion="async", async_lag=5, damping=0.3))
    async_loss = final_loss(asynchronous)
    asynchronous.close()
    sgd_loss = final_loss(SGD(mlp(), SGDConfig(learning_rate=0.03)))
    print(f"\nFashion-MNIST 100 steps: K-FAC async (lag 5) {async_loss:.4f}, SGD {sgd_loss:.4f}")
    assert async_loss < 0.5 and async_loss < sgd_loss

