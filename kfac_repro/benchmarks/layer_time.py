"""Step time of K-FAC against Adam on models built from the newer layer blocks: a Transformer encoder block
(Embedding, MultiHeadAttention, EinsumDense feed-forward, LayerNormalization) and an Embedding + Conv1D text
classifier. Every figure is measured in one process on one fixed random batch, so that the ratios are comparable."""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import tensorflow as tf

from kfac_repro.benchmarks.step_time import NEVER, Timing, median_seconds
from kfac_repro.kfac import KFAC, KFACConfig


def transformer_block(length: int, vocabulary: int, width: int, heads: int, classes: int) -> keras.Model:
    """Token embedding, one post-norm encoder block (attention, 4× EinsumDense feed-forward with GELU), pooling."""
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, width)(inputs)
    attended = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=width // heads)(h, h)
    h = keras.layers.LayerNormalization()(h + attended)
    ff = keras.layers.EinsumDense("btc,cf->btf", (length, 4 * width), bias_axes="f", activation="gelu")(h)
    ff = keras.layers.EinsumDense("btf,fc->btc", (length, width), bias_axes="c")(ff)
    h = keras.layers.LayerNormalization()(h + ff)
    return keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.GlobalAveragePooling1D()(h)))


def embedding_classifier(length: int, vocabulary: int, width: int, classes: int) -> keras.Model:
    """Embedding [vocabulary × width] → Conv1D(width, 5, relu) → global max pooling → Dense."""
    return keras.Sequential([
        keras.Input((length,), dtype="int32"), keras.layers.Embedding(vocabulary, width),
        keras.layers.Conv1D(width, 5, activation="relu"), keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(classes),
    ])


def adam_step(model: keras.Model, learning_rate: float = 1e-3) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """A compiled Adam step on the mean cross-entropy of the model's logits (what a Keras user would run)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                      strict=True))
        return loss

    return step


def measure_layer_models(
    build_model: Callable[[], keras.Model], length: int, vocabulary: int, classes: int, batch_size: int,
    repeats: int = 10, warmup: int = 3, progress: Callable[[str], None] = lambda _: None,
) -> list[Timing]:
    """Median seconds of an Adam step, K-FAC steps (statistics every step, and every 10th; no inversion while
    timed) and one full inversion, each with its ratio to the Adam step."""
    keras.utils.set_random_seed(0)
    x = tf.random.uniform((batch_size, length), 0, vocabulary, dtype=tf.int32)
    y = tf.random.uniform((batch_size,), 0, classes, dtype=tf.int32)
    progress("Adam step")
    adam = median_seconds(functools.partial(adam_step(build_model()), x, y), repeats, warmup)
    timings = [Timing("Adam step", adam, 1.0)]
    optimizer = None
    for what, config in (("K-FAC step, statistics every step", KFACConfig(inverse_every=NEVER)),
                         ("K-FAC step, statistics every 10th step", KFACConfig(inverse_every=NEVER, stats_every=10))):
        progress(what)
        optimizer = KFAC(build_model(), config)
        seconds = median_seconds(functools.partial(optimizer.train_step, x, y), repeats, warmup)
        timings.append(Timing(what, seconds, seconds / adam))
    assert optimizer is not None
    progress("inversion")
    inversion = median_seconds(optimizer.refresh_inverses, max(3, repeats // 3), 1)
    timings.append(Timing("one full inversion (all blocks)", inversion, inversion / adam))
    return timings
