"""`KFACConfig.product_dtype`: bfloat16 products of the factor statistics and the preconditioning, against
numpy computations on bfloat16-rounded operands and against the float32 path; which blocks round, in summary()."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from kfac_repro.kfac.blocks import fisher_factors as ff
from kfac_repro.kfac.blocks.base import kronecker_solve
from kfac_repro.kfac.blocks.kfc_offsets import kfc_input_factor
from tests.numpy_reference import bfloat16_rounded, patches_by_loops, with_ones

BF16_STEP = 2.0**-8  # bfloat16's relative spacing: rounding moves a value by at most half of it


@functools.cache
def product_rounding() -> float:
    """The largest relative error with which this machine's TensorFlow hands back a bfloat16 matmul's float32 sum
    rounded to bfloat16: BF16_STEP where it rounds to nearest (oneDNN on AVX512_BF16 CPUs, GPUs), 2·BF16_STEP where
    it rounds toward zero (Eigen's kernel on CPUs without AVX512_BF16, seen on an AVX2 EPYC). Probed on a 9×64 by
    64×9 product whose every entry is 1 + 3·2⁻⁹: 1 + 2⁻⁷ to nearest, 1 toward zero."""
    rows = np.zeros((9, 64), np.float32)
    rows[:, :2] = [1.0, 3 * 2.0**-9]
    product = tf.matmul(tf.constant(rows, tf.bfloat16), tf.constant(np.ones((64, 9)), tf.bfloat16)).numpy()
    values = np.unique(product.astype(np.float64)).tolist()
    if values == [1 + 2.0**-7]:
        return BF16_STEP
    if values == [1.0]:
        return 2 * BF16_STEP
    raise AssertionError(f"bfloat16 matmul gave {values}: neither to nearest nor toward zero")


def test_bfloat16_rounding_reference_is_nearest_even() -> None:
    assert bfloat16_rounded(np.float32([1 + 2**-9, 1 + 3 * 2**-9, 1 + 2**-10, -3.0])).tolist() == [
        1.0, 1 + 2**-7, 1.0, -3.0]


@pytest.mark.parametrize("count", [64, 512])
def test_covariance_in_bfloat16_is_the_centred_gram_of_rounded_rows_plus_the_mean(count: int) -> None:
    rows = np.random.default_rng(0).normal(size=(count, 9)).astype(np.float32) + 3.0
    rows[:, -1] = 1.0  # the homogeneous coordinate
    got = ff.covariance(tf.constant(rows), count, "bfloat16", centre=True).numpy()
    mean = rows.astype(np.float64).mean(axis=0)
    centred = bfloat16_rounded(rows - mean.astype(np.float32))
    expected = (centred.T @ centred + count * np.outer(mean, mean)) / count
    assert got.dtype == np.float32
    assert_within_a_step_of_gram(got, expected, centred)
    np.testing.assert_allclose(got[-1], mean, rtol=1e-6)  # the ones column centres to zero: no rounding at all
    exact = rows.astype(np.float64).T @ rows / count
    rounding = BF16_STEP + product_rounding()  # the centred rows' own rounding, then the product's
    assert 1e-5 < np.abs(got - exact).max() < rounding * np.abs(exact - np.outer(mean, mean)).max()
    np.testing.assert_allclose(ff.covariance(tf.constant(rows), count).numpy(), exact, rtol=1e-5)
    uncentred = ff.covariance(tf.constant(rows), count, "bfloat16").numpy()  # derivatives' factors: not centred
    assert_within_a_step_of_gram(uncentred, bfloat16_rounded(rows).T @ bfloat16_rounded(rows) / count,
                                 bfloat16_rounded(rows))
    # what centring buys here: the uncentred product errs at the scale of the raw moments, 11× (64 rows) and 18×
    # (512) the centred error when rounded to nearest, 7× and 20× toward zero (numpy emulations of both roundings)
    assert np.abs(uncentred - exact).max() > 5 * np.abs(got - exact).max()


def assert_within_a_step_of_gram(got: np.ndarray, expected: np.ndarray, rows: np.ndarray) -> None:
    """|got − expected| ≤ one rounding of this machine's bfloat16 product (`product_rounding`) of |rows|ᵀ|rows| / N
    entrywise (a sum of products rounded to bfloat16 errs relative to the sum of the products' magnitudes, not to
    the possibly cancelling sum itself), plus float32 round-off of the rest."""
    bound = product_rounding() * np.abs(rows).T @ np.abs(rows) / len(rows) + 1e-6 * np.abs(expected)
    assert np.all(np.abs(got - expected) <= bound), np.max(np.abs(got - expected) / bound)


def test_kronecker_solve_in_bfloat16_against_an_explicit_kronecker_solve() -> None:
    rng = np.random.default_rng(1)
    a, g = (rng.normal(size=(n, n)) for n in (7, 5))
    a_inverse, g_inverse = (np.linalg.inv(m @ m.T + np.eye(len(m))).astype(np.float32) for m in (a, g))
    matrix = rng.normal(size=(7, 5)).astype(np.float32)
    # vec over rows of M (C order): (L⁻¹ ⊗ R⁻¹) vec(M) = vec(L⁻¹ M R⁻¹) for symmetric R⁻¹
    explicit = (np.kron(a_inverse.astype(np.float64), g_inverse.astype(np.float64)) @ matrix.reshape(-1)).reshape(7, 5)
    single = kronecker_solve(tf.constant(matrix), tf.constant(a_inverse), tf.constant(g_inverse)).numpy()
    np.testing.assert_allclose(single, explicit, rtol=1e-5, atol=1e-6)
    half = kronecker_solve(tf.constant(matrix), tf.constant(a_inverse), tf.constant(g_inverse), "bfloat16").numpy()
    error = np.linalg.norm(half - explicit) / np.linalg.norm(explicit)
    assert 1e-5 < error < 4 * BF16_STEP, error  # operands, the intermediate and the result rounded: a few steps


@pytest.mark.parametrize("padding,stride", [("same", 1), ("valid", 2)])
def test_kfc_input_factor_in_bfloat16_against_im2col_of_rounded_inputs(padding: str, stride: int) -> None:
    x = np.random.default_rng(2).normal(size=(4, 7, 7, 3)).astype(np.float32)
    geometry = ff.ConvGeometry((3, 3), (stride, stride), padding, (1, 1))
    patches = patches_by_loops(bfloat16_rounded(x), 3, stride, padding)
    rows = with_ones(patches.reshape(-1, patches.shape[-1]))
    expected = rows.T @ rows / len(rows)
    got = kfc_input_factor(tf.constant(x), geometry, True, "bfloat16").numpy()
    assert_within_a_step_of_gram(got, expected, rows)  # offset products rounded, then summed in float32


def _model(layers: Callable[[], list[keras.layers.Layer]], input_shape: tuple[int, ...]) -> keras.Model:
    """The same weights on every call."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input(input_shape), *layers()])


MODELS = {
    "dense": (lambda: [keras.layers.Dense(12, activation="tanh"), keras.layers.Dense(4)], (10,)),
    "conv-cheap": (lambda: [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                            keras.layers.Dense(4)], (6, 6, 3)),
    "depthwise-separable": (lambda: [keras.layers.DepthwiseConv2D(3, activation="relu"),
                                     keras.layers.SeparableConv2D(4, 3, padding="same"),
                                     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)], (6, 6, 3)),
    "doubly-factored": (lambda: [keras.layers.Conv2D(3, 3, padding="same"), keras.layers.Flatten(name="flat"),
                                 keras.layers.Dense(5, name="fc"), keras.layers.Dense(4)], (5, 5, 2)),
}


