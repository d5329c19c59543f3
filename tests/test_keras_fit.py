"""K-FAC in Keras's own loop (kfac_repro.keras.KFAC): fit/evaluate/predict with metrics and callbacks on real
Fashion-MNIST, the first update equal to the core optimizer's, exact resumption from BackupAndRestore,
tf.train.Checkpoint and model.save, and `trainable` changes refused in both APIs (MirroredStrategy:
test_keras_mirrored.py)."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.data.fashion_mnist import load_fashion_mnist
from kfac_repro.keras import KFAC, load_model
from kfac_repro.keras.optimizer import KERAS_DEFAULTS, keras_config
from kfac_repro.kfac import KFAC as CoreKFAC
from kfac_repro.kfac import KFACConfig

SCCE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    (x, y), _ = load_fashion_mnist()
    return (x[:1024, :, :, None] / np.float32(255.0)).astype("float32"), y[:1024].astype("int32")


def pooled_mlp(pool: int = 4, hidden: int = 32, seed: int = 0, outputs: int = 10,
               activation: str | None = None) -> keras.Model:
    """Fashion-MNIST average-pooled to (28/pool)², one hidden layer: small enough for fast tests."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.AveragePooling2D(pool), keras.layers.Flatten(),
                             keras.layers.Dense(hidden, activation="relu"),
                             keras.layers.Dense(outputs, activation=activation)])


def weights(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def assert_same_weights(a: keras.Model, b: keras.Model) -> None:
    for u, v in zip(weights(a), weights(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_fit_with_metrics_and_callbacks_beats_sgd_momentum(fashion: tuple, tmp_path: Path) -> None:
    x, y = fashion
    losses = {}
    for name in ("kfac", "sgd"):
        model = pooled_mlp(pool=2, hidden=64)
        optimizer = KFAC(model) if name == "kfac" else keras.optimizers.SGD(0.05, momentum=0.9)
        model.compile(optimizer=optimizer, loss=SCCE_LOGITS, metrics=["accuracy"])
        callbacks = [keras.callbacks.EarlyStopping(monitor="loss", patience=3),
                     keras.callbacks.TensorBoard(log_dir=str(tmp_path / name / "logs")),
                     keras.callbacks.ModelCheckpoint(str(tmp_path / name / "best.keras"), monitor="loss")]
        history = model.fit(x[:768], y[:768], batch_size=64, epochs=3, shuffle=False, verbose=0,
                            validation_data=(x[768:], y[768:]), callbacks=callbacks)
        assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert len(history.history["loss"]) == 3
        losses[name] = model.evaluate(x[:768], y[:768], verbose=0, return_dict=True)["loss"]
        assert model.predict(x[:5], verbose=0).shape == (5, 10)
        assert any((tmp_path / name / "logs").rglob("events.out.tfevents.*"))
    assert losses["kfac"] < losses["sgd"]
    restored = load_model(str(tmp_path / "kfac" / "best.keras"))
    assert isinstance(restored.optimizer, KFAC)
    assert int(restored.optimizer.iterations.numpy()) == 36


@pytest.mark.parametrize("kl_bound", ["update", "increment"])
def test_first_update_and_factors_equal_the_core_optimizer(fashion: tuple, kl_bound: str) -> None:
    x, y = fashion[0][:128], fashion[1][:128]
    settings = {"damping": 0.1, "fisher_targets": "exact", "inverse_every": 10, "kl_bound": kl_bound}
    core_model, keras_model = pooled_mlp(), pooled_mlp()
    core = CoreKFAC(core_model, keras_config(settings))  # the Keras defaults where `settings` are silent
    core.train_step(tf.constant(x), tf.constant(y))
    optimizer = KFAC(keras_model, **settings)
    keras_model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    keras_model.fit(x, y, batch_size=128, epochs=1, shuffle=False, verbose=0)
    for ours, theirs in zip(optimizer.preconditioner.factors().values(), core.factors().values(), strict=True):
        for name, value in theirs.items():
            np.testing.assert_allclose(ours[name], value, rtol=1e-4, atol=1e-6)
    assert_same_weights(core_model, keras_model)
    core.close()


def _interrupting(epoch: int) -> keras.callbacks.Callback:
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, index: int, logs: object = None) -> None:
            if index == epoch:
                raise RuntimeError("interrupted")

    return Interrupt()


@pytest.mark.parametrize("inversion", ["sync", "async"])
def test_backup_and_restore_resumes_exactly(fashion: tuple, tmp_path: Path, inversion: str) -> None:
    x, y = fashion[0][:256], fashion[1][:256]
    settings = {"inverse_every": 3, "inversion": inversion}

    epochs: list[int] = []
    count = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))

    def fit(callbacks: list, seed: int = 0) -> keras.Model:
        model = pooled_mlp(seed=seed)
        model.compile(optimizer=KFAC(model, **settings), loss=SCCE_LOGITS, metrics=["accuracy"])
        model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    uninterrupted = fit([])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit([backup, _interrupting(epoch=1)])
    resumed = fit([keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), count], seed=1)  # other init
    assert epochs == [2]
    assert_same_weights(uninterrupted, resumed)


