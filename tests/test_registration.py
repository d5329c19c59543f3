"""Registration on unmodified Keras models: Sequential, functional, subclassed; the summary; errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig


class Subclassed(keras.Model):
    """A model written without K-FAC in mind: layers as attributes, a custom call, a shared Dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.shared = keras.layers.Dense(4, activation="tanh")
        self.head = keras.layers.Dense(3)
        self.scale = self.add_weight(shape=(), initializer="ones", name="free_scale")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self.pool(self.conv(x))
        h = self.shared(self.shared(h))  # the same layer twice: its statistics are lumped (paper App. C)
        return self.head(h) * self.scale


def sequential() -> keras.Model:
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(5, activation="relu"),
        keras.layers.Dense(3),
    ])


def test_sequential_model_registers_every_layer_with_the_right_block() -> None:
    model = sequential()
    optimizer = KFAC(model, KFACConfig())
    kinds = [block.kind for block in optimizer.blocks]
    assert kinds == ["kronecker-conv-cheap", "scale-shift-exact", "kronecker-dense", "kronecker-dense"]
    conv = optimizer.blocks[0]
    assert conv.factor_shapes == {"A": (3 * 3 * 2 + 1,) * 2, "G": (3, 3)}
    text = optimizer.summary()
    for layer in model.layers:
        if layer.trainable_variables:
            assert layer.name in text
    assert "kronecker-conv-cheap" in text and "A 19×19" in text


def test_subclassed_model_with_shared_layer_and_free_weight() -> None:
    model = Subclassed()
    x = tf.random.normal((4, 6, 6, 2))
    y = tf.constant([0, 1, 2, 1])
    model(x)
    optimizer = KFAC(model, KFACConfig(inverse_every=1))
    assert [b.kind for b in optimizer.blocks] == ["kronecker-conv-cheap", "kronecker-dense", "kronecker-dense"]
    assert "none (unpreconditioned)" in optimizer.summary()  # the model's own weight has no layer
    losses = [optimizer.train_step(x, y)["loss"] for _ in range(5)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_taps_are_removed_and_model_outputs_unchanged() -> None:
    model = sequential()
    x = tf.random.normal((4, 6, 6, 2))
    before = model(x).numpy()
    optimizer = KFAC(model, KFACConfig())
    optimizer.accumulate_statistics(x)
    assert all("call" not in vars(layer) for layer in model.layers)
    np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-6)


def test_probability_outputs_give_the_same_factors_as_logits() -> None:
    """A model ending in softmax (probabilities) and its logit twin have the same exact Fisher statistics."""
    keras.utils.set_random_seed(0)
    logits_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"),
                                     keras.layers.Dense(3)])
    probs_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"),
                                    keras.layers.Dense(3, activation="softmax")])
    probs_model.set_weights(logits_model.get_weights())
    x = tf.random.normal((6, 4))
    from_logits = KFAC(logits_model, KFACConfig(fisher_targets="exact"))
    from_probs = KFAC(probs_model, KFACConfig(fisher_targets="exact", from_logits=False))
    from_logits.accumulate_statistics(x)
    from_probs.accumulate_statistics(x)
    for a, b in zip(from_logits.factors().values(), from_probs.factors().values(), strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-6)


def test_unbuilt_model_is_rejected_with_a_clear_message() -> None:
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        KFAC(model)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"damping: expected a number > 0, found -1"):
        KFACConfig(damping=-1)
    with pytest.raises(ValueError, match="momentum"):
        KFACConfig(momentum=1.0)
