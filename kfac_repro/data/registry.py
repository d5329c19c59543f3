"""Data-set registry: availability, descriptions, sizes, verification and tf.data pipelines by name.

Importing this module, `dataset_available`, `describe`, `dataset_info` and `verify` do not import TensorFlow (the
`kfac-repro list` and `kfac-repro data` commands answer at once); `make_dataset` does.

Data sets (splits "train", "val" and "test"; "val" is the test set for CIFAR-10 and Fashion-MNIST unless `holdout`
holds out the last N training examples as "val"; for ImageNet and synthetic data "test" is "val"):
- cifar10: official python or binary batches (`cifar10`); 32×32×3, 10 classes.
- imagenet: class folders or TFRecord shards (`imagenet_files`); paper preprocessing at 224 (or `image_size`).
- fashion_mnist: idx files (`fashion_mnist`); 28×28×1, 10 classes; `channels=3` tiles to RGB.
- synthetic: generated (`synthetic`); 32×32×3, 10 classes, labels from a fixed random teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfac_repro.data import cifar10, imagenet_files, synthetic
from kfac_repro.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from kfac_repro.data.locations import DataNotFoundError

if TYPE_CHECKING:
    import tensorflow as tf

DATASET_NAMES = ("cifar10", "imagenet", "fashion_mnist", "synthetic")
SPLITS = ("train", "val", "test")
PathLike = str | Path | None
_TITLES = {"cifar10": "CIFAR-10", "imagenet": "ImageNet", "fashion_mnist": "Fashion-MNIST"}


def dataset_available(name: str, data_dir: PathLike = None) -> bool:
    """Whether data set `name` is present and complete (file names only; `verify` reads the contents)."""
    try:
        _locate(name, data_dir)
    except DataNotFoundError:
        return False
    return True


def describe(name: str, data_dir: PathLike = None) -> str:
    """Where the data set is, or why it is missing: every place looked at and what was expected."""
    try:
        fmt, location = _locate(name, data_dir)
    except DataNotFoundError as error:
        return str(error)
    if name == "synthetic":
        return (f"synthetic: generated on the fly ({synthetic.SIZES['train']} train / {synthetic.SIZES['val']} val, "
                f"{'×'.join(map(str, synthetic.IMAGE_SHAPE))}, {synthetic.NUM_CLASSES} classes)")
    return f"{_TITLES[name]} {fmt} in {location}"


def dataset_info(name: str, data_dir: PathLike = None) -> dict[str, Any]:
    """num_train, num_val, num_classes, image_shape (native; None where it varies), format, location."""
    _check_name(name)
    if name == "synthetic":
        return {"num_train": synthetic.SIZES["train"], "num_val": synthetic.SIZES["val"],
                "num_classes": synthetic.NUM_CLASSES, "image_shape": synthetic.IMAGE_SHAPE,
                "format": "generated", "location": "-"}
    if name == "imagenet":
        return imagenet_files.imagenet_info(data_dir)
    fmt, location = _locate(name, data_dir)
    (x_train, _), (x_val, _) = _load_arrays(name, data_dir)
    shape = x_train.shape[1:] if x_train.ndim == 4 else (*x_train.shape[1:], 1)
    return {"num_train": len(x_train), "num_val": len(x_val), "num_classes": 10, "image_shape": tuple(shape),
            "format": fmt, "location": location}


def verify(name: str, data_dir: PathLike = None) -> str:
    """Read every file (or record header) of the data set; a summary line, else DataNotFoundError naming the file."""
    _check_name(name)
    if name == "cifar10":
        return cifar10.verify_cifar10(data_dir)
    if name == "imagenet":
        return imagenet_files.verify_imagenet(data_dir)
    if name == "fashion_mnist":
        (x_train, _), (x_val, _) = load_fashion_mnist(data_dir)
        return f"{describe(name, data_dir)}: {len(x_train)} training and {len(x_val)} test images, 28×28"
    return "synthetic: generated on the fly, nothing to read"


def make_dataset(
    name: str,
    split: str,
    batch_size: int,
    *,
    data_dir: PathLike = None,
    image_size: int | None = None,
    augment: bool | None = None,
    shard: tuple[int, int] | None = None,
    input_context: tf.distribute.InputContext | None = None,
    seed: int = 0,
    repeat: bool = True,
    num_classes: int | None = None,
    channels: int | None = None,
    label_offset: int | None = None,
    holdout: int = 0,
) -> tf.data.Dataset:
    """tf.data pipeline of (images float32 [B, S, S, C], labels int32 [B]), normalised per channel.

    image_size: output side S (None: native; 224 for ImageNet).
    augment: the paper's resize + random crop (None: on for ImageNet training only).
    shard=(num_workers, index) or input_context: this worker's disjoint share (see `pipeline`); batch_size is per
        worker with `shard` but GLOBAL with `input_context` (divided by the replicas, as tf.distribute's
        distribute_datasets_from_function expects).
    seed: shuffling and crops. repeat: endless (else one pass).
    num_classes: keep the first `num_classes` classes (synthetic: the teacher's class count).
    channels: tile grey images to 3 (None: native).
    label_offset: subtracted from ImageNet TFRecord labels (None: 1, for the standard 1-based shards).
    holdout: CIFAR-10/Fashion-MNIST: the last `holdout` training examples form "val" (and leave "train").
    Training batches are full; shuffling only for "train".
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be ≥ 1, got {image_size}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    from kfac_repro.data.pipeline import resolve_sharding

    training = split == "train"
    sharding = resolve_sharding(batch_size, shard, input_context, training)
    augment = (name == "imagenet" and training) if augment is None else augment
    common: dict[str, Any] = {"sharding": sharding, "seed": seed, "repeat": repeat, "num_classes": num_classes}
    if holdout and name not in ("cifar10", "fashion_mnist"):
        raise ValueError(f"holdout applies to cifar10 and fashion_mnist only, not to {name!r}")
    split = "val" if split == "test" and name in ("imagenet", "synthetic") else split
    if label_offset is not None and name != "imagenet":
        raise ValueError(f"label_offset applies to ImageNet TFRecords only, not to {name!r}")
    if name == "imagenet":
        from kfac_repro.data.imagenet import imagenet_dataset

        if channels == 1:
            raise ValueError("imagenet images are RGB: channels must be None or 3")
        layout = imagenet_files.find_imagenet(data_dir)
        if label_offset is not None and layout.format != "tfrecord":
            raise ValueError(f"label_offset applies to ImageNet TFRecords only; {layout.root} holds class folders")
        offset = imagenet_files.TFRECORD_LABEL_OFFSET if label_offset is None else label_offset
        return imagenet_dataset(layout, split, image_size=image_size or 224, augment=augment,
                                label_offset=offset if layout.format == "tfrecord" else 0, **common)
    if name == "synthetic":
        if augment:
            raise ValueError("synthetic data has no augmentation")
        from kfac_repro.data.synthetic import synthetic_dataset

        return synthetic_dataset(split, image_size=image_size, channels=channels, **common)
    from kfac_repro.data.arrays import array_dataset

    (train_images, train_labels), test = _load_arrays(name, data_dir)
    if holdout >= len(train_labels):
        raise ValueError(f"holdout {holdout} leaves no training examples (the training set has {len(train_labels)})")
    kept = len(train_labels) - holdout
    images, labels = {"train": (train_images[:kept], train_labels[:kept]), "test": test,
                      "val": (train_images[kept:], train_labels[kept:]) if holdout else test}[split]
    return array_dataset(images, labels, stats=name, training=training, image_size=image_size, channels=channels,
                         augment=augment, **common)


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASET_NAMES)}")


def _locate(name: str, data_dir: PathLike) -> tuple[str, str]:
    """(format, location); DataNotFoundError when absent or incomplete."""
    _check_name(name)
    if name == "cifar10":
        fmt, directory = cifar10.find_cifar10(data_dir)
        return f"{fmt} batches", str(directory)
    if name == "imagenet":
        layout = imagenet_files.find_imagenet(data_dir)
        return layout.format, str(layout.root)
    if name == "fashion_mnist":
        return "idx files", str(find_fashion_mnist(data_dir))
    return "generated", "-"


def _load_arrays(name: str, data_dir: PathLike) -> tuple:
    return cifar10.load_cifar10(data_dir) if name == "cifar10" else load_fashion_mnist(data_dir)
