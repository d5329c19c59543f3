"""Precise BN (models/batch_norm_statistics.py): the recomputed population statistics against numpy's moments of
each BN layer's input, and the lag it removes from an inference-mode evaluation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kfac_repro.benchmarks.keras_suite.models import bn_cnn
from kfac_repro.keras import KFAC
from kfac_repro.models.batch_norm_statistics import batch_norm_layers, recompute_batch_norm_statistics


def _batches(seed: int, shape: tuple[int, ...], count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=shape) * rng.uniform(0.5, 3.0) + rng.normal()).astype("float32")
            for _ in range(count)]


def test_dense_statistics_are_the_mean_of_batch_moments():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.BatchNormalization(momentum=0.99)])
    batches = _batches(1, (16, 5))
    assert recompute_batch_norm_statistics(model, batches) == 1
    layer = model.layers[0]
    np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean([b.mean(0) for b in batches], axis=0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), np.mean([b.var(0) for b in batches], axis=0),
                               rtol=1e-5)
    assert layer.momentum == 0.99


def test_second_layer_sees_the_first_normalised_with_batch_statistics():
    keras.utils.set_random_seed(0)
    conv = keras.layers.Conv2D(3, 2, use_bias=False)
    first, second = keras.layers.BatchNormalization(), keras.layers.BatchNormalization()
    inner = keras.Sequential([keras.Input((5, 5, 2)), first, conv])
    model = keras.Sequential([keras.Input((5, 5, 2)), inner, second])  # a nested model's layers count too
    batches = _batches(2, (8, 5, 5, 2))
    kernel = conv.kernel.numpy().copy()
    assert recompute_batch_norm_statistics(model, batches) == 2
    normalised = [(b - b.mean((0, 1, 2))) / np.sqrt(b.var((0, 1, 2)) + first.epsilon) for b in batches]
    outputs = [keras.ops.convert_to_numpy(conv(x)) for x in normalised]  # gamma 1, beta 0 at initialisation
    np.testing.assert_allclose(first.moving_variance.numpy(), np.mean([b.var((0, 1, 2)) for b in batches], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(second.moving_mean.numpy(), np.mean([o.mean((0, 1, 2)) for o in outputs], 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(second.moving_variance.numpy(), np.mean([o.var((0, 1, 2)) for o in outputs], 0),
                               rtol=1e-4)
    np.testing.assert_array_equal(conv.kernel.numpy(), kernel)


def test_nothing_to_recompute_and_bad_input():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert recompute_batch_norm_statistics(model, iter(())) == 0
    with_bn = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9)])
    with pytest.raises(ValueError, match="no batch"):
        recompute_batch_norm_statistics(with_bn, [])
    assert with_bn.layers[0].momentum == 0.9
    renorm = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(renorm=True, name="rn")])
    with pytest.raises(ValueError, match="'rn' uses batch renormalisation"):
        batch_norm_layers(renorm)


def _quadrant_images(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """28×28 noise with one bright 14×14 quadrant, the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    images = rng.normal(0.0, 0.3, (count, 28, 28, 1)).astype("float32")
    for quadrant in range(4):
        rows, cols = divmod(quadrant, 2)
        images[labels == quadrant, 14 * rows:14 * rows + 14, 14 * cols:14 * cols + 14] += 1.0
    return images, labels.astype("int32")


def _error(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), -1) != y))


def test_removes_the_moving_average_lag():
    keras.utils.set_random_seed(0)
    model = bn_cnn(0.25)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _quadrant_images(0, 640)
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)  # 10 steps: momentum 0.99 lags
    x_test, y_test = _quadrant_images(1, 400)
    lagging = _error(model, x_test, y_test)
    recompute_batch_norm_statistics(model, [x[k * 100:(k + 1) * 100] for k in range(5)])
    precise = _error(model, x_test, y_test)
    assert precise < 0.1 and lagging > 0.5, (lagging, precise)


def test_k_fac_trains_on_after_a_recomputation():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(3)])
    model.compile(optimizer=KFAC(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _batches(3, (64, 4), 1)[0], np.arange(64) % 3
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    recompute_batch_norm_statistics(model, [x[:32]])  # eager: K-FAC's taps record nothing of it
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert not np.array_equal(before[0], after[0])
    model.optimizer.close()
