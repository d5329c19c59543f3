"""ImageNet from class folders of JPEGs and from TFRecord shards: labels, the paper's crops, sharding, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import WNIDS, write_imagenet_folders, write_imagenet_tfrecords

from kfac_repro.data.imagenet_files import find_imagenet, folder_examples
from kfac_repro.data.locations import DataNotFoundError
from kfac_repro.data.preprocessing import CHANNEL_STATS, resize_side
from kfac_repro.data.registry import dataset_available, dataset_info, make_dataset, verify
from kfac_repro.data.tfrecord_index import count_records


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    write_imagenet_folders(tmp_path / "imagenet", {"train": 4, "val": 2})
    return tmp_path


@pytest.fixture
def tfrecords(tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    return tmp_path, write_imagenet_tfrecords(tmp_path / "imagenet", {"train": (3, 4), "val": (1, 5)})


def _pixels(images: np.ndarray) -> np.ndarray:
    mean, std = (np.array(v, np.float32) for v in CHANNEL_STATS["imagenet"])
    return (images * std + mean) * 255.0


def _resized(path: str, size: int) -> np.ndarray:
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    side = resize_side(size)
    return tf.image.resize(image, [side, side]).numpy()


def test_folder_labels_are_sorted_class_indices(folders: Path) -> None:
    paths, labels = folder_examples(folders / "imagenet", "val")
    assert [Path(p).parent.name for p in paths] == [w for w in WNIDS for _ in range(2)]
    assert labels == [0, 0, 1, 1, 2, 2]
    batches = list(make_dataset("imagenet", "val", 4, data_dir=folders, image_size=32, repeat=False))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 32, 32, 3), (2, 32, 32, 3)]
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int32
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    info = dataset_info("imagenet", folders)
    assert (info["num_train"], info["num_val"], info["num_classes"], info["format"]) == (12, 6, 3, "folders")


def test_validation_is_the_centre_crop_of_the_resized_image(folders: Path) -> None:
    size = 28
    paths, _ = folder_examples(folders / "imagenet", "val")
    images = next(iter(make_dataset("imagenet", "val", 6, data_dir=folders, image_size=size)))[0].numpy()
    offset = (resize_side(size) - size) // 2
    for path, image in zip(paths, images, strict=True):
        expected = _resized(path, size)[offset:offset + size, offset:offset + size]
        np.testing.assert_allclose(_pixels(image), expected, atol=1e-2)


def test_training_crop_is_a_random_window_of_the_resized_image(folders: Path) -> None:
    size = 28
    side = resize_side(size)
    dataset = make_dataset("imagenet", "train", 1, data_dir=folders, image_size=size, num_classes=1, seed=5)
    paths, _ = folder_examples(folders / "imagenet", "train", num_classes=1)
    windows = {path: _resized(path, size) for path in paths}
    offsets = set()
    for image, label in dataset.take(12):
        assert tuple(image.shape) == (1, size, size, 3) and int(label[0]) == 0
        crop = _pixels(image.numpy()[0])
        matches = [(path, dy, dx) for path, full in windows.items() for dy in range(side - size + 1)
                   for dx in range(side - size + 1)
                   if np.allclose(full[dy:dy + size, dx:dx + size], crop, atol=1e-2)]
        assert matches, "the crop is no S×S window of a resized training image"
        offsets.add(matches[0][1:])
    assert len(offsets) > 1


def test_tfrecords_use_the_label_offset(tfrecords: tuple[Path, dict]) -> None:
    data_dir, written = tfrecords
    labels = np.concatenate([y for _, y in make_dataset("imagenet", "val", 2, data_dir=data_dir, image_size=16,
                                                        repeat=False)])
    np.testing.assert_array_equal(labels, np.array(written["val"]) - 1)
    raw = np.concatenate([y for _, y in make_dataset("imagenet", "val", 5, data_dir=data_dir, image_size=16,
                                                     repeat=False, label_offset=0)])
    np.testing.assert_array_equal(raw, written["val"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="label_offset=2"):
        list(make_dataset("imagenet", "val", 5, data_dir=data_dir, image_size=16, repeat=False, label_offset=2))
    two_classes = np.concatenate([y for _, y in make_dataset("imagenet", "val", 5, data_dir=data_dir,
                                                             image_size=16, repeat=False, num_classes=2)])
    assert sorted(two_classes) == sorted(v - 1 for v in written["val"] if v <= 2)
    info = dataset_info("imagenet", data_dir)
    assert (info["num_train"], info["num_val"], info["format"]) == (12, 5, "tfrecord")


@pytest.mark.parametrize("workers", [2, 4], ids=["by-file", "by-record"])
def test_tfrecord_shards_are_disjoint_and_cover(workers: int, tfrecords: tuple[Path, dict]) -> None:
    data_dir, _ = tfrecords
    seen = []
    for index in range(workers):
        dataset = make_dataset("imagenet", "train", 1, data_dir=data_dir, image_size=16, augment=False,
                               shard=(workers, index), repeat=False)
        seen.append([x.numpy().tobytes() for x, _ in dataset])
    flat = [x for shard in seen for x in shard]
    assert len(flat) == len(set(flat)) == 12


def test_folder_shards_via_input_context_are_disjoint(folders: Path) -> None:
    seen = []
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2)
        dataset = make_dataset("imagenet", "val", 4, data_dir=folders, image_size=16, input_context=context,
                               repeat=False)
        batches = list(dataset)
        assert batches[0][0].shape[0] == 2  # global batch 4 over 2 replicas
        seen.append([x.tobytes() for batch, _ in batches for x in batch.numpy()])
    assert len(seen[0]) == len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])


def test_missing_and_corrupt_shards_are_named(tfrecords: tuple[Path, dict]) -> None:
    data_dir, _ = tfrecords
    root = data_dir / "imagenet"
    assert count_records(root / "train-00001-of-00003") == 4
    assert "12 training and 5 validation images" in verify("imagenet", data_dir)
    shard = root / "train-00001-of-00003"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataNotFoundError, match=r"train-00001-of-00003: record 3 .*truncated"):
        verify("imagenet", data_dir)
    shard.write_bytes(b"\x00" * 40)
    with pytest.raises(DataNotFoundError, match=r"train-00001-of-00003: record 0 .* bad length checksum"):
        verify("imagenet", data_dir)
    shard.unlink()
    with pytest.raises(DataNotFoundError, match="train-00001-of-00003: missing; expected 3 shards"):
        make_dataset("imagenet", "train", 2, data_dir=data_dir)


def test_missing_split_and_bad_image_are_named(folders: Path) -> None:
    bad = folders / "imagenet" / "val" / WNIDS[1] / "broken.JPEG"
    bad.write_bytes(b"GIF89a...")
    with pytest.raises(DataNotFoundError, match=r"broken\.JPEG: not a JPEG or PNG"):
        verify("imagenet", folders)
    for path in (folders / "imagenet" / "val").rglob("*"):
        if path.is_file():
            path.unlink()
    for path in sorted((folders / "imagenet" / "val").iterdir()):
        path.rmdir()
    (folders / "imagenet" / "val").rmdir()
    assert not dataset_available("imagenet", folders)
    with pytest.raises(DataNotFoundError, match=r"imagenet/val: missing; expected"):
        find_imagenet(folders)
