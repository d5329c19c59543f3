"""tf.data pipeline over in-memory uint8 images (CIFAR-10, Fashion-MNIST).

Images are optionally tiled to `channels`, then: with `augment`, the paper's recipe at size S (resize to
round(S·256/224), random S×S crop; the paper itself augments only ImageNet); without, a plain resize to S when S
differs from the native size. Pixels are normalised with the data set's channel statistics (`preprocessing`).
Yields (images float32 [B, S, S, C], labels int32 [B]).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kfac_repro.data.pipeline import Sharding, finish
from kfac_repro.data.preprocessing import match_channels, normalize, random_crop, resize


def array_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    stats: str,
    training: bool,
    sharding: Sharding,
    image_size: int | None,
    channels: int | None,
    augment: bool,
    seed: int,
    repeat: bool,
    num_classes: int | None,
) -> tf.data.Dataset:
    """images uint8 [N, H, W] or [N, H, W, C], labels [N]; `stats` names the normalisation (e.g. "cifar10")."""
    if images.ndim == 3:
        images = images[..., None]
    if num_classes is not None:
        keep = labels < num_classes
        images, labels = images[keep], labels[keep]
    images = images[sharding.source]
    labels = labels[sharding.source].astype(np.int32)
    size = images.shape[1] if image_size is None else image_size

    def preprocess(element: tuple, crop_seed: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = element
        image = match_channels(image, channels)
        image = resize(image, size) if crop_seed is None else random_crop(image, size, crop_seed)
        return normalize(image, stats), label

    examples = tf.data.Dataset.from_tensor_slices((images, labels))
    return finish(examples, preprocess, training=training, augment=augment, sharding=sharding, seed=seed,
                  repeat=repeat, shuffle_buffer=max(1, len(labels)))
