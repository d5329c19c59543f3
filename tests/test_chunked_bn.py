"""ChunkedBatchNormalization: per-chunk statistics (the paper's rbz), moving statistics, y = γ x̂ + β, config."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.models.chunked_bn import ChunkedBatchNormalization

EPSILON = 1e-3


def numpy_chunked_bn(x: np.ndarray, chunk: int, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Reference: each run of `chunk` consecutive examples normalised with its own mean/variance over (N, H, W)."""
    out = np.empty_like(x)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        mean = part.mean(axis=(0, 1, 2))
        variance = part.var(axis=(0, 1, 2))
        out[start:start + chunk] = gamma * (part - mean) / np.sqrt(variance + EPSILON) + beta
    return out


def _layer(chunk_size: int | None, channels: int = 4) -> ChunkedBatchNormalization:
    layer = ChunkedBatchNormalization(chunk_size=chunk_size, epsilon=EPSILON, momentum=0.9)
    layer.build((None, 3, 3, channels))
    rng = np.random.default_rng(1)
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    layer.beta.assign(rng.normal(size=channels).astype(np.float32))
    return layer


def _inputs(batch: int = 8, channels: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    # chunks with clearly different statistics: example b is shifted by b and scaled by 1 + b/4
    shift = np.arange(batch, dtype=np.float32)[:, None, None, None]
    return (rng.normal(size=(batch, 3, 3, channels)) * (1 + shift / 4) + shift).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [4, 3, 2], ids=["divisible", "smaller-last-chunk", "rbz2"])
def test_training_normalises_each_chunk_with_its_own_statistics(chunk_size: int) -> None:
    layer, x = _layer(chunk_size), _inputs()
    y = layer(x, training=True).numpy()
    expected = numpy_chunked_bn(x, chunk_size, layer.gamma.numpy(), layer.beta.numpy())
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    whole_batch = numpy_chunked_bn(x, len(x), layer.gamma.numpy(), layer.beta.numpy())
    assert np.max(np.abs(y - whole_batch)) > 0.1


def test_no_chunk_size_is_keras_whole_batch_bn() -> None:
    x = _inputs()
    chunked = _layer(None)
    reference = keras.layers.BatchNormalization(epsilon=EPSILON, momentum=0.9)
    reference.build(x.shape)
    reference.set_weights(chunked.get_weights())
    np.testing.assert_allclose(chunked(x, training=True), reference(x, training=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(chunked.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-5)
    np.testing.assert_allclose(chunked(x, training=False), reference(x, training=False), rtol=1e-4, atol=1e-4)


def test_moving_statistics_are_the_mean_of_chunk_statistics_and_used_at_inference() -> None:
    layer, x = _layer(4), _inputs()
    layer(x, training=True)
    chunks = x.reshape(2, 4, 3, 3, 4)
    chunk_means = chunks.mean(axis=(1, 2, 3))
    chunk_vars = chunks.var(axis=(1, 2, 3))
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * chunk_means.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * chunk_vars.mean(axis=0), rtol=1e-4)
    inference = layer(x, training=False).numpy()
    x_hat = (x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + EPSILON)
    np.testing.assert_allclose(inference, layer.gamma.numpy() * x_hat + layer.beta.numpy(), rtol=1e-4, atol=1e-4)


def test_output_is_gamma_times_x_hat_plus_beta() -> None:
    layer, x = _layer(4), _inputs()
    y = layer(x, training=True).numpy()
    x_hat = (y - layer.beta.numpy()) / layer.gamma.numpy()  # what K-FAC recovers from the output
    chunk = x_hat[:4]
    np.testing.assert_allclose(chunk.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(chunk.var(axis=(0, 1, 2)), 1.0, atol=2e-3)  # var / (var + ε)
    for attribute in ("gamma", "beta", "center", "scale", "axis", "epsilon"):
        assert hasattr(layer, attribute)


def test_works_in_a_traced_function_with_unknown_batch_size() -> None:
    layer, x = _layer(4), _inputs()
    traced = tf.function(lambda t: layer(t, training=True),
                         input_signature=[tf.TensorSpec([None, 3, 3, 4], tf.float32)])
    np.testing.assert_allclose(traced(x[:6]), numpy_chunked_bn(x[:6], 4, layer.gamma.numpy(), layer.beta.numpy()),
                               rtol=1e-4, atol=1e-4)


def test_gradients_flow_through_the_chunk_statistics() -> None:
    layer, x = _layer(4), tf.constant(_inputs())
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, training=True) ** 3)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    # the per-chunk mean is subtracted, so the input gradient sums to zero within every chunk and channel
    np.testing.assert_allclose(grads[0].numpy().reshape(2, -1, 4).sum(axis=1), 0.0, atol=1e-2)


def test_config_round_trip_and_validation() -> None:
    layer = ChunkedBatchNormalization(chunk_size=128, epsilon=1e-5, name="bn")
    clone = ChunkedBatchNormalization.from_config(layer.get_config())
    assert (clone.chunk_size, clone.epsilon, clone.name) == (128, 1e-5, "bn")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ChunkedBatchNormalization) and restored.chunk_size == 128
    for bad in (0, -32, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            ChunkedBatchNormalization(chunk_size=bad)
    with pytest.raises(ValueError, match="renorm"):
        ChunkedBatchNormalization(chunk_size=32, renorm=True)
