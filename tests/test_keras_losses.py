"""Compiled Keras loss → K-FAC likelihood: the Fisher K-FAC uses equals the expected Hessian of Keras's own loss
with respect to the outputs (autodiff, targets drawn from the model); each supported loss trains in `fit` on
Fashion-MNIST; each unsupported loss or loss/output mismatch is refused with its message when fit starts."""

from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.data.fashion_mnist import load_fashion_mnist
from kfac_repro.keras import KFAC
from kfac_repro.keras.losses import likelihood_of
from kfac_repro.kfac.likelihoods import fisher_cotangents

L = keras.losses


def _model(activation: str | None, outputs: int = 10, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.AveragePooling2D(4), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(outputs, activation=activation)])


def _expected_hessian(loss: keras.losses.Loss, activation: Callable, logits: tf.Tensor,
                      targets: list[tuple[float, tf.Tensor]]) -> np.ndarray:
    """Σ_y p(y) ∂²loss(y, activation(z))/∂z² for one example's logits z [1, d], by autodiff of Keras's loss."""
    total = 0.0
    for weight, target in targets:
        with tf.GradientTape() as outer:
            outer.watch(logits)
            with tf.GradientTape() as inner:
                inner.watch(logits)
                value = loss(target, activation(logits))
            gradient = inner.gradient(value, logits)
        total += weight * outer.jacobian(gradient, logits)[0, :, 0, :].numpy()
    return total


def _targets(kind: str, probabilities: np.ndarray) -> list[tuple[float, tf.Tensor]]:
    """Every target value with its probability under the model (d = 3 outputs)."""
    d = probabilities.shape[0]
    if kind == "sparse":
        return [(probabilities[k], tf.constant([k])) for k in range(d)]
    if kind == "onehot":
        return [(probabilities[k], tf.one_hot([k], d)) for k in range(d)]
    if kind == "bernoulli":
        codes = np.array(np.meshgrid(*[[0.0, 1.0]] * d)).reshape(d, -1).T
        return [(float(np.prod(np.where(c == 1, probabilities, 1 - probabilities))), tf.constant(c[None], tf.float32))
                for c in codes]
    return [(1.0, tf.zeros([1, d]))]  # MSE: the Hessian does not depend on the target


