"""keras.KFAC composes with Keras's own optimizer features, handled by Keras's `apply` around K-FAC's update:
gradient clipping, EMA of the weights, gradient accumulation, loss scaling under mixed_float16 (and
mixed_bfloat16 without a float32 output layer), and learning-rate schedules for η_max."""

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest

from kfac_repro.keras import KFAC, load_model

SCCE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH = 32


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * BATCH, 12)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int32")


def mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])


def fit(settings: dict[str, Any], epochs: int = 1) -> tuple[keras.Model, list[list[np.ndarray]], list[float]]:
    """Fit 4 steps per epoch; the weights after every step (as on_train_batch_end sees them) and the losses."""
    x, y = data()
    model = mlp()
    optimizer = KFAC(model, **settings)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    seen: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append([np.array(w) for w in model.get_weights()]))
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=[record])
    optimizer.close()
    return model, seen, history.history["loss"]


def largest_move(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("clip", [{"clipnorm": 1e-8}, {"global_clipnorm": 1e-8}, {"clipvalue": 1e-9}])
def test_clipped_gradients_reach_the_kfac_update(clip: dict[str, float]) -> None:
    """With η = min(η_max, √(c / vᵀg)) and c large, η_max binds and the update is η_max·F̂⁻¹g: gradients clipped
    to ~1e-8 move the weights by ~1e-7; unclipped ones by far more."""
    start = mlp().get_weights()
    _, clipped, _ = fit({"kl_clip": 1e6, **clip})
    _, free, _ = fit({"kl_clip": 1e6})
    assert largest_move(clipped[-1], start) < 1e-5
    assert largest_move(free[-1], start) > 1e-2


def test_ema_of_the_weights_is_installed_at_the_end_of_fit() -> None:
    model, seen, _ = fit({"use_ema": True, "ema_momentum": 0.5})
    average = seen[0]  # Keras's EMA: the first step's weights, then m·average + (1 − m)·weights
    for weights in seen[1:]:
        average = [0.5 * a + 0.5 * w for a, w in zip(average, weights, strict=True)]
    for ours, expected in zip(model.get_weights(), average, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    assert largest_move(seen[-1], average) > 1e-4  # the EMA differs from the last weights


def test_gradient_accumulation_updates_every_second_batch_and_counts_kfac_steps_in_updates() -> None:
    x, y = data()
    model = mlp()
    optimizer = KFAC(model, gradient_accumulation_steps=2, inverse_every=1, stats_every=1)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    seen: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append([np.array(w) for w in model.get_weights()]))
    start = model.get_weights()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    engine = optimizer._binding.refresh.engine
    optimizer.close()
    assert largest_move(seen[0], start) == 0 and largest_move(seen[2], seen[1]) == 0
    assert largest_move(seen[1], seen[0]) > 1e-3 and largest_move(seen[3], seen[2]) > 1e-3
    assert [r.installed_at for r in engine.history] == [1]  # update 0: the first inversion; update 1: a refresh
    assert int(optimizer.preconditioner.stats_updates.numpy()) == 3  # the first step's own statistics, 2 updates


def test_learning_rate_schedule_sets_the_largest_step() -> None:
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [1.0, 0.0])  # η_max 0 from step 2 on
    _, seen, _ = fit({"learning_rate": schedule, "momentum": 0.0})
    assert largest_move(seen[1], seen[0]) > 1e-3
    assert largest_move(seen[3], seen[1]) == 0


@pytest.fixture
def policy() -> Iterator[None]:
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_as_keras_documents_it_trains_as_float32_does(policy: None, name: str) -> None:
    """mixed_float16: Keras wraps the optimizer in a LossScaleOptimizer (its update then runs inside a
    conditional); both policies with the output layer in the low precision too."""
    short = {"kl_clip_batch": BATCH}  # c = 0.01 at this batch of 32 (not 0.01 · 32/1024), so that 12 steps train
    _, _, reference = fit(short, epochs=3)
    keras.mixed_precision.set_global_policy(name)
    model, _, losses = fit(short, epochs=3)
    if name == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.layers[-1].compute_dtype != "float32"
    np.testing.assert_allclose(losses, reference, rtol=0.02)
    assert losses[-1] < 0.5 * losses[0]


def test_keras_options_survive_get_config() -> None:
    optimizer = KFAC(mlp(), clipnorm=0.5, use_ema=True, gradient_accumulation_steps=3, damping=0.2)
    restored = KFAC.from_config(optimizer.get_config())
    assert (restored.clipnorm, restored.use_ema, restored.gradient_accumulation_steps) == (0.5, True, 3)
    assert restored.config.damping == 0.2
    optimizer.close()


