"""Image preprocessing shared by all pipelines: the paper's crop recipe and per-channel normalisation.

Paper recipe (§6.2), scaled to any output size S (S = 224 at paper scale): resize the whole image to R×R with
R = round(S · 256/224) (256 at S = 224; bilinear, aspect ratio not kept), then a random S×S crop for training or
the centre S×S crop for evaluation. Nothing else (no flips, no colour jitter).

Normalisation: pixels p in [0, 255] become float32 (p/255 − mean_c) / std_c per channel c, with the data set's
channel statistics below (CIFAR-10 and Fashion-MNIST: training-set statistics; ImageNet: the customary values).
"""

from __future__ import annotations

import tensorflow as tf

PAPER_CROP = 224
PAPER_RESIZE = 256
# per-channel (mean, std) of p/255
CHANNEL_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}


def resize_side(crop_size: int) -> int:
    """R for crop size S: round(S · 256/224)."""
    return round(crop_size * PAPER_RESIZE / PAPER_CROP)


def random_crop(image: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
    """[H, W, C] → resize to R×R → random S×S crop chosen by `seed` (int64 [2]); float32 in the input's range."""
    side = resize_side(crop_size)
    resized = tf.image.resize(image, [side, side])
    channels = resized.shape[-1]
    return tf.image.stateless_random_crop(resized, [crop_size, crop_size, channels], seed=seed)


def centre_crop(image: tf.Tensor, crop_size: int) -> tf.Tensor:
    """[H, W, C] → resize to R×R → the centre S×S crop; float32 in the input's range."""
    side = resize_side(crop_size)
    resized = tf.image.resize(image, [side, side])
    offset = (side - crop_size) // 2
    return resized[offset:offset + crop_size, offset:offset + crop_size, :]


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """[H, W, C] → float32 [size, size, C] (bilinear), unchanged (but cast) when already that size."""
    if image.shape[0] == size and image.shape[1] == size:
        return tf.cast(image, tf.float32)
    return tf.image.resize(image, [size, size])


def match_channels(image: tf.Tensor, channels: int | None) -> tf.Tensor:
    """Tile a 1-channel image to `channels` (3 for RGB models); None or the same count leaves it unchanged."""
    have = image.shape[-1]
    if channels is None or channels == have:
        return image
    if have == 1:
        return tf.tile(image, [1, 1, channels])
    raise ValueError(f"cannot turn {have}-channel images into {channels}-channel ones (only 1 → n tiling)")


def normalize(image: tf.Tensor, dataset: str) -> tf.Tensor:
    """Pixels in [0, 255] (any channel count matching, or tiled from, the data set's) → float32 (p/255 − μ)/σ."""
    mean, std = CHANNEL_STATS[dataset]
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
