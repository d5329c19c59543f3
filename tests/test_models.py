"""The paper's models: published parameter counts at paper scale, a plain SGD step at reduced scale, the registry."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.models.registry import MODEL_NAMES, build_model, family_knobs

PAPER_SHAPE = (224, 224, 3)
# Published counts (weights + biases, 1000 classes) and the relative tolerance.
PUBLISHED_PARAMS = {
    "alexnet": (61.0e6, 0.03),  # 60.9 M (two towers) – 62.4 M (one tower)
    "googlenet": (6.8e6, 0.03),  # Szegedy et al.; re-implementations 6.6–7.0 M
    "resnet50": (25.6e6, 0.02),
    "resnet101": (44.5e6, 0.02),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_paper_scale_parameter_count(name: str) -> None:
    model = build_model(name, input_shape=PAPER_SHAPE, num_classes=1000, batch_norm=name.startswith("resnet"))
    expected, tolerance = PUBLISHED_PARAMS[name]
    assert model.output_shape == (None, 1000)
    assert model.count_params() == pytest.approx(expected, rel=tolerance)


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "resnet50"])
def test_untrained_paper_scale_model_predicts_nearly_uniformly(name: str) -> None:
    """First training-mode loss ≈ ln(1000) = 6.91 on unit-variance inputs (Glorot logits gave 27, 17 and 7.8)."""
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape=PAPER_SHAPE, num_classes=1000, batch_norm=name.startswith("resnet"))
    x = tf.random.normal((8, *PAPER_SHAPE))
    logits = model(x, training=True)
    loss = keras.losses.sparse_categorical_crossentropy(tf.range(8), logits, from_logits=True)
    assert float(tf.math.reduce_std(logits)) < 1.0
    assert float(tf.reduce_mean(loss)) == pytest.approx(np.log(1000), abs=0.35)


def test_cifar10_net_paper_scale() -> None:
    model = build_model("cifar10_net", input_shape=(32, 32, 3), num_classes=10)
    assert [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [32, 32, 64]
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize(("input_shape", "fc6_map"), [(PAPER_SHAPE, (6, 6, 256)), ((32, 32, 3), (3, 3, 64)),
                                                      ((28, 28, 1), (2, 2, 64))])
def test_alexnet_fc6_is_dense_over_a_spatial_map(input_shape: tuple[int, int, int], fc6_map: tuple) -> None:
    width = 1.0 if input_shape == PAPER_SHAPE else 0.25
    model = build_model("alexnet", input_shape=input_shape, num_classes=10, width_multiplier=width)
    fc6 = model.get_layer("fc6")
    assert isinstance(fc6, keras.layers.Dense)
    flatten = fc6.input._keras_history.operation
    assert isinstance(flatten, keras.layers.Flatten)
    assert tuple(flatten.input.shape[1:]) == fc6_map


def test_alexnet_refuses_an_input_that_collapses_before_fc6() -> None:
    with pytest.raises(ValueError, match="before fc6"):
        build_model("alexnet", input_shape=(40, 40, 3), num_classes=10, stem="paper")


def _sgd_step(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> float:
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in gradients)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    return float(loss)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reduced_scale_sgd_step(name: str, batch_norm: bool) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape=(32, 32, 3), num_classes=10, width_multiplier=0.25,
                        batch_norm=batch_norm, bn_chunk_size=4 if batch_norm else None)
    x = tf.random.normal((8, 32, 32, 3))
    y = tf.constant(np.arange(8) % 10, tf.int32)
    before = [v.numpy().copy() for v in model.trainable_variables]
    loss = _sgd_step(model, x, y)
    assert np.isfinite(loss)
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.all(np.isfinite(v)) for v in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    logits = model(x, training=False)
    assert logits.shape == (8, 10) and np.all(np.isfinite(logits.numpy()))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_layers_are_ones_kfac_registers_and_output_is_logits(name: str) -> None:
    model = build_model(name, input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.25, batch_norm=True)
    for layer in model.layers:
        if layer.trainable_weights:
            assert isinstance(layer, keras.layers.Dense | keras.layers.Conv2D | keras.layers.BatchNormalization)
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Dense) and last.activation is keras.activations.linear


def test_googlenet_aux_heads_give_three_logits() -> None:
    model = build_model("googlenet", input_shape=(32, 32, 3), num_classes=10, width_multiplier=0.25,
                        aux_heads=True)
    outputs = model(tf.zeros((2, 32, 32, 3)))
    assert [tuple(o.shape) for o in outputs] == [(2, 10)] * 3


def test_bn_model_round_trips_through_its_config() -> None:
    model = build_model("cifar10_net", input_shape=(32, 32, 3), num_classes=10, batch_norm=True, bn_chunk_size=16)
    clone = keras.Model.from_config(model.get_config())
    assert clone.get_layer("bn1").chunk_size == 16


def test_bn_momentum_sets_the_decay_of_every_moving_average() -> None:
    model = build_model("googlenet", input_shape=(32, 32, 3), num_classes=10, width_multiplier=0.125,
                        batch_norm=True, bn_momentum=0.5)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 50 and {layer.momentum for layer in norms} == {0.5}
    small = build_model("cifar10_net", input_shape=(8, 8, 1), num_classes=3, batch_norm=True, bn_momentum=0.5)
    x = np.random.default_rng(0).normal(2.0, 1.0, size=(16, 8, 8, 1)).astype(np.float32)
    bn1 = small.get_layer("bn1")
    bn_input = keras.Model(small.input, bn1.input)(x).numpy()
    small(x, training=True)
    np.testing.assert_allclose(bn1.moving_mean.numpy(), 0.5 * bn_input.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="bn_momentum"):
        build_model("cifar10_net", input_shape=(8, 8, 1), num_classes=3, batch_norm=True, bn_momentum=1.0)


def test_registry_rejects_bad_names_and_knobs() -> None:
    with pytest.raises(ValueError, match="'vgg16'"):
        build_model("vgg16", input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(ValueError, match="'aux_heads'"):
        build_model("resnet50", input_shape=(32, 32, 3), num_classes=10, aux_heads=True)
    with pytest.raises(ValueError, match="bn_chunk_size"):
        build_model("alexnet", input_shape=(32, 32, 3), num_classes=10, bn_chunk_size=32)
    with pytest.raises(ValueError, match="stem"):
        build_model("googlenet", input_shape=(32, 32, 3), num_classes=10, stem="tiny")
    assert family_knobs("googlenet") == ("stem", "aux_heads", "dropout")


def test_registry_import_does_not_import_tensorflow() -> None:
    probe = ("import sys; import kfac_repro.models.registry as r; assert r.MODEL_NAMES; "
             "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
