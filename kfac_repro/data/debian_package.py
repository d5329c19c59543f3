"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package, without root: `apt-get download` fetches the .deb
into a staging directory inside the data root, `dpkg-deb -x` unpacks it there, every file is read back, and the
folder is renamed into place as <data root>/fashion-mnist (one atomic rename; on failure nothing is left)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from kfac_repro.data import fashion_mnist
from kfac_repro.data.download import DownloadError
from kfac_repro.data.locations import DataNotFoundError, data_root

PACKAGE = "dataset-fashion-mnist"
_PACKAGED_DIR = Path("usr/share/datasets/fashion-mnist")


def install_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """Install <data root>/fashion-mnist from the Debian package; return it (DownloadError on any failure)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DownloadError(f"{tool} not found: Fashion-MNIST is installed from the Debian package {PACKAGE}; "
                                f"elsewhere put the four idx files in {data_root(data_dir) / 'fashion-mnist'}")
    target = data_root(data_dir) / "fashion-mnist"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fashion-mnist-", dir=target.parent) as staging:
        _run(["apt-get", "download", PACKAGE], Path(staging))
        (deb,) = Path(staging).glob(f"{PACKAGE}_*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(Path(staging) / "root")], Path(staging))
        unpacked = Path(staging) / "root" / _PACKAGED_DIR
        try:
            fashion_mnist.load_fashion_mnist(unpacked.parent)  # reads and checks every file
        except DataNotFoundError as error:
            raise DownloadError(f"{deb.name}: {error}") from error
        if target.exists():
            raise DownloadError(f"{target} appeared meanwhile; left as it is")
        unpacked.rename(target)
    return target


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        hint = " (try `sudo apt-get update` first)" if command[:2] == ["apt-get", "download"] else ""
        raise DownloadError(f"{' '.join(command)} failed{hint}: {result.stderr.strip()[-500:]}")
