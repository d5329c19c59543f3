"""ImageNet tf.data pipelines from class folders of JPEGs or from TFRecord shards (layouts: `imagenet_files`).

Each example is decoded (JPEG, or PNG where a file is one), resized to R×R and cropped to S×S as in the paper
(random crop for training with `augment`, centre crop otherwise; `preprocessing`), and normalised with the ImageNet
channel statistics. Yields (images float32 [B, S, S, 3], labels int32 [B]).

Sharding: folders are split by image (by position for distributed training: data.pipeline); TFRecords by shard file
when there are at least as many files as workers, else by record (so a TFRecord run's global batches depend on the
number of worker processes).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from kfac_repro.data import imagenet_files
from kfac_repro.data.pipeline import AUTOTUNE, Sharding, finish
from kfac_repro.data.preprocessing import centre_crop, normalize, random_crop

TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
RECORD_SHUFFLE_BUFFER = 10_000


def imagenet_dataset(
    layout: imagenet_files.ImageNetLayout,
    split: str,
    *,
    sharding: Sharding,
    image_size: int,
    augment: bool,
    seed: int,
    repeat: bool,
    num_classes: int | None,
    label_offset: int,
) -> tf.data.Dataset:
    """The pipeline over `layout` for `split` ("train" or "val"); see the module docstring."""
    training = split == "train"

    def preprocess(element: tuple, crop_seed: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        encoded, label = element
        if layout.format == "folders":
            encoded = tf.io.read_file(encoded)
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = centre_crop(image, image_size) if crop_seed is None else random_crop(image, image_size, crop_seed)
        return normalize(image, "imagenet"), tf.cast(label, tf.int32)

    if layout.format == "folders":
        paths, labels = imagenet_files.folder_examples(layout.root, split, num_classes)
        examples = tf.data.Dataset.from_tensor_slices((paths[sharding.source], labels[sharding.source]))
        shuffle_buffer = max(1, len(paths[sharding.source]) + 1)
    else:  # records are sharded by file, or by record (not by position: each worker would read every file)
        sharding = dataclasses.replace(sharding, replicas=0)
        files = [str(p) for p in imagenet_files.tfrecord_shards(layout.root, split)]
        examples = _records(files, training=training, sharding=sharding, seed=seed, num_classes=num_classes,
                            label_offset=label_offset)
        shuffle_buffer = RECORD_SHUFFLE_BUFFER
    return finish(examples, preprocess, training=training, augment=augment, sharding=sharding, seed=seed,
                  repeat=repeat, shuffle_buffer=shuffle_buffer)


def _records(
    files: list[str], *, training: bool, sharding: Sharding, seed: int, num_classes: int | None, label_offset: int
) -> tf.data.Dataset:
    """(JPEG bytes, 0-based label) pairs from the shards, this worker's share, in shuffled file order if training."""
    by_file = len(files) >= sharding.num_workers
    if by_file:
        files = files[sharding.index::sharding.num_workers]
    names = tf.data.Dataset.from_tensor_slices(files)
    if training:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = names.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE)
    if not by_file:
        records = records.shard(sharding.num_workers, sharding.index)

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
        label = example["image/class/label"] - label_offset
        check = tf.debugging.assert_non_negative(
            label, message=f"ImageNet TFRecord label below 0 after subtracting label_offset={label_offset}")
        with tf.control_dependencies([check]):
            return example["image/encoded"], tf.identity(label)

    pairs = records.map(parse, num_parallel_calls=AUTOTUNE)
    if num_classes is not None:
        pairs = pairs.filter(lambda _, label: label < num_classes)
    return pairs
