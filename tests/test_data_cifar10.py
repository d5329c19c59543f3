"""CIFAR-10 from the official python and binary batches: read-back, pipeline, sharding, missing/corrupt files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from kfac_repro.data.cifar10 import find_cifar10, load_cifar10
from kfac_repro.data.locations import DataNotFoundError
from kfac_repro.data.preprocessing import CHANNEL_STATS
from kfac_repro.data.registry import dataset_available, dataset_info, describe, make_dataset, verify


@pytest.mark.parametrize("fixture", ["cifar10_python", "cifar10_binary"])
def test_batches_read_back_exactly(fixture: str, request: pytest.FixtureRequest) -> None:
    data_dir, expected = request.getfixturevalue(fixture)
    (x_train, y_train), (x_val, y_val) = load_cifar10(data_dir)
    assert x_train.shape == (20, 32, 32, 3) and x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    np.testing.assert_array_equal(x_train, expected["train"][0])
    np.testing.assert_array_equal(y_train, expected["train"][1])
    np.testing.assert_array_equal(x_val, expected["val"][0])
    np.testing.assert_array_equal(y_val, expected["val"][1])
    assert dataset_available("cifar10", data_dir)
    info = dataset_info("cifar10", data_dir)
    assert (info["num_train"], info["num_val"], info["num_classes"], info["image_shape"]) == (20, 4, 10, (32, 32, 3))
    assert "4 test images" in verify("cifar10", data_dir)


def test_pipeline_yields_normalised_float_images_in_order(cifar10_python: tuple[Path, dict]) -> None:
    data_dir, expected = cifar10_python
    batches = list(make_dataset("cifar10", "val", 3, data_dir=data_dir, repeat=False))
    assert [tuple(x.shape) for x, _ in batches] == [(3, 32, 32, 3), (1, 32, 32, 3)]
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    mean, std = (np.array(v, np.float32) for v in CHANNEL_STATS["cifar10"])
    np.testing.assert_allclose(images, (expected["val"][0] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, expected["val"][1])


def test_training_pipeline_shuffles_repeats_and_augments(cifar10_binary: tuple[Path, dict]) -> None:
    data_dir, _ = cifar10_binary
    dataset = make_dataset("cifar10", "train", 8, data_dir=data_dir, augment=True, image_size=28, seed=3)
    batches = [x for x, _ in dataset.take(4)]  # 32 examples from 20: repeats
    assert all(tuple(x.shape) == (8, 28, 28, 3) for x in batches)
    again = [x for x, _ in make_dataset("cifar10", "train", 8, data_dir=data_dir, augment=True, image_size=28,
                                        seed=3).take(4)]
    np.testing.assert_array_equal(np.stack(batches), np.stack(again))  # the seed fixes order and crops


def test_shards_are_disjoint_and_cover_the_split(cifar10_python: tuple[Path, dict]) -> None:
    data_dir, _ = cifar10_python
    shards = []
    for index in range(3):
        dataset = make_dataset("cifar10", "train", 1, data_dir=data_dir, shard=(3, index), repeat=False)
        shards.append([x.numpy().tobytes() for x, _ in dataset])
    assert [len(s) for s in shards] == [7, 7, 6]
    whole = [x.numpy().tobytes() for x, _ in make_dataset("cifar10", "train", 1, data_dir=data_dir, repeat=False)]
    assert sorted(x for shard in shards for x in shard) == sorted(whole) and len(set(whole)) == 20


def test_missing_batch_names_the_file(cifar10_python: tuple[Path, dict]) -> None:
    data_dir, _ = cifar10_python
    missing = data_dir / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py/data_batch_3: missing; expected the CIFAR-10 "
                                                r"python batches data_batch_1\.\.5 and test_batch"):
        find_cifar10(data_dir)
    assert not dataset_available("cifar10", data_dir)
    assert "data_batch_3: missing" in describe("cifar10", data_dir)


def test_absent_data_set_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="looked in: " + str(tmp_path / "cifar10")):
        make_dataset("cifar10", "train", 4, data_dir=tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "code"])
def test_corrupt_python_batch_names_the_file(damage: str, cifar10_python: tuple[Path, dict]) -> None:
    data_dir, _ = cifar10_python
    path = data_dir / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    elif damage == "wrong_shape":
        path.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, protocol=2))
    else:  # a pickle that would run code if loaded naively
        path.write_bytes(pickle.dumps(print, protocol=2))
    with pytest.raises(DataNotFoundError, match="data_batch_2"):
        verify("cifar10", data_dir)


def test_corrupt_binary_batch_names_the_file(cifar10_binary: tuple[Path, dict]) -> None:
    data_dir, _ = cifar10_binary
    path = data_dir / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataNotFoundError, match=r"test_batch\.bin: .* not a whole number of 3073-byte records"):
        load_cifar10(data_dir)


@pytest.mark.parametrize(("labels", "message"), [
    ([0.0, 1.0, float("nan"), 3.0], r"label nan at index 2 is not an integer in 0\.\.9"),
    (np.array([0.0, 1.5, 2.0, 3.0]), r"label 1\.5 at index 1 is not an integer in 0\.\.9"),
    ([0, 1, 2, 10], r"label 10 at index 3 is not an integer in 0\.\.9"),
    (["0", "1", "2", "3"], r"labels are of type <U1; expected integers 0\.\.9"),
    ([True, False, True, False], r"labels are of type bool; expected integers 0\.\.9"),
    ([[0], [1], [2], [3]], r"b'data' is uint8 \(4, 3072\) and b'labels' has shape \(4, 1\); expected uint8 "
                           r"\[N, 3072\] and N labels"),
    (7, r"b'data' is uint8 \(4, 3072\) and b'labels' has shape \(\); expected"),
])
def test_labels_that_are_not_integers_0_to_9_name_the_file(labels: object, message: str,
                                                          cifar10_python: tuple[Path, dict]) -> None:
    """A NaN or fractional label would be cast to uint8 and trained on; a string or 2-D label would crash later."""
    data_dir, _ = cifar10_python
    path = data_dir / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": labels}, protocol=2))
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py/data_batch_2: " + message):
        verify("cifar10", data_dir)
    with pytest.raises(DataNotFoundError, match="data_batch_2: "):
        make_dataset("cifar10", "train", 4, data_dir=data_dir)