@pytest.mark.parametrize("kind,conv_factors", [("dense", "cheap"), ("conv-cheap", "cheap"), ("conv-cheap", "kfc"),
                                               ("depthwise-separable", "cheap"), ("doubly-factored", "cheap")])
def test_bfloat16_products_move_the_direction_far_less_than_resampling_the_fisher_targets(
        kind: str, conv_factors: str) -> None:
    """Factors within a rounding of this machine's bfloat16 product of float32's; the whole update direction within
    1/5 of the change that another draw of the sampled Fisher targets (seed 1) makes, the noise K-FAC's statistics
    carry anyway."""
    layers, input_shape = MODELS[kind]
    x = tf.random.stateless_normal((32, *input_shape), seed=(4, 0))
    y = tf.random.stateless_uniform((32,), seed=(5, 0), maxval=4, dtype=tf.int32)
    optimizers = {}
    for dtype, seed in (("float32", 0), ("bfloat16", 0), ("float32", 1)):
        config = KFACConfig(product_dtype=dtype, conv_factors=conv_factors, seed=seed,
                            doubly_factored=("fc",) if kind == "doubly-factored" else ())
        optimizer = KFAC(_model(layers, input_shape), config)
        optimizer.accumulate_statistics(x)
        optimizer.refresh_inverses()
        optimizers[dtype, seed] = optimizer
    single, half, resampled = optimizers["float32", 0], optimizers["bfloat16", 0], optimizers["float32", 1]
    assert all(b.product_dtype == "bfloat16" for b in half.blocks)
    for exact_block, rounded_block in zip(single.blocks, half.blocks, strict=True):  # the models' names differ
        for key, value in exact_block.factors.items():
            error = np.linalg.norm(rounded_block.factors[key].numpy() - value.numpy())
            assert error <= product_rounding() * np.linalg.norm(value.numpy()), (exact_block.kind, key)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, single.model(x), from_logits=True))
    grads = tape.gradient(loss, single.model.trainable_variables)
    exact, rounded, other = (np.concatenate([d.numpy().ravel() for d in o.precondition(grads)])
                             for o in (single, half, resampled))
    assert 0 < np.linalg.norm(rounded - exact) < 0.2 * np.linalg.norm(other - exact)


