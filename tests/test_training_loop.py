"""The training loop: rows at the logging interval, validation, checkpoints, and exact resumption."""

import csv
import dataclasses
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.distribute import interrupts
from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig
from kfac_repro.kfac.replicas import backing_variable
from kfac_repro.runner import checkpoints, safe_paths
from kfac_repro.runner.checkpoints import ResumeError
from kfac_repro.runner.loop import LoopSettings, TrainingDiverged, train
from kfac_repro.runner.metrics_log import COLUMNS, MetricsLog, read_rows


def setup(method: str) -> tuple[Any, Callable[[int], Iterator], Callable[[], tuple[float, float]]]:
    """An optimizer, its training batches from a given step on (a seeded order), and its validation."""
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    configs = {"kfac": KFACConfig(inverse_every=3, damping=0.1),
               "kfac-async": KFACConfig(inversion="async", async_lag=2, damping=0.1)}
    optimizer = KFAC(model, configs[method]) if method in configs else SGD(model, SGDConfig(learning_rate=0.1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=1).repeat().batch(8)

    def evaluate() -> dict[str, float]:
        logits = model(x)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return {"val_loss": float(loss), "val_error": float(tf.reduce_mean(tf.cast(tf.argmax(logits, 1) != y,
                                                                                  tf.float32)))}

    return optimizer, lambda start: iter(dataset.skip(start)), evaluate


def run(method: str, run_dir: Path, steps: int, resume: bool) -> dict:
    optimizer, batches, evaluate = setup(method)
    settings = LoopSettings(steps=steps, log_every=2, eval_every=4, checkpoint_every=3, global_batch=8)
    try:
        return train(optimizer, batches, evaluate, settings, run_dir, resume, data_position=True)
    finally:
        if isinstance(optimizer, KFAC):
            optimizer.close()


@pytest.mark.parametrize("method", ["sgd", "kfac", "kfac-async"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path: Path, method: str) -> None:
    whole = run(method, tmp_path / "whole", 12, resume=False)
    run(method, tmp_path / "split", 7, resume=False)  # stops after step 7; last checkpoint at 7 (the final step)
    resumed = run(method, tmp_path / "split", 12, resume=True)
    rows = read_rows(tmp_path / "split" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 6, 7, 8, 10, 12]
    whole_rows = read_rows(tmp_path / "whole" / "metrics.csv")
    assert [int(r["step"]) for r in whole_rows] == [0, 2, 4, 6, 8, 10, 12]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)
    assert rows[-1]["examples"] == "96" and rows[2]["val_loss"] != "" and rows[1]["val_loss"] == ""


def test_first_row_validates_the_initial_weights_and_the_first_update_is_timed_apart(tmp_path: Path) -> None:
    optimizer, batches, evaluate = setup("kfac")
    initial = evaluate()
    run_dir = tmp_path / "run"
    train(optimizer, batches, evaluate, LoopSettings(steps=4, log_every=2, eval_every=2, checkpoint_every=4,
                                                     global_batch=8), run_dir, resume=False)
    rows = read_rows(run_dir / "metrics.csv")
    assert (rows[0]["step"], rows[0]["seconds"], rows[0]["train_loss"]) == ("0", "0", "")
    assert float(rows[0]["val_loss"]) == pytest.approx(initial["val_loss"], rel=1e-5)
    assert float(rows[1]["first_update_seconds"]) > 0 and rows[2]["first_update_seconds"] == ""
    assert 0 < float(rows[1]["seconds"]) < float(rows[2]["seconds"])


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    for step in (2, 4, 6, 8):
        log.append({"step": step, "train_loss": 1.0 / step})
    log.close()
    with path.open("a") as handle:
        handle.write("10,80,1.5,0.1")  # a row cut short by a kill
    MetricsLog(path, resume_step=6).close()
    assert [r["step"] for r in read_rows(path)] == ["2", "4", "6"]
    with path.open() as handle:
        assert next(csv.reader(handle)) == list(COLUMNS)


def test_a_diverged_run_stops_with_a_clear_error_after_logging_its_row(tmp_path: Path) -> None:
    optimizer, _, evaluate = setup("sgd")
    x = np.full((8, 6), np.nan, dtype=np.float32)
    batches = iter(tf.data.Dataset.from_tensors((x, np.zeros(8, np.int32))).repeat())
    settings = LoopSettings(steps=10, log_every=2, eval_every=4, checkpoint_every=5, global_batch=8)
    with pytest.raises(TrainingDiverged, match="training loss is nan at step 2: the run diverged"):
        train(optimizer, lambda start: batches, evaluate, settings, tmp_path, resume=False)
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == ["0", "2"]


def test_a_finite_blow_up_ends_the_run_as_diverged(tmp_path: Path) -> None:
    """Loss 10× above its first logged value (plus 1) is divergence even while it stays finite."""
    optimizer, batches, evaluate = setup("sgd")
    real_step, steps = optimizer.step, [0]

    def blowing_up(x: tf.Tensor, y: tf.Tensor) -> dict:  # the loss of step 5 on is 1e6 × the real one: finite
        steps[0] += 1
        metrics = dict(real_step(x, y))
        return {**metrics, "loss": metrics["loss"] * (1e6 if steps[0] > 4 else 1.0)}

    optimizer.step = blowing_up
    settings = LoopSettings(steps=20, log_every=2, eval_every=4, checkpoint_every=5, global_batch=8)
    with pytest.raises(TrainingDiverged, match=r"at step 6, above the divergence bound .* training.divergence_factor "
                                               r"10 × \(\|first logged loss .*\| \+ 1\)"):
        train(optimizer, batches, evaluate, settings, tmp_path, resume=False)
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "2", "4", "6"] and 1e3 < float(rows[-1]["train_loss"]) < float("inf")


