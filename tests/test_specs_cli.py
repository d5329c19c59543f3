"""`kfac-repro list`, `show` and `validate`: a corpus of malformed specs each rejected with exit 2, a message
naming the file and the field, and nothing written; the commands answer without importing TensorFlow."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

import cli
from kfac_repro.data import registry

MALFORMED = sorted((Path(__file__).parent / "specs_malformed").glob("*.yaml"))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args))


@pytest.fixture
def empty_workdir(tmp_path: Path) -> Iterator[Path]:
    """A working directory holding an empty results/, to check that nothing is written."""
    (tmp_path / "results").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def test_malformed_corpus_is_large_enough() -> None:
    assert len(MALFORMED) >= 20


def expectation(path: Path) -> str:
    """The spec's first line '# expect: …', or its .expect file beside it (for a spec that is not UTF-8)."""
    sidecar = path.with_suffix(".expect")
    if sidecar.exists():
        return sidecar.read_text().strip()
    return path.read_bytes().split(b"\n")[0].decode("ascii").removeprefix("# expect: ")


@pytest.mark.parametrize("path", MALFORMED, ids=[p.stem for p in MALFORMED])
def test_malformed_spec_is_rejected_naming_file_and_field(path: Path, empty_workdir: Path) -> None:
    result = invoke("validate", str(path))
    assert result.exit_code == 2, result.output[:2000]
    assert f"error: {path}: " in result.output and expectation(path) in result.output, result.output[:2000]
    assert len(result.output) < 1000  # values quoted from the file are truncated
    assert [p.name for p in empty_workdir.rglob("*")] == ["results"]  # nothing written


def test_validate_passes_every_committed_spec() -> None:
    result = invoke("validate")
    assert result.exit_code == 0, result.output
    assert result.output.count("OK ") == 7 and "profiles: paper, cpu, smoke" in result.output


def test_show_prints_the_resolved_arms_as_yaml() -> None:
    result = invoke("show", "alexnet-bs2048", "--profile", "cpu", "--arm", "kfac", "--set", "training.steps=9")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert (shown["name"], shown["profile"], list(shown["arms"])) == ("alexnet-bs2048", "cpu", ["kfac"])
    kfac = shown["arms"]["kfac"]
    assert kfac["training"]["steps"] == 9 and kfac["optimizer"]["doubly_factored"] == ["fc6"]
    assert kfac["optimizer"]["stats_decay"] == 0.95 and kfac["data"]["name"] == "fashion_mnist"


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "optimizer.damping=-1"], "error: --set: optimizer.damping: expected a number > 0, found -1"),
    (["--set", "optimizer.dampnig=1"], "--set: optimizer.dampnig: unknown key (did you mean 'damping'?)"),
    (["--profile", "gpu"], "profiles: no profile 'gpu'"),
    (["--arm", "nope"], "arms: no arm named nope"),
])
def test_show_rejects_bad_options_with_exit_2(args: list[str], message: str, empty_workdir: Path) -> None:
    result = invoke("show", "alexnet-bs2048", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert [p.name for p in empty_workdir.rglob("*")] == ["results"]


def test_show_unknown_experiment() -> None:
    result = invoke("show", "alexnet")
    assert result.exit_code == 2 and "alexnet: unknown experiment; known experiments:" in result.output


def test_list_shows_figures_arms_profiles_and_data(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up = []

    def available(name: str, data_dir: str | None = None) -> bool:
        looked_up.append(name)
        return name != "imagenet"

    monkeypatch.setattr(registry, "dataset_available", available)
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert "alexnet-bs2048  (Fig. 4)  3 arms: sgd, sgd-bn-rbz256, kfac" in result.output
    assert "--profile paper    data: imagenet (missing)" in result.output
    assert "--profile paper    data: cifar10 (present)" in result.output
    assert "--profile cpu      data: fashion_mnist (present)" in result.output
    assert set(looked_up) == {"cifar10", "imagenet", "fashion_mnist", "synthetic"}
    names = invoke("list", "--names")
    assert names.exit_code == 0 and names.output.split() == sorted(
        spec.stem for spec in (Path(cli.__file__).parent / "experiments").glob("*.yaml"))


def test_spec_commands_do_not_import_tensorflow() -> None:
    probe = ("import sys; from click.testing import CliRunner; import cli; "
             "codes = [CliRunner().invoke(cli.main, a).exit_code for a in "
             "(['list'], ['show', 'cifar10-async', '--profile', 'cpu'], ['validate'])]; "
             "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'; "
             "print(codes)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 0, 0]"
