"""Fashion-MNIST (Xiao et al. 2017, MIT licence): 60k training and 10k test 28×28 grey images, 10 classes.

Read from the original idx-ubyte files (gzipped or not), found in the data directory, where Debian's
`dataset-fashion-mnist` package installs them, or in the Keras cache. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from kfac_repro.data.locations import DataNotFoundError, candidate_dirs

SYSTEM_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path.home() / ".keras" / "datasets" / "fashion-mnist",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08
NUM_CLASSES = 10


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (magic: two zero bytes, dtype code 0x08 = ubyte, rank; then big-endian int32 dims)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataNotFoundError(f"{path}: cannot read idx file ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise DataNotFoundError(f"{path}: not an idx-ubyte file (expected magic 00 00 08 <rank>)")
    rank = raw[3]
    header = 4 + 4 * rank
    dims = struct.unpack(f">{rank}i", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataNotFoundError(
            f"{path}: idx header announces shape {dims} ({expected} bytes) but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """The first directory holding all four Fashion-MNIST files (plain or .gz)."""
    searched = candidate_dirs("fashion-mnist", data_dir, SYSTEM_DIRS)
    for directory in searched:
        if all(_locate(directory, stem) is not None for stem in FILES.values()):
            return directory
    looked = ", ".join(str(d) for d in searched)
    raise DataNotFoundError(
        f"Fashion-MNIST not found; looked in: {looked}. Expected the files "
        f"{', '.join(v + '[.gz]' for v in FILES.values())}. Install them there with `kfac-repro data download "
        "fashion_mnist` (the Debian package dataset-fashion-mnist, no root needed)."
    )


def load_fashion_mnist(
    data_dir: str | Path | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train uint8 [60000,28,28], y_train uint8 [60000]), (x_test [10000,28,28], y_test [10000]))."""
    directory = find_fashion_mnist(data_dir)
    arrays = {key: read_idx(_locate(directory, stem) or directory / stem) for key, stem in FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise DataNotFoundError(
                f"{directory}: {split} split has images {images.shape} and labels {labels.shape}; "
                "expected [N,28,28] and [N]"
            )
        if labels.size and labels.max() >= NUM_CLASSES:
            bad = int(np.argmax(labels >= NUM_CLASSES))
            raise DataNotFoundError(
                f"{_locate(directory, FILES[f'{split}_labels'])}: label {labels[bad]} at index {bad} is outside "
                f"0..{NUM_CLASSES - 1}"
            )
    return (
        (arrays["train_images"], arrays["train_labels"]),
        (arrays["test_images"], arrays["test_labels"]),
    )


def _locate(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None
