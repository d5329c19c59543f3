"""The data registry: synthetic and Fashion-MNIST pipelines, argument checks, no TensorFlow on the quick paths."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.data import synthetic
from kfac_repro.data.locations import DataNotFoundError
from kfac_repro.data.registry import DATASET_NAMES, dataset_available, dataset_info, make_dataset, verify


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_fashion(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    directory = tmp_path / "fashion-mnist"
    directory.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 9], np.uint8)
    _write_idx(directory / "train-images-idx3-ubyte.gz", images)
    _write_idx(directory / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(directory / "t10k-images-idx3-ubyte.gz", images[:4])
    _write_idx(directory / "t10k-labels-idx1-ubyte.gz", labels[:4])
    return tmp_path, images, labels


def test_synthetic_labels_come_from_the_fixed_linear_teacher() -> None:
    first = next(iter(make_dataset("synthetic", "val", 64, repeat=False)))
    again = next(iter(make_dataset("synthetic", "val", 64, repeat=False)))
    images, labels = (t.numpy() for t in first)
    np.testing.assert_array_equal(images, again[0].numpy())
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.float32 and labels.dtype == np.int32
    pooled = images.reshape(64, 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(64, -1)
    np.testing.assert_array_equal(labels, np.argmax(pooled @ synthetic.teacher(3, 10), axis=1))
    assert len(set(labels.tolist())) >= 8
    train = next(iter(make_dataset("synthetic", "train", 64, repeat=False, seed=1)))[0].numpy()
    assert not np.allclose(train, images)
    small = next(iter(make_dataset("synthetic", "train", 4, image_size=16, channels=1, num_classes=3)))
    assert small[0].shape == (4, 16, 16, 1) and set(small[1].numpy().tolist()) <= {0, 1, 2}


def test_synthetic_shards_are_disjoint() -> None:
    shards = [{x.tobytes() for batch, _ in make_dataset("synthetic", "val", 256, shard=(2, i), repeat=False)
               for x in batch.numpy()} for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == 512 and not shards[0] & shards[1]


def global_batches(name: str, pipelines: int, replicas: int, count: int, **options: object) -> list[np.ndarray]:
    """The first `count` global batches of 8 (images, then labels, in replica order) that `pipelines` input
    pipelines feed to `replicas` replicas, as distribute_datasets_from_function would assemble them."""
    streams = [iter(make_dataset(name, "train", 8, seed=3, input_context=tf.distribute.InputContext(
        pipelines, index, replicas), **options)) for index in range(pipelines)]
    batches = []
    for _ in range(count):
        parts = [next(stream) for stream in streams for _ in range(replicas // pipelines)]
        batches.append(np.concatenate([np.concatenate([x.numpy().ravel(), y.numpy().astype(np.float32)])
                                       for x, y in parts]))
    return batches


@pytest.mark.parametrize("replicas", [2, 4])
def test_the_global_batches_do_not_depend_on_the_number_of_input_pipelines(
        replicas: int, tiny_fashion: tuple[Path, np.ndarray, np.ndarray]) -> None:
    """One pipeline feeding every replica (one process) and one pipeline per replica (one process per replica)
    give the same global batches, in the same order, with the same augmentation: a run can move between them."""
    for name, options in (("synthetic", {"image_size": 8}),
                          ("fashion_mnist", {"data_dir": tiny_fashion[0], "augment": True, "image_size": 24})):
        one = global_batches(name, 1, replicas, 5, **options)
        for pipelines in {2, replicas}:
            for got, want in zip(global_batches(name, pipelines, replicas, 5, **options), one, strict=True):
                np.testing.assert_array_equal(got, want, err_msg=f"{name}, {pipelines} pipelines")


def test_fashion_mnist_from_idx_files_tiled_to_rgb(tiny_fashion: tuple[Path, np.ndarray, np.ndarray]) -> None:
    data_dir, images, labels = tiny_fashion
    x, y = next(iter(make_dataset("fashion_mnist", "train", 6, data_dir=data_dir, channels=3, repeat=False)))
    assert x.shape == (6, 28, 28, 3) and x.dtype == tf.float32
    order = [list(labels).index(label) for label in y.numpy()]  # training order is shuffled; labels are unique
    np.testing.assert_allclose(x.numpy()[..., 0], (images[order] / 255.0 - 0.2860) / 0.3530, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x.numpy()[..., 0], x.numpy()[..., 2])
    assert sorted(y.numpy()) == sorted(labels)
    resized = next(iter(make_dataset("fashion_mnist", "val", 2, data_dir=data_dir, image_size=32)))[0]
    assert resized.shape == (2, 32, 32, 1)
    info = dataset_info("fashion_mnist", data_dir)
    assert (info["num_train"], info["num_val"], info["image_shape"]) == (6, 4, (28, 28, 1))


def test_corrupt_idx_file_is_named(tiny_fashion: tuple[Path, np.ndarray, np.ndarray]) -> None:
    data_dir, _, _ = tiny_fashion
    bad = data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">i", 99) + b"\x01\x02"))
    with pytest.raises(DataNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz: idx header announces"):
        verify("fashion_mnist", data_dir)


def test_holdout_takes_validation_from_the_training_set_and_leaves_test_alone(
        tiny_fashion: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, labels = tiny_fashion

    def split_labels(split: str, holdout: int) -> list[int]:
        dataset = make_dataset("fashion_mnist", split, 1, data_dir=root, holdout=holdout, repeat=False)
        return sorted(int(y[0]) for _, y in dataset)

    assert split_labels("train", 2) == sorted(labels[:4].tolist())
    assert split_labels("val", 2) == sorted(labels[4:].tolist())
    assert split_labels("test", 2) == split_labels("val", 0) == sorted(labels[:4].tolist())
    with pytest.raises(ValueError, match="leaves no training examples"):
        make_dataset("fashion_mnist", "train", 1, data_dir=root, holdout=6)


@pytest.mark.skipif(not dataset_available("fashion_mnist"), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_pipeline() -> None:
    x, y = next(iter(make_dataset("fashion_mnist", "train", 32, channels=3, image_size=32, augment=True)))
    assert x.shape == (32, 32, 32, 3) and y.shape == (32,) and abs(float(tf.reduce_mean(x))) < 1.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "mnist"}, "unknown data set 'mnist'"),
    ({"split": "holdout"}, "unknown split 'holdout'"),
    ({"holdout": 10}, "holdout applies to cifar10 and fashion_mnist only"),
    ({"label_offset": 1}, "label_offset applies to ImageNet TFRecords only"),
    ({"shard": (2, 2)}, "shard must be"),
    ({"shard": (2, 0), "input_context": tf.distribute.InputContext()}, "either shard or input_context"),
    ({"augment": True}, "no augmentation"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"channels": 2}, "channels must be"),
])
def test_bad_arguments_are_value_errors(kwargs: dict, message: str) -> None:
    arguments = {"name": "synthetic", "split": "train", "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_dataset(arguments.pop("name"), arguments.pop("split"), arguments.pop("batch_size"), **arguments)


def test_registry_answers_without_importing_tensorflow(tmp_path: Path) -> None:
    probe = (
        "import sys; from kfac_repro.data import registry as r; "
        f"[(r.dataset_available(n, {str(tmp_path)!r}), r.describe(n, {str(tmp_path)!r})) for n in r.DATASET_NAMES]; "
        "r.dataset_info('synthetic'); r.verify('synthetic'); "
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
    assert DATASET_NAMES == ("cifar10", "imagenet", "fashion_mnist", "synthetic")


def test_labels_out_of_range_are_named_by_verify(tiny_fashion: tuple[Path, np.ndarray, np.ndarray]) -> None:
    data_dir, _, _ = tiny_fashion
    bad = data_dir / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    _write_idx(bad, np.array([0, 1, 2, 3, 12, 9], np.uint8))
    with pytest.raises(DataNotFoundError, match=r"train-labels-idx1-ubyte\.gz: label 12 at index 4 is outside 0\.\.9"):
        verify("fashion_mnist", data_dir)


def test_a_data_dir_without_the_data_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No silent fallback to the system copy (/usr/share/datasets/fashion-mnist) when a data directory is given."""
    monkeypatch.delenv("KFAC_REPRO_DATA", raising=False)
    empty = tmp_path / "empty"
    assert not dataset_available("fashion_mnist", empty)
    with pytest.raises(DataNotFoundError, match=f"looked in: {empty / 'fashion-mnist'}\\. Expected"):
        verify("fashion_mnist", empty)
    monkeypatch.setenv("KFAC_REPRO_DATA", str(empty))
    with pytest.raises(DataNotFoundError, match=f"looked in: {empty / 'fashion-mnist'}\\. Expected"):
        verify("fashion_mnist")
