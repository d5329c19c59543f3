"""Downloading CIFAR-10 (python version): checksum first, unpack beside the target, rename into place.

The archive is streamed into a staging directory created inside <data root>/cifar10/, its MD5 compared with the
published one before anything is unpacked, unpacked there (regular files and folders only), every batch read
back, and only then is cifar-10-batches-py renamed into place: one atomic rename on the same file system. On any
failure the staging directory (and the folders this call created) is removed: nothing is left half-written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kfac_repro.data import cifar10
from kfac_repro.data.locations import DataNotFoundError, data_root

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CHUNK = 1 << 20
Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class DownloadError(RuntimeError):
    """The download, its checksum, or the archive's content failed; nothing was left behind."""


def download_cifar10(
    data_dir: str | Path | None = None, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5,
    progress: Progress | None = None,
) -> Path:
    """Fetch `url` (http(s) or file://), check `md5`, install <data root>/cifar10/cifar-10-batches-py; return it."""
    parent = data_root(data_dir) / "cifar10"
    folder = cifar10.FORMATS["python"][0]
    target = parent / folder
    if target.exists():
        raise DownloadError(f"{target} already exists; remove it to download again")
    created = [d for d in (parent, *parent.parents) if not d.exists()]  # deepest first
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=parent))
    try:
        archive = staging / "cifar-10-python.tar.gz"
        _fetch(url, archive, md5, progress)
        unpacked = _unpack(archive, staging / "unpacked", folder)
        os.rename(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for directory in created:  # the folders this call made, if still empty
            if any(directory.iterdir()):
                break
            directory.rmdir()
    return target


def _fetch(url: str, destination: Path, md5: str, progress: Progress | None) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DownloadError(f"{url}: download failed ({error})") from error
    if digest.hexdigest() != md5.lower():
        raise DownloadError(f"{url}: MD5 {digest.hexdigest()} does not match the expected {md5}; "
                            "the archive was discarded unopened")


def _unpack(archive: Path, destination: Path, folder: str) -> Path:
    """Extract the archive (data filter: no links out, no devices) and read every batch back; the batches dir."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DownloadError(f"{archive.name}: not a readable tar.gz archive ({error})") from error
    batches = destination / folder
    try:
        for stem in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
            path = batches / stem
            if not path.is_file():
                raise DataNotFoundError(f"{folder}/{stem}: missing from the archive")
            cifar10.read_python_batch(path)
    except DataNotFoundError as error:
        raise DownloadError(f"the archive is not the CIFAR-10 python version: {error}") from error
    return batches
