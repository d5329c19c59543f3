"""`kfac-repro data`: list, verify, download (checksum, atomic unpack, nothing left on failure), bench; exit codes."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import write_cifar10_python

import cli


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, ["data", *args])


@pytest.fixture
def archive(tmp_path: Path) -> tuple[str, str]:
    """(file:// URL, MD5) of a tar.gz laid out like cifar-10-python.tar.gz."""
    source = tmp_path / "source"
    write_cifar10_python(source / "cifar-10-batches-py")
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path.as_uri(), hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_list_answers_without_importing_tensorflow(tmp_path: Path) -> None:
    probe = ("import sys; from click.testing import CliRunner; import cli; "
             f"r = CliRunner().invoke(cli.main, ['data', 'list', '--data-dir', {str(tmp_path)!r}]); print(r.output); "
             "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(r.exit_code)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "synthetic" in result.stdout and f"looked in: {tmp_path / 'cifar10'}" in result.stdout


def test_verify_exit_codes(cifar10_python: tuple[Path, dict]) -> None:
    data_dir, _ = cifar10_python
    ok = invoke("verify", "cifar10", "--data-dir", str(data_dir))
    assert ok.exit_code == 0 and "ok: python batches" in ok.output and "20 training and 4 test images" in ok.output
    (data_dir / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    bad = invoke("verify", "cifar10", "--data-dir", str(data_dir))
    assert bad.exit_code == 1 and "test_batch: not a readable CIFAR-10 python batch" in bad.output
    assert invoke("verify", "mnist").exit_code == 2


def test_verify_fails_on_a_fractional_label_naming_the_file(cifar10_python: tuple[Path, dict]) -> None:
    data_dir, _ = cifar10_python
    path = data_dir / "cifar10" / "cifar-10-batches-py" / "data_batch_5"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0.5, 1.0]}, protocol=2))
    result = invoke("verify", "cifar10", "--data-dir", str(data_dir))
    assert result.exit_code == 1, result.output
    assert "data_batch_5: label 0.5 at index 0 is not an integer in 0..9" in result.output
    assert "Traceback" not in result.output


def test_download_unpacks_a_matching_archive(tmp_path: Path, archive: tuple[str, str]) -> None:
    url, md5 = archive
    data_dir = tmp_path / "data"
    result = invoke("download", "cifar10", "--data-dir", str(data_dir), "--url", url, "--md5", md5)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (data_dir / "cifar10").iterdir()) == ["cifar-10-batches-py"]
    assert invoke("verify", "cifar10", "--data-dir", str(data_dir)).exit_code == 0
    again = invoke("download", "cifar10", "--data-dir", str(data_dir), "--url", url, "--md5", md5)
    assert again.exit_code == 0 and "already present" in again.output


def test_wrong_md5_leaves_nothing_behind(tmp_path: Path, archive: tuple[str, str]) -> None:
    url, _ = archive
    data_dir = tmp_path / "data"
    result = invoke("download", "cifar10", "--data-dir", str(data_dir), "--url", url)  # the official MD5
    assert result.exit_code == 1
    assert "does not match the expected c58f30108f718f92721af3b95e74349a" in result.output
    assert not data_dir.exists()


def test_incomplete_archive_or_bad_url_leaves_nothing_behind(tmp_path: Path) -> None:
    source = tmp_path / "source" / "cifar-10-batches-py"
    write_cifar10_python(source)
    (source / "data_batch_4").unlink()
    path = tmp_path / "partial.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
    md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    data_dir = tmp_path / "data"
    (data_dir / "cifar10").mkdir(parents=True)  # an existing folder is kept, but left empty
    result = invoke("download", "cifar10", "--data-dir", str(data_dir), "--url", path.as_uri(), "--md5", md5)
    assert result.exit_code == 1 and "data_batch_4: missing from the archive" in result.output
    assert list((data_dir / "cifar10").iterdir()) == []
    missing = invoke("download", "cifar10", "--data-dir", str(data_dir), "--url", (tmp_path / "nope.tgz").as_uri())
    assert missing.exit_code == 1 and "download failed" in missing.output
    assert list((data_dir / "cifar10").iterdir()) == []


def test_bench_prints_both_rates_and_the_ratio() -> None:
    result = invoke("bench", "--model", "cifar10_net", "--image-size", "32", "--batch-size", "8", "--images", "16",
                    "--jpeg-size", "48", "64", "--steps", "2")
    assert result.exit_code == 0, result.output
    for text in ("input pipeline", "images/s", "SGD step", "ratio pipeline / training"):
        assert text in result.output
