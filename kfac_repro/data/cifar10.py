"""CIFAR-10 (Krizhevsky 2009): 50k training and 10k test 32×32 RGB images, 10 classes, from the official files.

Looked for in <data root>/cifar10/ then ~/.keras/datasets/, as either version of the official archive:
- cifar-10-batches-py/: data_batch_1..5 and test_batch, Python pickles of a dict with b"data" (uint8 [N, 3072]: the
  red, green then blue 32×32 planes, row-major) and b"labels" (N ints 0–9); batches.meta is optional.
- cifar-10-batches-bin/: data_batch_1..5.bin and test_batch.bin, records of 1 label byte + 3072 pixel bytes (same
  plane order).
The python version is preferred when both are present. Pickles are read with an unpickler that only admits plain
containers and numpy arrays, so a tampered file cannot run code. No TensorFlow here.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from kfac_repro.data.locations import DataNotFoundError, candidate_dirs

SYSTEM_DIRS = (Path.home() / ".keras" / "datasets",)
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
RECORD_BYTES = 1 + 32 * 32 * 3
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
# format -> (directory, file suffix, description used in error messages)
FORMATS = {
    "python": ("cifar-10-batches-py", "", "the CIFAR-10 python batches data_batch_1..5 and test_batch"),
    "binary": ("cifar-10-batches-bin", ".bin", "the CIFAR-10 binary batches data_batch_1..5.bin and test_batch.bin"),
}
Split = tuple[np.ndarray, np.ndarray]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


def find_cifar10(data_dir: str | Path | None = None) -> tuple[str, Path]:
    """(format, directory) of the first complete copy; DataNotFoundError naming a missing file or every place."""
    searched = candidate_dirs("cifar10", data_dir, SYSTEM_DIRS)
    for directory in searched:
        for fmt, (folder, suffix, expected) in FORMATS.items():
            batches = directory / folder
            if batches.is_dir():
                for stem in (*TRAIN_BATCHES, TEST_BATCH):
                    if not (batches / f"{stem}{suffix}").is_file():
                        raise DataNotFoundError(f"{batches / (stem + suffix)}: missing; expected {expected}")
                return fmt, batches
    looked = ", ".join(str(d) for d in searched)
    raise DataNotFoundError(
        f"CIFAR-10 not found; looked in: {looked}. Expected cifar-10-batches-py/ ({FORMATS['python'][2]}) or "
        f"cifar-10-batches-bin/ ({FORMATS['binary'][2]}). Run `kfac-repro data download cifar10`."
    )


def load_cifar10(data_dir: str | Path | None = None) -> tuple[Split, Split]:
    """((x_train uint8 [N,32,32,3], y_train uint8 [N]), (x_test, y_test)) from the python or binary batches."""
    fmt, directory = find_cifar10(data_dir)
    suffix = FORMATS[fmt][1]
    reader = read_python_batch if fmt == "python" else read_binary_batch
    train = [reader(directory / f"{stem}{suffix}") for stem in TRAIN_BATCHES]
    test = reader(directory / f"{TEST_BATCH}{suffix}")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])), test


def read_python_batch(path: Path) -> Split:
    """One pickled batch → (images uint8 [N, 32, 32, 3], labels uint8 [N])."""
    try:
        with open(path, "rb") as handle:
            batch = _SafeUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise DataNotFoundError(f"{path}: not a readable CIFAR-10 python batch ({error})") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataNotFoundError(f"{path}: expected a pickled dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD_BYTES - 1 or labels.shape != data.shape[:1]:
        raise DataNotFoundError(f"{path}: b'data' is {data.dtype} {data.shape} and b'labels' has shape {labels.shape}; "
                                "expected uint8 [N, 3072] and N labels")
    return _to_images(data), _checked_labels(labels, path)


def read_binary_batch(path: Path) -> Split:
    """One binary batch → (images uint8 [N, 32, 32, 3], labels uint8 [N])."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataNotFoundError(f"{path}: cannot read ({error})") from error
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataNotFoundError(f"{path}: {raw.size} bytes is not a whole number of {RECORD_BYTES}-byte records "
                                "(1 label byte + 3072 pixel bytes)")
    records = raw.reshape(-1, RECORD_BYTES)
    return _to_images(records[:, 1:]), _checked_labels(records[:, 0], path)


def verify_cifar10(data_dir: str | Path | None = None) -> str:
    """Read every batch; a one-line summary, or DataNotFoundError naming the bad file."""
    fmt, directory = find_cifar10(data_dir)
    (x_train, _), (x_test, _) = load_cifar10(data_dir)
    return f"{fmt} batches in {directory}: {len(x_train)} training and {len(x_test)} test images, 32×32×3"


def _to_images(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _checked_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """The labels as uint8, or DataNotFoundError naming the file and the first label that is not an integer in
    0..9 (a NaN or fractional label is refused, never rounded; strings are refused)."""
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DataNotFoundError(f"{path}: labels are of type {labels.dtype}; expected integers 0..{NUM_CLASSES - 1}")
    wrong = np.flatnonzero(~np.isin(labels, np.arange(NUM_CLASSES)))
    if wrong.size:
        index = int(wrong[0])
        raise DataNotFoundError(f"{path}: label {labels[index]} at index {index} is not an integer in "
                                f"0..{NUM_CLASSES - 1}")
    return labels.astype(np.uint8)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")
        return super().find_class(*_ALLOWED_GLOBALS[(module, name)])
