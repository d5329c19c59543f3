"""One engine under both front ends: on the same model, data and seed, `kfac.KFAC` (the host loop) and `keras.KFAC`
(`model.fit`) install the same inverses before the same steps and take the same updates — a synchronous refresh,
an asynchronous one pinned at a fixed lag, statistics every other step (and on a sub-batch), and the inversion's
device and threads; and in EKFAC mode (`eigenvalue_correction`) the same eigenbases, scalings and updates."""

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.data.fashion_mnist import load_fashion_mnist
from kfac_repro.keras import KFAC
from kfac_repro.keras.optimizer import keras_config
from kfac_repro.kfac import KFAC as CoreKFAC
from tests.test_keras_fit import SCCE_LOGITS, pooled_mlp

pytestmark = pytest.mark.fashion_mnist  # skipped, saying why, where the data set is absent

BATCH, STEPS = 64, 10


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    (x, y), _ = load_fashion_mnist()
    return (x[: BATCH * STEPS, :, :, None] / np.float32(255.0)).astype("float32"), y[: BATCH * STEPS].astype("int32")


def inverses(blocks: list) -> list[np.ndarray]:
    """Every block's installed inverse and scaling (EKFAC's)."""
    return [np.array(var.numpy()) for block in blocks for var in (*block.inverse.values(), *block.scaling.values())]


@pytest.mark.parametrize("settings", [
    {"inversion": "sync", "inverse_every": 3},
    {"inversion": "async", "async_lag": 2},
    {"inversion": "sync", "inverse_every": 4, "stats_every": 2, "kl_bound": "update"},
    {"inversion": "async", "async_lag": 3, "stats_every": 2, "stats_batch_size": 16},
    {"inversion": "sync", "inverse_every": 3, "inversion_device": "accelerator", "inversion_threads": 1},
    # EKFAC refreshed before steps 3, 6 and 9: steps 3 and 9 take no statistics, so they precondition with s = a gᵀ
    {"inversion": "sync", "inverse_every": 3, "stats_every": 2, "eigenvalue_correction": True},
    {"inversion": "async", "async_lag": 2, "eigenvalue_correction": True},
    {"inversion": "sync", "inverse_every": 3, "kl_clip_batch": 4 * BATCH},  # each front end's batch B in c·B/B₀
], ids=["sync", "async-lag-2", "stats-every-2", "stats-sub-batch", "device-threads", "ekfac-stats-every-2",
        "ekfac-async-lag-2", "kl-clip-batch"])
def test_host_loop_and_fit_install_the_same_inverses_at_the_same_steps_and_take_the_same_updates(
        fashion: tuple, settings: dict[str, Any]) -> None:
    x, y = fashion
    common = {"damping": 0.1, "kl_bound": "increment", "fisher_targets": "sample", "seed": 3, "stats_every": 1,
              **settings}

    core_model = pooled_mlp()
    core = CoreKFAC(core_model, keras_config(common))  # the Keras defaults where `common` is silent
    core_inverses, core_weights = [], []
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        core.train_step(tf.constant(x[batch]), tf.constant(y[batch]))
        core_inverses.append(inverses(core.blocks))
        core_weights.append([v.numpy() for v in core_model.trainable_variables])
    core.close()

    keras_model = pooled_mlp()
    optimizer = KFAC(keras_model, **common)
    keras_model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    fit_inverses, fit_weights = [], []

    def record(batch: int, logs: object = None) -> None:
        fit_inverses.append(inverses(optimizer.preconditioner.blocks))
        fit_weights.append([keras.ops.convert_to_numpy(v) for v in keras_model.trainable_variables])

    keras_model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                    callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=record)])
    engine = optimizer._binding.refresh.engine
    optimizer.close()

    installed = [(r.snapshot_step, r.installed_at) for r in core.refresh.history]
    assert installed, "no refresh after the first step: the test would not compare the schedules"
    assert [(r.snapshot_step, r.installed_at) for r in engine.history] == installed
    if settings["inversion"] == "async":  # the first snapshot, taken at step 0, installed `async_lag` steps later
        lag = settings["async_lag"]
        assert installed[:2] == [(0, lag), (lag, 2 * lag)]
    for step in range(STEPS):
        for ours, theirs in zip(fit_inverses[step], core_inverses[step], strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=1e-5, err_msg=f"inverses after step {step}")
        for ours, theirs in zip(fit_weights[step], core_weights[step], strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6, err_msg=f"weights after step {step}")
    changed = [not np.allclose(a, b) for a, b in zip(core_inverses[0], core_inverses[-1], strict=True)]
    assert any(changed), "the inverses never changed: the test would not compare refreshes"


def test_fit_free_running_hands_over_after_every_replica_reported_and_restarts_at_each_hand_over(
        fashion: tuple) -> None:
    """No fixed schedule to compare (it depends on timing): the engine's rules hold as in the host loop's test."""
    x, y = fashion
    model = pooled_mlp()
    optimizer = KFAC(model, inversion="async", async_lag=None, damping=0.1)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    engine = optimizer._binding.refresh.engine
    for _ in range(10):  # how many steps an inversion spans depends on the machine's load: fit until two hand-overs
        model.fit(np.concatenate([x] * 3), np.concatenate([y] * 3), batch_size=BATCH, epochs=1, shuffle=False,
                  verbose=0)
        if len(engine.history) >= 2:
            break
    optimizer.close()
    history = engine.history
    assert len(history) >= 2, "no second hand-over in 300 steps"
    installed = [r.installed_at for r in history]
    assert [r.snapshot_step for r in history] == [0, *installed[:-1]]  # restarted at each hand-over
    assert all(r.installed_at > r.snapshot_step for r in history)  # reported during a step, installed after it
