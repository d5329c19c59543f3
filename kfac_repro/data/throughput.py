"""Is the input pipeline fast enough? JPEG-folder pipeline throughput against a model's SGD training step.

`write_jpeg_folders` writes a small ImageNet-style class-folder set of smooth random JPEGs; `pipeline_rate`
measures images/s of the training pipeline over it (decode, paper resize + random crop, normalise);
`step_seconds` times a plain SGD training step (tf.GradientTape + keras SGD, in a tf.function) on in-memory batches,
or, with `dataset`, fed by the pipeline.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

JPEG_QUALITY = 90


def write_jpeg_folders(root: Path, num_images: int, num_classes: int, size: tuple[int, int], seed: int = 0) -> None:
    """root/{train,val}/class_<k>/<i>.JPEG: `num_images` training images, a tenth as many (at least one per class)
    for val; smooth random content (an 8×8 colour grid upsampled, plus noise), H×W = `size`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_images), ("val", max(num_classes, num_images // 10))):
        for i in range(count):
            folder = root / split / f"class_{i % num_classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            grid = rng.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
            image = tf.image.resize(grid, size)[0] + rng.normal(0, 8, (*size, 3)).astype(np.float32)
            pixels = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
            (folder / f"{i:06d}.JPEG").write_bytes(tf.io.encode_jpeg(pixels, quality=JPEG_QUALITY).numpy())


def pipeline_rate(dataset: tf.data.Dataset, batches: int, warmup: int = 2) -> float:
    """Images per second delivered by `dataset` (batches of [B, ...] images) over `batches` batches."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    images = sum(int(next(iterator)[0].shape[0]) for _ in range(batches))
    return images / (time.perf_counter() - start)


def step_seconds(
    model: keras.Model, batch_size: int, num_classes: int, steps: int, dataset: tf.data.Dataset | None = None,
    warmup: int = 2,
) -> float:
    """Median seconds per SGD step (momentum 0.9) on a fixed random batch, or on `dataset`'s batches (the wait for
    the next batch included)."""
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)

    @tf.function
    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    if dataset is None:
        fixed = (tf.random.normal((batch_size, *model.input_shape[1:])),
                 tf.random.uniform((batch_size,), 0, num_classes, tf.int32))
        batches = iter(lambda: fixed, None)
    else:
        batches = iter(dataset)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        x, y = next(batches)  # waiting for the pipeline counts towards the step
        float(train_step(x, y))
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