CASES = {
    "sparse-logits": (L.SparseCategoricalCrossentropy(from_logits=True), None, "sparse"),
    "sparse-probabilities": (L.SparseCategoricalCrossentropy(), "softmax", "sparse"),
    "onehot-logits": (L.CategoricalCrossentropy(from_logits=True), None, "onehot"),
    "onehot-probabilities": (L.CategoricalCrossentropy(), "softmax", "onehot"),
    "binary-logits": (L.BinaryCrossentropy(from_logits=True), None, "bernoulli"),
    "binary-probabilities": (L.BinaryCrossentropy(), "sigmoid", "bernoulli"),
    "mse": (L.MeanSquaredError(), None, "gaussian"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fisher_equals_the_expected_hessian_of_the_keras_loss(case: str) -> None:
    loss, activation, kind = CASES[case]
    model = _model(activation, outputs=3)
    model.compile(loss=loss)
    mapping = likelihood_of(model)
    function = {"softmax": tf.nn.softmax, "sigmoid": tf.sigmoid}.get(activation, tf.identity)
    logits = tf.constant([[0.3, -1.2, 0.8]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        output = function(logits)
    jacobian = tape.jacobian(output, logits)[0, :, 0, :].numpy()  # ∂output/∂z: the Fisher is pulled back by it
    probabilities = (tf.nn.softmax if kind in ("sparse", "onehot") else tf.sigmoid)(logits).numpy()[0]
    expected = _expected_hessian(loss, function, logits, _targets(kind, probabilities))
    seed = tf.constant([0, 0], tf.int64)
    cotangents = fisher_cotangents(mapping.likelihood, output, mapping.from_logits, "exact", seed)
    fisher = sum(mapping.cotangent_scale(3) ** 2 * tf.transpose(v) @ v for v in cotangents).numpy()
    np.testing.assert_allclose(jacobian.T @ fisher @ jacobian, expected, rtol=2e-4, atol=1e-6)


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    (x, y), _ = load_fashion_mnist()
    return (x[:512, :, :, None] / np.float32(255.0)).astype("float32"), y[:512].astype("int32")


@pytest.mark.parametrize("case", list(CASES))
def test_each_supported_loss_trains_in_fit(case: str, fashion: tuple) -> None:
    loss, activation, kind = CASES[case]
    x, labels = fashion
    targets = {"sparse": labels, "onehot": np.eye(10, dtype="float32")[labels],
               "bernoulli": np.eye(10, dtype="float32")[labels] + np.eye(10, dtype="float32")[(labels + 1) % 10],
               "gaussian": np.eye(10, dtype="float32")[labels]}[kind]
    model = _model(activation)
    model.compile(optimizer=KFAC(model), loss=loss)
    before = model.evaluate(x, targets, verbose=0)
    model.fit(x, targets, batch_size=64, epochs=2, verbose=0)
    after = model.evaluate(x, targets, verbose=0)
    assert np.isfinite(after) and after < 0.8 * before


REFUSED = {
    "softmax-read-as-logits": ("softmax", L.SparseCategoricalCrossentropy(from_logits=True),
                               "from_logits=True but model .* ends with a softmax"),
    "sigmoid-read-as-logits": ("sigmoid", L.BinaryCrossentropy(from_logits=True), "ends with a sigmoid"),
    "logits-read-as-probabilities": (None, "sparse_categorical_crossentropy", "expects probabilities .* logits"),
    "unmappable": (None, "mean_absolute_error", "cannot map the loss 'mean_absolute_error' to a likelihood"),
    "sum-reduction": (None, L.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"),
                      "reduction='sum_over_batch_size'"),
    "ignore-class": (None, L.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0), "ignore_class"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_losses_fail_when_fit_starts(case: str, fashion: tuple) -> None:
    activation, loss, message = REFUSED[case]
    model = _model(activation)
    model.compile(optimizer=KFAC(model), loss=loss)
    x, labels = fashion[0][:64], fashion[1][:64]
    sparse = "sparse" in str(loss) or isinstance(loss, L.SparseCategoricalCrossentropy)
    with pytest.raises(ValueError, match=message):
        model.fit(x, labels if sparse else np.eye(10, dtype="float32")[labels], batch_size=64, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_eager_fit_is_refused_and_xla_is_turned_off(fashion: tuple) -> None:
    x, y = fashion[0][:64], fashion[1][:64]
    model = _model(None)
    model.compile(optimizer=KFAC(model), loss=L.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    with pytest.raises(RuntimeError, match="traced train step: compile without run_eagerly=True"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    model = _model(None)
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile(optimizer=KFAC(model), loss=L.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert model.jit_compile is False and int(model.optimizer.iterations.numpy()) == 1


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
def test_sampled_bernoulli_cotangents_average_to_the_exact_fisher(from_logits: bool) -> None:
    logits = tf.constant([[0.3, -1.2, 0.8]])
    output = logits if from_logits else tf.sigmoid(logits)
    seed = tf.constant([3, 0], tf.int64)
    exact = fisher_cotangents("bernoulli", output, from_logits, "exact", seed)
    fisher = sum(tf.transpose(v) @ v for v in exact).numpy()
    batch = tf.tile(output, [40000, 1])
    (sampled,) = fisher_cotangents("bernoulli", batch, from_logits, "sample", seed)
    estimate = (tf.transpose(sampled) @ sampled).numpy() / 40000
    np.testing.assert_allclose(estimate, fisher, rtol=0.05, atol=0.01 * np.abs(fisher).max())
