"""Conv factors (KFC and the cheap Appendix-A factors) against explicit loop-based patch computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from kfac_repro.kfac.blocks import fisher_factors as ff
from tests.numpy_reference import exact_logit_cotangents, patches_by_loops, with_ones

GEOMETRIES = [  # (kernel, stride, padding, dilation)
    (3, 1, "same", 1),
    (3, 2, "same", 1),
    (3, 1, "valid", 1),
    (3, 2, "valid", 1),
    (5, 2, "same", 1),
    (2, 2, "same", 1),
    (3, 1, "same", 2),
]


def conv_geometry(k: int, stride: int, padding: str, dilation: int) -> ff.ConvGeometry:
    return ff.ConvGeometry((k, k), (stride, stride), padding, (dilation, dilation))


@pytest.mark.parametrize(("k", "stride", "padding", "dilation"), GEOMETRIES)
def test_loop_patches_reproduce_keras_convolution(k: int, stride: int, padding: str, dilation: int) -> None:
    """Guards the reference itself: patches · reshaped kernel equals Keras's Conv2D output."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    layer = keras.layers.Conv2D(4, k, strides=stride, padding=padding, dilation_rate=dilation)
    y = layer(x).numpy()
    kernel, bias = (w.numpy() for w in layer.weights)
    patches = patches_by_loops(x, k, stride, padding, dilation)
    np.testing.assert_allclose(patches @ kernel.reshape(-1, 4) + bias, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ff.conv_patches(tf.constant(x), conv_geometry(k, stride, padding, dilation)),
                               patches, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("k", "stride", "padding", "dilation"), GEOMETRIES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_kfc_and_cheap_factors_equal_loop_computation(
    k: int, stride: int, padding: str, dilation: int, use_bias: bool
) -> None:
    rng = np.random.default_rng(1)
    batch, channels_out = 3, 4
    x = rng.normal(size=(batch, 7, 6, 2))
    patches = patches_by_loops(x, k, stride, padding, dilation)  # [B, Ho, Wo, P]
    _, out_h, out_w, size = patches.shape
    ds = [rng.normal(size=(batch, out_h, out_w, channels_out)) for _ in range(2)]  # two cotangent samples
    locations = out_h * out_w
    geometry = conv_geometry(k, stride, padding, dilation)
    hom = (lambda rows: with_ones(rows)) if use_bias else (lambda rows: rows)

    # KFC: A = mean over (b, t) of ā āᵀ, G = (1/B) Σ_k Σ_{b,t} ds dsᵀ   (|T| folded into G)
    a_rows = hom(patches.reshape(-1, size))
    kfc_a_expected = sum(np.outer(r, r) for r in a_rows) / (batch * locations)
    kfc_g_expected = sum(np.outer(v, v) for d in ds for v in d.reshape(-1, channels_out)) / batch
    kfc_a, kfc_g = ff.conv_kfc_factors(tf.constant(x, tf.float32), [tf.constant(d, tf.float32) for d in ds],
                                      tf.constant(batch), geometry, use_bias)
    np.testing.assert_allclose(kfc_a, kfc_a_expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(kfc_g, kfc_g_expected, rtol=1e-4, atol=1e-5)

    # Cheap (App. A): Ā_b = mean_t patch (homogeneous 1), D̄_b = Σ_t ds; A = E_b[Ā Āᵀ], G = E_b Σ_k D̄ D̄ᵀ
    mean_patch = hom(patches.reshape(batch, locations, size).mean(axis=1))
    cheap_a_expected = sum(np.outer(r, r) for r in mean_patch) / batch
    summed = [d.reshape(batch, locations, channels_out).sum(axis=1) for d in ds]
    cheap_g_expected = sum(np.outer(v, v) for s in summed for v in s) / batch
    cheap_a, cheap_g = ff.conv_cheap_factors(tf.constant(x, tf.float32), [tf.constant(d, tf.float32) for d in ds],
                                            tf.constant(batch), geometry, use_bias)
    np.testing.assert_allclose(cheap_a, cheap_a_expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cheap_g, cheap_g_expected, rtol=1e-4, atol=1e-5)


def test_location_sums_equal_numpy_with_static_and_unknown_spatial_sizes() -> None:
    maps = np.random.default_rng(2).normal(size=(3, 5, 4, 6)).astype(np.float32)
    expected = maps.sum(axis=(1, 2))
    np.testing.assert_allclose(ff.location_sums(tf.constant(maps)), expected, rtol=1e-5, atol=1e-5)
    unknown = tf.function(ff.location_sums, input_signature=[tf.TensorSpec([None, None, None, 6], tf.float32)])
    np.testing.assert_allclose(unknown(tf.constant(maps)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv_factors", ["kfc", "cheap"])
def test_conv_model_factors_captured_end_to_end(conv_factors: str) -> None:
    """Through the optimizer: conv → flatten → dense logits, derivatives computed by hand in numpy."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 5, 2))
    conv = keras.layers.Conv2D(3, 3, strides=2, padding="same", name="conv")(inputs)
    logits = keras.layers.Dense(4, name="out")(keras.layers.Flatten()(conv))
    model = keras.Model(inputs, logits)
    x = np.random.default_rng(2).normal(size=(5, 6, 5, 2)).astype(np.float32)
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact", conv_factors=conv_factors))
    optimizer.accumulate_statistics(tf.constant(x))

    kernel, bias = (w.numpy().astype(np.float64) for w in model.get_layer("conv").weights)
    w_out, b_out = (w.numpy().astype(np.float64) for w in model.get_layer("out").weights)
    patches = patches_by_loops(x.astype(np.float64), 3, 2, "same")
    pre = patches @ kernel.reshape(-1, 3) + bias  # [B, 3, 3, 3], no activation
    batch, locations = x.shape[0], pre.shape[1] * pre.shape[2]
    cotangents = exact_logit_cotangents(pre.reshape(batch, -1) @ w_out + b_out)
    ds = [(v @ w_out.T).reshape(pre.shape) for v in cotangents]
    if conv_factors == "kfc":
        rows = with_ones(patches.reshape(-1, patches.shape[-1]))
        a_expected = rows.T @ rows / (batch * locations)
        g_expected = sum(d.reshape(-1, 3).T @ d.reshape(-1, 3) for d in ds) / batch
    else:
        mean_patch = with_ones(patches.reshape(batch, locations, -1).mean(axis=1))
        a_expected = mean_patch.T @ mean_patch / batch
        g_expected = sum(d.reshape(batch, locations, 3).sum(1).T @ d.reshape(batch, locations, 3).sum(1)
                         for d in ds) / batch
    factors = optimizer.factors()["conv"]
    np.testing.assert_allclose(factors["A"], a_expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(factors["G"], g_expected, rtol=1e-4, atol=1e-6)
