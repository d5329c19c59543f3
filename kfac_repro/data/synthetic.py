"""Synthetic data for fast tests: random images, labels from a fixed random linear teacher (so it is learnable).

Example i of a split is generated on the fly and is the same on every run and machine: a 4×4×C grid z ~ N(0, 1)
is bilinearly upsampled to S×S (default 32) and N(0, 0.5²) pixel noise is added (already zero-mean and of unit
scale: no further normalisation). Its label is argmax_k of a fixed random linear map of the image's 4×4
area-average grid, so a linear classifier over the pixels can fit it exactly (nets ending in global average pooling
learn the position-dependent rule more slowly). 4096 training and 1024 validation examples, 10 classes by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # TensorFlow is imported by the functions: the registry reads the constants without it
    import tensorflow as tf

    from kfac_repro.data.pipeline import Sharding

SIZES = {"train": 4096, "val": 1024}
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
GRID = 4
NOISE_STD = 0.5
_DATA_SEEDS = {"train": (1, 2), "val": (3, 4)}  # (grid, noise) streams
_TEACHER_SEED = 2017


def teacher(channels: int, num_classes: int) -> np.ndarray:
    """The fixed teacher: float32 [GRID·GRID·channels, num_classes]."""
    rng = np.random.default_rng(_TEACHER_SEED)
    return rng.normal(size=(GRID * GRID * channels, num_classes)).astype(np.float32)


def synthetic_example(index: tf.Tensor, split: str, size: int, channels: int, weights: tf.Tensor
                      ) -> tuple[tf.Tensor, tf.Tensor]:
    """Example `index` of `split`: (image float32 [size, size, channels], label int32 [])."""
    import tensorflow as tf

    grid_stream, noise_stream = _DATA_SEEDS[split]
    index = tf.cast(index, tf.int64)
    grid_seed = tf.stack([tf.constant(grid_stream, tf.int64), index])
    grid = tf.random.stateless_normal([GRID, GRID, channels], seed=grid_seed)
    noise = tf.random.stateless_normal([size, size, channels],
                                       seed=tf.stack([tf.constant(noise_stream, tf.int64), index])) * NOISE_STD
    image = tf.image.resize(grid[None], [size, size])[0] + noise
    pooled = tf.image.resize(image[None], [GRID, GRID], method="area")
    label = tf.argmax(tf.matmul(tf.reshape(pooled, [1, -1]), weights)[0], output_type=tf.int32)
    return image, label


def synthetic_dataset(
    split: str,
    *,
    sharding: Sharding,
    image_size: int | None,
    channels: int | None,
    seed: int,
    repeat: bool,
    num_classes: int | None,
) -> tf.data.Dataset:
    """(images float32 [B, S, S, C], labels int32 [B]); `seed` orders the training shuffle only."""
    import tensorflow as tf

    from kfac_repro.data.pipeline import finish

    size = image_size or IMAGE_SHAPE[0]
    depth = channels or IMAGE_SHAPE[2]
    weights = tf.constant(teacher(depth, num_classes or NUM_CLASSES))
    share = sharding.source
    indices = tf.data.Dataset.range(share.start or 0, SIZES[split], share.step or 1).map(lambda i: (i,))

    def preprocess(element: tuple, _: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        return synthetic_example(element[0], split, size, depth, weights)

    return finish(indices, preprocess, training=split == "train", augment=False, sharding=sharding, seed=seed,
                  repeat=repeat, shuffle_buffer=SIZES[split])