def test_summary_says_which_blocks_round_their_products() -> None:
    model = _model(lambda: [keras.layers.Dense(6), keras.layers.BatchNormalization(), keras.layers.Dense(3)], (4,))
    optimizer = KFAC(model, KFACConfig(product_dtype="bfloat16"))
    rows = [re.split(r"\s{2,}", line) for line in optimizer.summary().splitlines()]
    assert rows[0][6] == "products"
    kinds = {row[2]: row[6] for row in rows[2:]}
    assert kinds == {"kronecker-dense": "bfloat16", "scale-shift-exact": "float32"}


def test_an_unknown_product_dtype_is_refused_with_its_choices() -> None:
    with pytest.raises(ValueError, match=r"product_dtype: expected 'float32' or 'bfloat16', found 'float16'"):
        KFACConfig(product_dtype="float16")  # type: ignore[arg-type]


def test_training_with_bfloat16_products_follows_the_float32_run() -> None:
    x = tf.random.stateless_normal((64, 10), seed=(6, 0))
    y = tf.cast(tf.reduce_sum(x[:, :3], axis=1) > 0, tf.int32) + 2 * tf.cast(x[:, 4] > 0, tf.int32)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        optimizer = KFAC(_model(MODELS["dense"][0], (10,)), KFACConfig(product_dtype=dtype, inverse_every=5))
        losses[dtype] = [float(optimizer.train_step(x, y)["loss"]) for _ in range(30)]
        optimizer.close()
    assert losses["float32"][-1] < 0.5 * losses["float32"][0]
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)


def test_keras_fit_takes_product_dtype_and_keeps_it_in_its_config() -> None:
    from kfac_repro.keras import KFAC as KerasKFAC

    x = tf.random.stateless_normal((128, 10), seed=(7, 0))
    y = tf.cast(x[:, 0] > 0, tf.int32) + 2 * tf.cast(x[:, 1] > 0, tf.int32)
    model = _model(MODELS["dense"][0], (10,))
    optimizer = KerasKFAC(model, product_dtype="bfloat16")
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(block.product_dtype == "bfloat16" for block in optimizer.preconditioner.blocks)
    assert optimizer.get_config()["product_dtype"] == "bfloat16"
    optimizer.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 700 s on a 2-core AVX2 EPYC beside other work: over the default 600
def test_fashion_mnist_mlp_trains_alike_with_bfloat16_products() -> None:
    """The benchmark's MLP 784-1000-500-250-30-10 on Fashion-MNIST, batch 512, 300 updates, 3 seeds: per seed, the
    training loss (mean of the last 50 updates) within 5% and the test error within 1.5 points of float32's."""
    from kfac_repro.benchmarks.step_time import deep_mlp
    from kfac_repro.data.fashion_mnist import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    x_train, x_test = ((x.reshape(len(x), -1) / 255.0).astype(np.float32) for x in (x_train, x_test))
    for seed in range(3):
        results = {}
        for dtype in ("float32", "bfloat16"):
            keras.utils.set_random_seed(seed)
            model = deep_mlp()
            optimizer = KFAC(model, KFACConfig(inverse_every=10, product_dtype=dtype, seed=seed))
            batches = np.random.default_rng(seed).integers(0, len(x_train), (300, 512))
            losses = [float(optimizer.train_step(tf.constant(x_train[b]), tf.constant(y_train[b].astype(np.int32)))
                            ["loss"]) for b in batches]
            optimizer.close()
            error = float(np.mean(np.argmax(model.predict(x_test, batch_size=2000, verbose=0), 1) != y_test))
            results[dtype] = (np.mean(losses[-50:]), error, losses[0])
        (loss, error, first), (rounded_loss, rounded_error, _) = results["float32"], results["bfloat16"]
        assert loss < 0.3 * first, results
        assert abs(rounded_loss - loss) <= 0.05 * loss and abs(rounded_error - error) <= 0.015, (seed, results)