@pytest.mark.parametrize("method", ["sgd", "kfac"])
def test_a_stop_request_checkpoints_at_the_step_boundary_and_resumes_exactly(tmp_path: Path, method: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run(method, tmp_path / "whole", 12, resume=False)
    received: list[int] = []
    monkeypatch.setattr(interrupts, "_received", received)
    optimizer, batches, evaluate = setup(method)
    settings = LoopSettings(steps=12, log_every=2, eval_every=4, checkpoint_every=100, global_batch=8)

    def stop_after_step_4(step: int, row: dict) -> None:
        if step == 4:
            received.append(signal.SIGTERM)  # as the handler would; the loop finishes no further step

    with pytest.raises(interrupts.Interrupted) as stopped:
        train(optimizer, batches, evaluate, settings, tmp_path / "split", False, data_position=True,
              progress=stop_after_step_4)
    assert stopped.value.exit_code == 143
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").glob("*.index")) == ["ckpt-4.index"]
    received.clear()
    resumed = run(method, tmp_path / "split", 12, resume=True)
    assert [r["step"] for r in read_rows(tmp_path / "split" / "metrics.csv")] == ["0", "2", "4", "6", "8", "10", "12"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)


@pytest.mark.parametrize("method", ["kfac", "kfac-async"])
def test_a_curvature_blow_up_ends_the_run_as_diverged(tmp_path: Path, method: str) -> None:
    """An infinite input makes the Kronecker factors infinite: the inversion that follows cannot succeed, and the
    run ends as diverged (like a NaN loss), not with the inversion's FloatingPointError."""
    optimizer, clean, evaluate = setup(method)
    x = np.full((8, 6), np.inf, dtype=np.float32)
    poisoned = iter(tf.data.Dataset.from_tensors((x, np.zeros(8, np.int32))).repeat())
    iterator = clean(0)
    batches = (next(iterator) if step < 3 else next(poisoned) for step in range(1, 100))
    settings = LoopSettings(steps=40, log_every=50, eval_every=50, checkpoint_every=50, global_batch=8)
    try:
        with pytest.raises(TrainingDiverged, match=r"K-FAC's curvature statistics diverged at step \d+: a \d+×\d+ "
                                                   r"Kronecker factor has NaN or infinite entries"):
            train(optimizer, lambda start: batches, evaluate, settings, tmp_path, resume=False)
    finally:
        optimizer.close()


def interrupted_at_7(tmp_path: Path) -> tuple[dict, Path]:
    """An uninterrupted 12-step run, and a run stopped after step 7 (checkpoints at steps 6 and 7)."""
    whole = run("kfac", tmp_path / "whole", 12, resume=False)
    run("kfac", tmp_path / "split", 7, resume=False)
    directory = tmp_path / "split" / "checkpoints"
    assert sorted(p.name for p in directory.glob("*.index")) == ["ckpt-6.index", "ckpt-7.index"]
    return whole, directory


@pytest.mark.parametrize("damage", ["data", "index"])
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_resumes_exactly(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    whole, directory = interrupted_at_7(tmp_path)
    damaged = directory / ("ckpt-7.data-00000-of-00001" if damage == "data" else "ckpt-7.index")
    damaged.write_bytes(damaged.read_bytes()[:20])
    resumed = run("kfac", tmp_path / "split", 12, resume=True)
    assert f"checkpoint {directory / 'ckpt-7'} cannot be restored" in caplog.text
    assert ("Read less bytes than requested" if damage == "data" else "too short to be an sstable") in caplog.text
    assert "falling back to the previous one" in caplog.text
    assert [r["step"] for r in read_rows(tmp_path / "split" / "metrics.csv")] == ["0", "2", "4", "6", "8", "10",
                                                                                    "12"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)


def test_a_garbled_checkpoint_state_file_does_not_restart_the_run(tmp_path: Path) -> None:
    whole, directory = interrupted_at_7(tmp_path)
    (directory / "checkpoint").write_text("model_checkpoint_path: {{{ garbage")
    assert tf.train.latest_checkpoint(str(directory)) is None  # TensorFlow's own lookup sees no checkpoint
    resumed = run("kfac", tmp_path / "split", 12, resume=True)
    assert [r["step"] for r in read_rows(tmp_path / "split" / "metrics.csv")] == ["0", "2", "4", "6", "7", "8",
                                                                                    "10", "12"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / "ckpt-12")


def test_checkpoints_none_of_which_restores_refuse_the_resume_naming_them(tmp_path: Path) -> None:
    _, directory = interrupted_at_7(tmp_path)
    for index in directory.glob("*.index"):
        index.write_bytes(b"")
    metrics = (tmp_path / "split" / "metrics.csv").read_text()
    with pytest.raises(ResumeError, match=r"no checkpoint of this run can be restored: .*ckpt-7: .*; .*ckpt-6: "):
        run("kfac", tmp_path / "split", 12, resume=True)
    assert (tmp_path / "split" / "metrics.csv").read_text() == metrics


def test_resuming_a_run_whose_metrics_are_gone_is_refused_naming_the_file(tmp_path: Path) -> None:
    run("sgd", tmp_path / "run", 7, resume=False)
    (tmp_path / "run" / "metrics.csv").unlink()
    with pytest.raises(ResumeError, match=r"metrics\.csv is missing or has no rows, but checkpoint .*ckpt-7 is at "
                                          r"step 7: the rows up to step 7 cannot be recovered"):
        run("sgd", tmp_path / "run", 12, resume=True)
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("method", ["sgd", "kfac"])
def test_a_stop_between_two_rows_loses_no_step_of_the_next_row(tmp_path: Path, method: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after step 5 (rows every 2 steps): the resumed run's row of step 6 averages steps 5 and 6, as the
    uninterrupted run's does, and every row is the same to the last digit."""
    run(method, tmp_path / "whole", 12, resume=False)
    received: list[int] = []
    monkeypatch.setattr(interrupts, "_received", received)
    optimizer, batches, evaluate = setup(method)
    real_step, done = optimizer.step, [0]

    def stopping_after_step_5(x: tf.Tensor, y: tf.Tensor) -> dict:
        done[0] += 1
        if done[0] == 5:
            received.append(signal.SIGTERM)
        return real_step(x, y)

    optimizer.step = stopping_after_step_5
    settings = LoopSettings(steps=12, log_every=2, eval_every=4, checkpoint_every=3, global_batch=8)
    with pytest.raises(interrupts.Interrupted):
        train(optimizer, batches, evaluate, settings, tmp_path / "split", False, data_position=True)
    if isinstance(optimizer, KFAC):
        optimizer.close()
    assert (tmp_path / "split" / "checkpoints" / "ckpt-5.index").exists()
    received.clear()
    run(method, tmp_path / "split", 12, resume=True)
    split, whole = (read_rows(tmp_path / name / "metrics.csv") for name in ("split", "whole"))
    assert [r["step"] for r in split] == [r["step"] for r in whole] == ["0", "2", "4", "6", "8", "10", "12"]
    for column in ("train_loss", "train_error", "val_loss"):
        assert [r[column] for r in split] == [r[column] for r in whole], column


@pytest.mark.parametrize(("before", "after"), [(False, True), (True, False)])
def test_a_checkpoint_with_or_without_the_data_position_resumes_exactly_either_way(tmp_path: Path, before: bool,
                                                                                   after: bool) -> None:
    """A run checkpointed with several replicas (no iterator position: its data is skipped) resumes on one replica
    (which checkpoints the position), and the reverse."""
    whole = run("kfac", tmp_path / "whole", 12, resume=False)
    settings = LoopSettings(steps=7, log_every=2, eval_every=4, checkpoint_every=3, global_batch=8)
    for steps, resume, position in ((7, False, before), (12, True, after)):
        optimizer, batches, evaluate = setup("kfac")
        try:
            final = train(optimizer, batches, evaluate, dataclasses.replace(settings, steps=steps), tmp_path / "split",
                          resume, data_position=position)
        finally:
            optimizer.close()
    assert final["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    assert final["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)


@pytest.mark.parametrize("planted", ["ckpt-3_temp", "checkpoint", ".saving-3"])
def test_a_link_planted_in_the_checkpoints_while_training_is_refused_naming_it(tmp_path: Path, planted: str) -> None:
    """Planted after training started (at step 2, before the checkpoint of step 3): TensorFlow's temporary folder
    for a checkpoint, its state file, the staging folder; each is refused and what it points to is untouched."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("precious\n")
    run_dir = tmp_path / "run"
    optimizer, batches, evaluate = setup("sgd")

    def plant(step: int, row: dict) -> None:
        if step == 2:
            (run_dir / "checkpoints" / planted).symlink_to(victim / "precious" if planted == "checkpoint" else victim)

    settings = LoopSettings(steps=4, log_every=2, eval_every=4, checkpoint_every=3, global_batch=8)
    with pytest.raises(safe_paths.UnsafePath, match=rf"run/checkpoints/{planted} is a symlink \(to .*victim"):
        train(optimizer, batches, evaluate, settings, run_dir, False, progress=plant)
    assert [p.name for p in victim.iterdir()] == ["precious"] and (victim / "precious").read_text() == "precious\n"


def test_a_checkpoint_of_an_older_version_is_refused_naming_what_it_lacks(tmp_path: Path) -> None:
    """A checkpoint without the training clock and the partial window (as written before they were saved): the
    resume names the checkpoint and the variables it has no value for; nothing is trained."""
    run("kfac", tmp_path / "run", 3, resume=False)
    optimizer, _, _ = setup("kfac")
    older = tf.train.Checkpoint(weights=[backing_variable(v) for v in optimizer.model.weights],
                                optimizer=optimizer.checkpoint_state())
    optimizer.close()
    checkpoints.save(older, tmp_path / "run", 3)
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    with pytest.raises(ResumeError, match=r"no checkpoint of this run can be restored: .*run/checkpoints/ckpt-3: "
                                          r"it holds no value for elapsed_seconds:0, window_sums:0 \(damaged, .* by "
                                          r"an older version"):
        run("kfac", tmp_path / "run", 6, resume=True)
    assert (tmp_path / "run" / "metrics.csv").read_text() == metrics
