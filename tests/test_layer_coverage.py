"""Every common kind of Keras model trains under K-FAC: built, several steps with finite and falling loss; layers
K-FAC cannot precondition are found when the optimizer is built and left out with a reason in summary().

The kinds that used to crash the process (a segfault inside tf.vectorized_map for EinsumDense with an activation;
recurrent cells) run in a subprocess, so that a crash fails their test instead of the test run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from tests.model_kinds import train

ROOT = Path(__file__).resolve().parents[1]


def assert_trains(losses: list[float]) -> None:
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize(("kind", "blocks"), [
    ("transformer", ["kronecker-einsum-expand", "scale-shift-exact", "kronecker-embedding"]),
    ("lstm", ["recurrent cell"]),
    ("gru", ["recurrent cell"]),
])
def test_crash_prone_model_kinds_train_in_a_subprocess(kind: str, blocks: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "tests.model_kinds", kind], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{kind}: exit {done.returncode}\n{done.stderr[-3000:]}"
    summary, last = done.stdout.rsplit("\n", 2)[0], done.stdout.strip().splitlines()[-1]
    for text in blocks:
        assert text in summary, summary
    assert_trains(json.loads(last)["losses"])


@pytest.mark.parametrize(("kind", "blocks"), [
    ("text_cnn", ["kronecker-embedding", "kronecker-conv1d-cheap", "kronecker-dense"]),
    ("separable", ["kronecker-depthwise-cheap", "kronecker-separable-cheap", "kronecker-dense"]),
])
def test_model_kinds_train(kind: str, blocks: list[str]) -> None:
    optimizer, losses = train(kind)
    assert [b.kind for b in optimizer.blocks] == blocks
    assert_trains(losses)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_cnn_keeps_statistics_and_weights_in_float32(policy: str) -> None:
    optimizer, losses = train(f"cnn_{policy}")
    assert optimizer.model.layers[0].compute_dtype == policy.removeprefix("mixed_")
    assert {v.dtype for v in optimizer.model.trainable_variables} == {"float32"}
    factors = optimizer.factors()
    assert all(value.dtype == np.float32 and np.all(np.isfinite(value))
               for block in factors.values() for value in block.values())
    assert np.abs(factors[optimizer.blocks[0].name]["G"]).max() > 0  # derivatives did not underflow to nothing
    assert_trains(losses)


def model_with_odd_layers() -> keras.Model:
    """A Dense, a per-position EinsumDense (kernel axis shared with input and output: no Kronecker structure)."""
    inputs = keras.Input((4, 3))
    h = keras.layers.Dense(3, name="first")(inputs)
    h = keras.layers.EinsumDense("abc,bcd->abd", (4, 2), activation="tanh", name="per_position")(h)
    h = keras.layers.Dense(3, name="mixer_1")(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(2, name="mixer_2")(h))


def test_unsupported_and_skipped_layers_are_left_out_at_build_with_a_reason() -> None:
    keras.utils.set_random_seed(0)
    model = model_with_odd_layers()
    optimizer = KFAC(model, KFACConfig(skip_layers=("mixer_*",), inverse_every=1))
    assert [b.name for b in optimizer.blocks] == ["first"]
    lines = {line.split()[0]: line for line in optimizer.summary().splitlines()[2:]}
    assert "none (unpreconditioned)" in lines["per_position"] and "per-head weights" in lines["per_position"]
    assert "skip_layers: matches 'mixer_*'" in lines["mixer_1"] and "mixer_*" in lines["mixer_2"]
    x, y = tf.random.normal((8, 4, 3)), tf.constant([0, 1] * 4)
    assert_trains([optimizer.train_step(x, y)["loss"] for _ in range(6)])


def test_skip_layers_by_exact_name_and_bad_sequence_factors() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b")])
    assert [b.name for b in KFAC(model, KFACConfig(skip_layers=["b"])).blocks] == ["a"]
    with pytest.raises(ValueError, match="sequence_factors: expected 'expand' or 'reduce', found 'both'"):
        KFACConfig(sequence_factors="both")  # type: ignore[arg-type]


def test_grouped_conv_falls_back_to_the_generic_block_at_build() -> None:
    model = keras.Sequential([keras.Input((5, 5, 4)), keras.layers.Conv2D(4, 3, groups=2, name="grouped"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    optimizer = KFAC(model, KFACConfig())
    assert optimizer.blocks[0].kind == "generic-exact"
    assert "Conv2D channels_first or grouped" in optimizer.summary()
