"""The learning rate acts in `fit`: η = learning_rate · min(1, √(kl_clip / vᵀg)), so that a schedule or a callback
that changes the learning rate changes the update in proportion, even where the KL bound sets every step; and
`KFACDiagnostics` reports η, the KL bound, the damping and the staleness in `fit`'s logs, History and TensorBoard."""

import itertools
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.keras import KFAC, KFACDiagnostics

SCCE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH, D_IN, CLASSES = 32, 8, 3


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * BATCH, D_IN)).astype("float32")
    return x, np.argmax(x @ rng.normal(size=(D_IN, CLASSES)), axis=1).astype("int32")


def mlp(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(CLASSES)])


def flat(model: keras.Model) -> np.ndarray:
    return np.concatenate([keras.ops.convert_to_numpy(v).ravel() for v in model.trainable_variables])


def increments(learning_rate: object, x: np.ndarray, y: np.ndarray, steps: int) -> tuple[list, list]:
    """Each step's momentum increment α·d = (θ_k − θ_{k+1}) − μ (θ_{k−1} − θ_k), and its η and KL flag."""
    model = mlp()
    # c 0.01 at this batch (not 0.01 · 32/1024): steps large enough to compare beside float32's resolution
    optimizer = KFAC(model, learning_rate=learning_rate, kl_clip_batch=BATCH)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    thetas, steps_taken = [flat(model)], []

    def record(batch: int, logs: object = None) -> None:
        thetas.append(flat(model))
        steps_taken.append(optimizer.last_step())

    model.fit(x[: steps * BATCH], y[: steps * BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=record)])
    optimizer.close()
    momentum = optimizer.config.momentum
    updates = [a - b for a, b in itertools.pairwise(thetas)]
    return [updates[0]] + [u - momentum * prior for prior, u in itertools.pairwise(updates)], steps_taken


def test_a_schedule_that_halves_the_learning_rate_halves_the_step_the_kl_bound_set(data: tuple) -> None:
    x, y = data
    constant, constant_steps = increments(1.0, x, y, steps=3)
    halved = keras.optimizers.schedules.PiecewiseConstantDecay([0], [1.0, 0.5])  # step 0: 1, then 0.5
    scheduled, scheduled_steps = increments(halved, x, y, steps=3)
    assert constant_steps[1]["kl_bound_set"] == 1.0 and constant_steps[1]["step_size"] < 0.5, \
        "the KL bound must set the step here, as with the default kl_clip (else the old rule would pass too)"
    np.testing.assert_allclose(scheduled[0], constant[0], rtol=1e-6, atol=1e-9)  # the same learning rate at step 0
    np.testing.assert_allclose(scheduled[1], 0.5 * constant[1], rtol=1e-4, atol=1e-8)
    assert scheduled_steps[1]["step_size"] == pytest.approx(0.5 * constant_steps[1]["step_size"], rel=1e-5)
    assert np.linalg.norm(constant[1]) > 1e-3


def test_reduce_lr_on_plateau_changes_the_weights(data: tuple) -> None:
    x, y = data
    trained = {}
    for reduce in (False, True):
        model = mlp()
        optimizer = KFAC(model)
        model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
        callbacks = [keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0,
                                                       cooldown=5)] if reduce else []  # once: 1 → 0.5
        model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
        optimizer.close()
        trained[reduce] = (flat(model), float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    assert trained[True][1] == 0.5 and trained[False][1] == 1.0  # η stays below 0.5 here: a cap would not act
    assert np.abs(trained[True][0] - trained[False][0]).max() > 1e-3


def test_diagnostics_reach_the_batch_logs_the_history_and_tensorboard(data: tuple, tmp_path: Path) -> None:
    x, y = data
    model = mlp()
    optimizer = KFAC(model, inverse_every=3, weight_decay=1e-3)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    seen: list[dict] = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(
        {**logs, "own": optimizer.last_step()}))
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                        callbacks=[KFACDiagnostics(log_dir=str(tmp_path / "kfac")), record])
    optimizer.close()
    steps = 2 * len(x) // BATCH
    assert len(seen) == steps
    # sync refreshes every 3 steps: the first step inverts its own statistics, then steps 3, 6, … install new ones
    assert [s["kfac_staleness"] for s in seen] == [float(k % 3) for k in range(steps)]
    assert [s["kfac_step_size"] for s in seen] == [s["own"]["step_size"] for s in seen]
    assert all(s["kfac_damping"] == pytest.approx(0.1 + 1e-3) for s in seen)
    assert seen[steps // 2 - 1]["kfac_kl_bound_share"] == pytest.approx(
        np.mean([s["kfac_kl_bound_set"] for s in seen[: steps // 2]]))
    assert [s["kfac_inversion_seconds"] > 0 for s in seen] == [k % 3 == 0 and k > 0 for k in range(steps)]
    for name in ("kfac_step_size", "kfac_kl_bound_share", "kfac_damping", "kfac_staleness", "kfac_inversion_seconds"):
        assert len(history.history[name]) == 2, name
    assert history.history["kfac_staleness"][0] == pytest.approx(np.mean([k % 3 for k in range(steps // 2)]))
    assert history.history["kfac_step_size"][1] == pytest.approx(
        np.mean([s["kfac_step_size"] for s in seen[steps // 2:]]))

    written: dict[str, list[tuple[int, float]]] = {}
    for path in (tmp_path / "kfac").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                written.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert {"kfac/step_size", "kfac/kl_bound_share", "kfac/damping", "kfac/staleness"} <= set(written)
    assert written["kfac/staleness"] == [(k, float(k % 3)) for k in range(steps)]
    assert [v for _, v in written["kfac/step_size"]] == pytest.approx([s["kfac_step_size"] for s in seen])


def test_diagnostics_refuse_a_model_compiled_without_kfac(data: tuple) -> None:
    x, y = data
    model = mlp()
    model.compile(optimizer="adam", loss=SCCE_LOGITS)
    with pytest.raises(ValueError, match=r"not kfac_repro\.keras\.KFAC"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[KFACDiagnostics()])
