"""Experiment specs: every committed spec resolves in every profile; merging, overrides and the reference docs;
a corpus of malformed specs each rejected with exit 2, a message naming the file and the field, writing nothing;
list/show/validate answer without importing TensorFlow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from kfac_repro.specs import SpecError, load_spec, spec_names
from kfac_repro.specs.reference import reference_path, reference_text

MALFORMED = sorted((Path(__file__).parent / "specs_malformed").glob("*.yaml"))
PAPER_SPECS = {"cifar10-async", "googlenet-bs256", "alexnet-bs2048", "resnet50-bs512", "googlenet-batch-scaling",
               "googlenet-kfc-vs-cheap", "googlenet-kl-decay"}


def test_every_paper_experiment_has_a_spec_resolving_in_all_profiles() -> None:
    assert set(spec_names()) == PAPER_SPECS
    for name in spec_names():
        for profile in ("paper", "cpu", "smoke"):
            spec = load_spec(name, profile)
            assert spec.arms and spec.figure.startswith("Fig. ")
            for arm in spec.arms.values():
                assert arm.training["batch_size"] % arm.distribution["workers"] == 0


def test_paper_values_and_profile_overrides() -> None:
    paper = load_spec("alexnet-bs2048")
    kfac = paper.arms["kfac"]
    assert kfac.data["name"] == "imagenet" and kfac.model["input_size"] == 224  # from base/imagenet.yaml
    assert kfac.optimizer["doubly_factored"] == ["fc6"] and kfac.optimizer["conv_factors"] == "cheap"
    assert kfac.optimizer["kl_clip"] == 0.01 and kfac.optimizer["decay_rate"] == 0.96
    assert kfac.optimizer["decay_every"] == round(0.5 * 1_281_167 / 2048)  # half an epoch, in steps
    sgd = paper.arms["sgd"].optimizer
    assert sgd["name"] == "sgd" and "kl_clip" not in sgd  # another optimizer replaces the section whole
    assert sgd["lr_decay_every"] == round(2 * 1_281_167 / 2048)  # plain SGD: every two epochs
    cpu = load_spec("alexnet-bs2048", "cpu")
    assert cpu.arms["kfac"].data["name"] == "fashion_mnist" and cpu.arms["kfac"].training["batch_size"] == 512
    assert cpu.arms["sgd"].optimizer["learning_rate"] == 0.01  # a profile's per-arm override
    assert cpu.arms["sgd-bn-rbz256"].model["bn_chunk_size"] == 64
    assert cpu.arms["kfac"].optimizer["doubly_factored"] == ["fc6"]  # kept at reduced scale


def test_set_overrides_apply_to_every_arm_and_are_validated() -> None:
    spec = load_spec("cifar10-async", "smoke", ["training.steps=7", "optimizer.damping=0.5"])
    assert {arm.training["steps"] for arm in spec.arms.values()} == {7}
    assert spec.arms["async-gpu1"].optimizer["damping"] == 0.5
    with pytest.raises(SpecError, match=r"--set: training.steps: expected an integer >= 1, found -3"):
        load_spec("cifar10-async", "smoke", ["training.steps=-3"])
    with pytest.raises(SpecError, match=r"expected SECTION.FIELD=VALUE"):
        load_spec("cifar10-async", "smoke", ["steps=3"])
    with pytest.raises(SpecError, match=r"traning: unknown key \(did you mean 'training'\?\)"):
        load_spec("cifar10-async", "smoke", ["traning.steps=3"])


def test_unknown_profile_and_unknown_experiment() -> None:
    with pytest.raises(SpecError, match="no profile 'gpu'; profiles: paper, cpu, smoke"):
        load_spec("cifar10-async", "gpu")
    with pytest.raises(SpecError, match="unknown experiment; known experiments: alexnet-bs2048"):
        load_spec("cifar10")


def test_reference_docs_are_generated_from_the_schema() -> None:
    assert reference_path().read_text() == reference_text(), "run: kfac-repro validate --write-reference"


def test_malformed_corpus_is_large_enough() -> None:
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("path", MALFORMED, ids=[p.stem for p in MALFORMED])
def test_malformed_spec_is_rejected_naming_file_and_field(path: Path, tmp_path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(cli.main, ["validate", str(path)])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    assert f"{path}: " in result.output and expected in result.output, result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_spec_commands_do_not_import_tensorflow(tmp_path: Path) -> None:
    probe = ("import sys; from click.testing import CliRunner; import cli; "
             "codes = [CliRunner().invoke(cli.main, a).exit_code for a in "
             "(['list'], ['show', 'cifar10-async', '--profile', 'cpu'], ['validate'])]; "
             "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'; print(codes)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 0, 0]"
