"""The KFC input factor from offset-difference sums equals the im2col factor (and the loop reference) in every
geometry: kernels 1–5 (square or not), strides 1 and 2, 'same' and 'valid', dilation, with and without the
homogeneous bias coordinate; and the cost rule picks the path."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac.blocks import fisher_factors as ff
from kfac_repro.kfac.blocks import kfc_offsets
from kfac_repro.kfac.blocks.kfc_offsets import kfc_input_factor, offsets_cheaper
from tests.numpy_reference import patches_by_loops, with_ones

KERNELS = [(1, 1), (2, 2), (3, 3), (5, 5), (3, 2), (1, 3)]
STRIDES = [(1, 1), (2, 2), (2, 1)]
DILATIONS = [(1, 1), (2, 2), (1, 2)]
SIZES = [(7, 6), (4, 5)]


def geometries() -> list[tuple]:
    cases = []
    for kernel, strides, padding, dilation, size in itertools.product(
        KERNELS, STRIDES, ("same", "valid"), DILATIONS, SIZES
    ):
        geometry = ff.ConvGeometry(kernel, strides, padding, dilation)
        if geometry.output_size(size[0], 0) > 0 and geometry.output_size(size[1], 1) > 0:
            cases.append((geometry, size))
    return cases


@pytest.mark.parametrize("use_bias", [True, False])
def test_offset_difference_factor_equals_im2col_factor_in_every_geometry(use_bias: bool) -> None:
    rng = np.random.default_rng(0)
    cases = geometries()
    assert len(cases) > 150
    for geometry, (height, width) in cases:
        x = tf.constant(rng.normal(size=(3, height, width, 2)) + 0.5, tf.float32)  # non-zero mean: bias terms matter
        expected = ff.im2col_input_factor(x, geometry, use_bias).numpy()
        got = kfc_input_factor(x, geometry, use_bias).numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"{geometry}, {height}×{width}")


@pytest.mark.parametrize(("k", "stride", "padding", "dilation"),
                         [(5, 1, "same", 1), (3, 2, "same", 1), (3, 2, "valid", 2), (2, 2, "same", 1)])
def test_offset_difference_factor_equals_the_loop_reference(k: int, stride: int, padding: str, dilation: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 9, 7, 3))
    patches = patches_by_loops(x, k, stride, padding, dilation)
    rows = with_ones(patches.reshape(-1, patches.shape[-1]))
    geometry = ff.ConvGeometry((k, k), (stride, stride), padding, (dilation, dilation))
    got = kfc_input_factor(tf.constant(x, tf.float64), geometry, use_bias=True).numpy()
    np.testing.assert_allclose(got, rows.T @ rows / len(rows), rtol=1e-10, atol=1e-12)


def test_taps_that_never_overlap_give_zero_blocks() -> None:
    """k = 3, dilation 3 on a 4-wide input: taps 0 and 2 are 6 apart, never both inside."""
    geometry = ff.ConvGeometry((3, 3), (1, 1), "same", (3, 3))
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 4, 2)), tf.float32)
    got = kfc_input_factor(x, geometry, use_bias=False).numpy()
    np.testing.assert_allclose(got, ff.im2col_input_factor(x, geometry, False).numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(got.reshape(3, 3, 2, 3, 3, 2)[0, :, :, 2] == 0)


@pytest.mark.parametrize(("kernel", "strides", "shape", "offsets"), [
    ((5, 5), (1, 1), (16, 16, 32), True),  # the paper's CIFAR-10 net, conv2
    ((5, 5), (1, 1), (32, 32, 3), True),  # conv1
    ((3, 3), (1, 1), (16, 16, 64), True),
    ((1, 1), (1, 1), (8, 8, 64), False),  # im2col is a reshape
    ((3, 3), (2, 2), (16, 16, 64), False),
    ((7, 7), (2, 2), (224, 224, 3), False),  # an RGB stem
    ((5, 5), (1, 1), (None, None, 32), False),  # no static size: im2col
])
def test_cost_rule_picks_the_cheaper_path(kernel: tuple, strides: tuple, shape: tuple, offsets: bool) -> None:
    assert offsets_cheaper(shape, ff.ConvGeometry(kernel, strides, "same", (1, 1))) is offsets


@pytest.mark.parametrize("offsets", [True, False])
def test_kfc_factors_take_the_path_the_rule_picks(offsets: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = kfc_offsets.kfc_input_factor

    def recording(*args: object) -> tf.Tensor:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(ff, "kfc_input_factor", recording)
    monkeypatch.setattr(ff, "offsets_cheaper", lambda shape, geometry: offsets)
    geometry = ff.ConvGeometry((3, 3), (1, 1), "same", (1, 1))
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 5, 5, 2)), tf.float32)
    ds = [tf.ones([2, 5, 5, 3])]
    a, _ = ff.conv_kfc_factors(x, ds, tf.constant(2), geometry, use_bias=True)
    assert len(calls) == int(offsets)
    np.testing.assert_allclose(a, ff.im2col_input_factor(x, geometry, True), rtol=1e-5, atol=1e-6)