@pytest.mark.parametrize("ekfac", [False, True], ids=["kfac", "ekfac"])  # EKFAC: its scalings are state too
def test_checkpoint_and_saved_model_resume_exactly(fashion: tuple, tmp_path: Path, ekfac: bool) -> None:
    x, y = fashion[0][:256], fashion[1][:256]

    def compiled(seed: int = 0) -> keras.Model:
        model = pooled_mlp(seed=seed)
        model.compile(optimizer=KFAC(model, inverse_every=3, eigenvalue_correction=ekfac), loss=SCCE_LOGITS)
        return model

    def one_epoch(model: keras.Model) -> None:
        model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)

    reference = compiled()
    one_epoch(reference)
    checkpoint = tf.train.Checkpoint(model=reference, optimizer=reference.optimizer)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    reference.save(tmp_path / "model.keras")
    one_epoch(reference)

    from_checkpoint = compiled(seed=1)
    tf.train.Checkpoint(model=from_checkpoint, optimizer=from_checkpoint.optimizer).read(path).assert_consumed()
    one_epoch(from_checkpoint)
    assert_same_weights(reference, from_checkpoint)

    no_momentum = compiled(seed=1)  # control: with the velocities lost, the continued run differs
    tf.train.Checkpoint(model=no_momentum, optimizer=no_momentum.optimizer).read(path).assert_consumed()
    for variable in no_momentum.optimizer.variables:
        if "velocity" in variable.name:
            variable.assign(tf.zeros_like(variable))
    one_epoch(no_momentum)
    with pytest.raises(AssertionError):
        assert_same_weights(reference, no_momentum)

    loaded = load_model(str(tmp_path / "model.keras"))
    one_epoch(loaded)
    assert_same_weights(reference, loaded)


def test_trainable_change_after_construction_is_refused(fashion: tuple) -> None:
    x, y = fashion[0][:64], fashion[1][:64]
    model = pooled_mlp()
    model.compile(optimizer=KFAC(model), loss=SCCE_LOGITS)
    model.layers[2].trainable = False
    model.compile(optimizer=model.optimizer, loss=SCCE_LOGITS)
    with pytest.raises(ValueError, match=r"trainable variables of model .* changed after its optimizer was built"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    model.compile(optimizer=KFAC(model), loss=SCCE_LOGITS)  # a new optimizer for the new set trains, frozen stays
    frozen = keras.ops.convert_to_numpy(model.layers[2].kernel)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.layers[2].kernel), frozen)

    core_model = pooled_mlp()
    core = CoreKFAC(core_model, KFACConfig(damping=0.1))
    core_model.layers[2].trainable = False
    with pytest.raises(ValueError, match="changed after its optimizer was built"):
        core.train_step(tf.constant(x), tf.constant(y))
    core.close()