@pytest.mark.fashion_mnist
def test_optimizer_map_kfac_on_conv_and_dense_muon_on_the_rest_trains_a_cnn_on_fashion_mnist() -> None:
    """Inside a MultiOptimizer K-FAC trains the variables the OptimizerMap gives it: the layers whose variables
    are all its own get blocks, the others (BatchNormalization here, trained by Muon) pass through."""
    from kfac_repro.data.fashion_mnist import load_fashion_mnist

    (images, labels), _ = load_fashion_mnist()
    x, y = (images[:1024, :, :, None] / np.float32(255.0)).astype("float32"), labels[:1024].astype("int32")

    def cnn() -> keras.Model:
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, strides=2, name="conv"),
                                 keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
                                 keras.layers.Flatten(), keras.layers.Dense(10, name="out")])

    def train(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> float:
        model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
        return model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0).history["loss"][-1]

    model = cnn()
    kfac = KFAC(model, stats_every=1, inverse_every=10)  # 48 steps: the default inverses every 50 would never refresh
    combined = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        keras.optimizers.Muon(learning_rate=0.01), {".*/conv/.*": kfac, ".*/out/.*": kfac}))
    bn_before = [np.array(v) for v in model.get_layer("bn").trainable_variables]
    loss = train(model, combined)
    assert [b.name for b in kfac.preconditioner.blocks] == ["conv", "out"]
    assert [v.path for v in kfac.preconditioner.params] == [
        v.path for name in ("conv", "out") for v in model.get_layer(name).trainable_variables]
    assert not any("bn" in v.name for v in kfac.variables)  # no velocities, factors or inverses for BN
    taken = len(range(0, 48, kfac.config.stats_every))  # statistics at steps 0, k, 2k, ... (k = stats_every)
    assert int(kfac.iterations.numpy()) == 48 and int(kfac.preconditioner.stats_updates.numpy()) == 1 + taken
    assert all(np.abs(np.array(v) - b).max() > 1e-3
               for v, b in zip(model.get_layer("bn").trainable_variables, bn_before, strict=True))  # Muon's
    kfac.close()
    muon_alone = train(cnn(), keras.optimizers.Muon(learning_rate=0.01))
    assert loss < 0.4 and loss < 0.9 * muon_alone


def test_plain_keras_load_model_finds_the_class_and_names_what_is_missing(tmp_path: object) -> None:
    x, y = data()
    model = mlp()
    model.compile(optimizer=KFAC(model), loss=SCCE_LOGITS)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    path = f"{tmp_path}/model.keras"
    model.save(path)
    model.optimizer.close()
    loaded = keras.models.load_model(path)  # no custom_objects: the class is registered
    assert isinstance(loaded.optimizer, KFAC)
    with pytest.raises(ValueError, match=r"deserialized without one\. Load models with kfac_repro\.keras\.load_model"):
        loaded.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    loaded.optimizer.attach(loaded)
    loaded.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations.numpy()) == 8
    loaded.optimizer.close()


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_saved_in_either_format_and_loaded_fit_continues_exactly(tmp_path: object, extension: str) -> None:
    """With use_ema, whose averages Keras creates when it builds the optimizer (on loading: before K-FAC's state
    exists): every optimizer variable comes back under its path with its value, and one more epoch gives the
    weights of the uninterrupted run."""
    x, y = data()
    model = mlp()
    model.compile(optimizer=KFAC(model, use_ema=True, inverse_every=3), loss=SCCE_LOGITS)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    path = f"{tmp_path}/model.{extension}"
    model.save(path)
    loaded = load_model(path)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    assert any("average" in v.path for v in model.optimizer.variables)
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored), keras.ops.convert_to_numpy(saved),
                                      err_msg=saved.path)
    for each in (model, loaded):
        each.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        each.optimizer.close()
    assert int(loaded.optimizer.iterations.numpy()) == 8
    for ours, expected in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)


def test_kfac_made_outside_the_strategy_scope_of_its_model_is_refused_by_name() -> None:
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = mlp()
    with pytest.raises(ValueError, match=r"built in a MirroredStrategy's scope: make KFAC\(model\) \(and compile\) "
                                         r"inside that `strategy.scope\(\)` too"):
        KFAC(model)
    with strategy.scope():
        KFAC(model).close()


def test_compiling_kfac_into_another_model_names_the_model_it_was_made_for() -> None:
    x, y = data()
    first, other = mlp(), mlp()
    optimizer = KFAC(first)
    other.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    with pytest.raises(ValueError, match=rf"made for model {first.name!r}, and .* are not its variables: give the "
                                         r"model you compile its own KFAC\(model\)"):
        other.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    optimizer.close()
