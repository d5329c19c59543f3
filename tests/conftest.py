"""Shared pytest set-up: quiet TensorFlow logs before anything imports it; tiny data sets in the real file formats."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked fashion_mnist are skipped, with the reason and the fix, where the data set is absent."""
    if item.get_closest_marker("fashion_mnist") is not None:
        from kfac_repro.data.registry import dataset_available, describe

        if not dataset_available("fashion_mnist"):
            pytest.skip(f"Fashion-MNIST absent ({describe('fashion_mnist')}); install it with `make data`")

CIFAR_CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
CIFAR_STEMS = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
WNIDS = ["n01440764", "n01443537", "n01484850"]


def _cifar_batches(per_batch: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {stem: (rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, per_batch))
            for stem in CIFAR_STEMS}


def _expected(batches: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train = [batches[stem] for stem in CIFAR_STEMS[:5]]
    return {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "val": batches["test_batch"]}


def write_cifar10_python(directory: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cifar-10-batches-py/ as in the official archive (protocol-2 pickles of dicts with bytes keys)."""
    directory.mkdir(parents=True)
    batches = _cifar_batches(per_batch)
    for stem, (images, labels) in batches.items():
        record = {b"batch_label": stem.encode(), b"labels": [int(v) for v in labels],
                  b"data": images.transpose(0, 3, 1, 2).reshape(per_batch, 3072),
                  b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        (directory / stem).write_bytes(pickle.dumps(record, protocol=2))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": CIFAR_CLASSES, b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return _expected(batches)


def write_cifar10_binary(directory: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cifar-10-batches-bin/: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    directory.mkdir(parents=True)
    batches = _cifar_batches(per_batch)
    for stem, (images, labels) in batches.items():
        planes = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        records = np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1)
        (directory / f"{stem}.bin").write_bytes(records.tobytes())
    return _expected(batches)


def jpeg_bytes(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] → JPEG bytes (TensorFlow's encoder, quality 95)."""
    import tensorflow as tf

    return bytes(tf.io.encode_jpeg(image, quality=95).numpy())


def _images(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(40, 72, (count, 2))
    return [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in sizes]


def write_imagenet_folders(root: Path, per_class: dict[str, int]) -> None:
    """root/{train,val}/<wnid>/<wnid>_<i>.JPEG for the WNIDS; per_class: split -> images per class."""
    for split, count in per_class.items():
        for label, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i, image in enumerate(_images(count, seed=100 * label + len(split))):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg_bytes(image))


def write_imagenet_tfrecords(root: Path, split_shards: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """Shards <prefix>-NNNNN-of-MMMMM with the standard features (1-based labels); split -> (shards, per shard).

    Returns split -> the 1-based labels written, in file order.
    """
    import tensorflow as tf

    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[int]] = {}
    for split, (shards, per_shard) in split_shards.items():
        prefix = "train" if split == "train" else "validation"
        written[split] = []
        for shard in range(shards):
            with tf.io.TFRecordWriter(str(root / f"{prefix}-{shard:05d}-of-{shards:05d}")) as writer:
                for i, image in enumerate(_images(per_shard, seed=shard + 17 * len(split))):
                    label = 1 + (shard * per_shard + i) % len(WNIDS)
                    feature = {
                        "image/encoded": _bytes_feature(jpeg_bytes(image)),
                        "image/format": _bytes_feature(b"JPEG"),
                        "image/height": _int_feature(image.shape[0]),
                        "image/width": _int_feature(image.shape[1]),
                        "image/class/label": _int_feature(label),
                        "image/class/synset": _bytes_feature(WNIDS[label - 1].encode()),
                    }
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())
                    written[split].append(label)
    return written


def _bytes_feature(value: bytes) -> object:
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> object:
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


@pytest.fixture
def cifar10_python(tmp_path: Path) -> tuple[Path, dict]:
    """(data_dir, expected {"train": (x, y), "val": (x, y)}) with python batches under data_dir/cifar10/."""
    return tmp_path, write_cifar10_python(tmp_path / "cifar10" / "cifar-10-batches-py")


@pytest.fixture
def cifar10_binary(tmp_path: Path) -> tuple[Path, dict]:
    """(data_dir, expected) with binary batches under data_dir/cifar10/."""
    return tmp_path, write_cifar10_binary(tmp_path / "cifar10" / "cifar-10-batches-bin")