def test_layer_settings_reach_the_blocks_and_survive_get_config() -> None:
    """skip_layers and sequence_factors (issue 14's settings) work in the Keras API as in the core."""
    model = pooled_mlp()
    hidden = model.layers[2].name
    optimizer = KFAC(model, skip_layers=[hidden], sequence_factors="reduce")
    assert [b.name for b in optimizer.preconditioner.blocks] == [model.layers[3].name]
    assert "skip_layers" in optimizer.summary()
    config = optimizer.get_config()
    assert config["skip_layers"] == [hidden] and config["sequence_factors"] == "reduce"
    restored = KFAC.from_config(config)
    assert restored.config.skip_layers == (hidden,) and restored.config.sequence_factors == "reduce"
    optimizer.close()


def test_a_batch_with_a_nan_input_leaves_the_factors_usable(fashion: tuple) -> None:
    """Issue 36: a NaN input once made the factors NaN for good (every later fit raised at its first refresh, even
    after the weights were restored). Its statistics are skipped: the factors stay those before it."""
    x, y = fashion[0][:256].copy(), fashion[1][:256]
    model = pooled_mlp()
    optimizer = KFAC(model, inverse_every=2, stats_every=1)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    model.fit(x[:128], y[:128], batch_size=64, epochs=1, shuffle=False, verbose=0)
    clean_weights, clean_factors = model.get_weights(), optimizer.preconditioner.factors()
    velocities = [v for v in optimizer.variables if "velocity" in v.name]
    clean_velocities = [keras.ops.convert_to_numpy(v) for v in velocities]
    updates = int(optimizer.preconditioner.stats_updates.numpy())
    poisoned = x[128:192].copy()
    poisoned[5, 3, 3, 0] = np.nan
    model.fit(poisoned, y[128:192], batch_size=64, epochs=1, shuffle=False, verbose=0)
    assert int(optimizer.preconditioner.stats_updates.numpy()) == updates
    for block, factors in optimizer.preconditioner.factors().items():
        for name, value in factors.items():
            np.testing.assert_array_equal(value, clean_factors[block][name], err_msg=f"{block}/{name}")
    assert not np.isfinite(model.get_weights()[0]).all()  # the weights' fate is the user's: here restored
    model.set_weights(clean_weights)
    for variable, value in zip(velocities, clean_velocities, strict=True):
        variable.assign(value)
    history = model.fit(x[192:], y[192:], batch_size=64, epochs=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(v).all() for f in optimizer.preconditioner.factors().values() for v in f.values())
    assert int(optimizer.preconditioner.stats_updates.numpy()) == updates + 2
    optimizer.close()


def test_every_setting_means_what_it_means_in_the_host_loop_or_is_refused_by_name() -> None:
    model = pooled_mlp()
    for setting, value in {"polyak_decay": 0.99, "max_step_size": 0.5, "likelihood": "gaussian",
                           "from_logits": False}.items():
        with pytest.raises(TypeError, match=rf"{setting} does not apply in fit: "):
            KFAC(model, **{setting: value})
    with pytest.raises(TypeError, match=r"decay_target 'lr' does not apply in fit: give learning_rate a Keras"):
        KFAC(model, decay_target="lr")
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['dampnig'\]"):
        KFAC(model, dampnig=0.1)
    optimizer = KFAC(model, inversion="async", inversion_threads=2, inversion_device="accelerator", stats_every=3,
                     decay_every=5, stats_batch_size=32)
    assert optimizer.config.async_lag == 50  # the Keras default: pinned at inverse_every (50)
    assert {key: getattr(optimizer.config, key) for key in KERAS_DEFAULTS if key != "stats_every"} == {
        key: value for key, value in KERAS_DEFAULTS.items() if key != "stats_every"}
    inversion = optimizer._binding.refresh.engine.inversion
    assert inversion.threads == 2 and inversion.local_devices[0] is not None
    assert KFAC.from_config(optimizer.get_config()).config == optimizer.config
    optimizer.close()
    free = KFAC(pooled_mlp(), inversion="async", async_lag=None)
    assert free.config.async_lag is None and type(free._binding.refresh.engine.policy).__name__ == "FreeRunning"
    free.close()
