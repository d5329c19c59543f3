"""`kl_clip_batch` B₀: a batch of B examples is bounded by c·B/B₀ (Eq. 14's c scaled with the batch), the same in
the host loop and in `fit`, where B is the update's global batch (the replicas' examples together)."""

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.keras import KFAC
from kfac_repro.kfac import KFAC as CoreKFAC
from kfac_repro.kfac import KFACConfig

SCCE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH, D_IN, CLASSES, STEPS = 32, 8, 3, 3


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, D_IN)).astype("float32")
    return x, np.argmax(x @ rng.normal(size=(D_IN, CLASSES)), axis=1).astype("int32")


def mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(CLASSES)])


def fitted(**settings: object) -> tuple[np.ndarray, list[float]]:
    """The weights after STEPS steps of `fit` and each step's η (`last_step`)."""
    x, y = data()
    model = mlp()
    optimizer = KFAC(model, stats_every=1, inverse_every=1, **settings)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    steps: list[float] = []
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(optimizer.last_step()["step_size"]))])
    optimizer.close()
    return np.concatenate([np.ravel(w) for w in model.get_weights()]), steps


def host_loop(**settings: object) -> np.ndarray:
    x, y = data()
    model = mlp()
    core = CoreKFAC(model, KFACConfig(damping=0.1, stats_every=1, inverse_every=1, **settings))
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        core.train_step(tf.constant(x[batch]), tf.constant(y[batch]))
    core.close()
    return np.concatenate([np.ravel(w) for w in model.get_weights()])


def test_fit_bounds_a_batch_of_b_by_c_times_b_over_b0() -> None:
    scaled, scaled_steps = fitted(kl_clip=0.01, kl_clip_batch=4 * BATCH)
    plain, plain_steps = fitted(kl_clip=0.0025, kl_clip_batch=None)  # 0.01 · 32/128 at every batch
    larger, larger_steps = fitted(kl_clip=0.01, kl_clip_batch=None)
    assert all(step < 1.0 for step in plain_steps), "the KL bound must set every step, else c would not show"
    np.testing.assert_allclose(scaled_steps, plain_steps, rtol=1e-5)
    np.testing.assert_allclose(scaled, plain, rtol=1e-5, atol=1e-6)
    assert larger_steps[0] > 1.9 * plain_steps[0]  # √4 = 2 on the first step, whose direction is the same
    assert np.abs(larger - plain).max() > 1e-3


def test_host_loop_bounds_a_batch_of_b_by_c_times_b_over_b0() -> None:
    scaled = host_loop(kl_clip=0.01, kl_clip_batch=BATCH // 2)
    np.testing.assert_allclose(scaled, host_loop(kl_clip=0.02), rtol=1e-5, atol=1e-6)  # 0.01 · 32/16
    assert np.abs(scaled - host_loop(kl_clip=0.01)).max() > 1e-3
