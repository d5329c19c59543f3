"""Sample and class weights weight the curvature as they weight the loss: Keras's loss is (1/B) Σ_b w_b ℓ_b, so its
Fisher is (1/B) Σ_b w_b F_b; the factors `fit` accumulates equal a numpy computation of that weighted sum, and
`class_weight` (which Keras turns into sample weights) changes them as the same sample weights do."""

import keras
import numpy as np
import pytest

from kfac_repro.keras import KFAC
from tests.test_fisher_dense import BATCH, CLASSES, D_IN, numpy_factors, tiny_mlp

SCCE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CLASS_WEIGHT = {0: 3.0, 1: 0.25, 2: 1.0}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    return rng.normal(size=(BATCH, D_IN)).astype(np.float32), rng.integers(0, CLASSES, BATCH).astype(np.int32)


def factors_after_one_step(x: np.ndarray, y: np.ndarray, **fit_args: object) -> dict[str, dict[str, np.ndarray]]:
    """The factors after one `fit` step on the batch (its statistics, taken before the update), exact targets."""
    model = tiny_mlp()
    optimizer = KFAC(model, fisher_targets="exact")
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, **fit_args)
    optimizer.close()
    return optimizer.preconditioner.factors()


def assert_factors_equal(ours: dict, expected: dict) -> None:
    for layer, factors in expected.items():
        for name, value in factors.items():
            np.testing.assert_allclose(ours[layer][name], value, rtol=1e-4, atol=1e-6, err_msg=f"{layer}.{name}")


def test_sample_weights_weight_each_example_fisher_as_the_loss(data: tuple) -> None:
    x, y = data
    weights = np.random.default_rng(5).uniform(0.0, 3.0, BATCH).astype(np.float32)
    weights[0] = 0.0
    expected = numpy_factors(tiny_mlp(), x.astype(np.float64), weights)
    assert_factors_equal(factors_after_one_step(x, y, sample_weight=weights), expected)
    unweighted = numpy_factors(tiny_mlp(), x.astype(np.float64))
    assert np.abs(expected["out"]["G"] - unweighted["out"]["G"]).max() > 1e-3  # the weights matter here


def test_class_weight_changes_the_statistics_as_its_sample_weights(data: tuple) -> None:
    x, y = data
    plain = factors_after_one_step(x, y)
    by_class = factors_after_one_step(x, y, class_weight=CLASS_WEIGHT)
    expected = numpy_factors(tiny_mlp(), x.astype(np.float64), np.array([CLASS_WEIGHT[int(c)] for c in y]))
    assert_factors_equal(by_class, expected)
    assert_factors_equal(plain, numpy_factors(tiny_mlp(), x.astype(np.float64)))
    assert np.abs(by_class["hidden"]["G"] - plain["hidden"]["G"]).max() > 1e-3
    np.testing.assert_allclose(by_class["hidden"]["A"], plain["hidden"]["A"], rtol=1e-5)  # inputs: unweighted
