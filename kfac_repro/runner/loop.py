"""The training loop shared by every method: steps, periodic logging and validation, TensorBoard, checkpoints,
and resumption that neither loses nor repeats a logged step.

Row semantics: `step` is the number of updates done; a fresh run's first row is step 0, validation only (the
initial weights); train_loss/train_error average the (augmented) training batches since the previous row (also
across a stop and resume between two rows: `Window`); `seconds` is training wall-clock from the end of the first
update (validation excluded), carried across resumes: the first update of every process (tracing, and K-FAC's
first inversion) is timed apart in `first_update_seconds`.
A run stops with TrainingDiverged after the row that shows it, not hours later: when the training loss is NaN or
infinite, or above `divergence_factor` × (|first logged training loss| + 1) (a finite blow-up; the + 1 keeps the rule
meaningful when the first loss is near zero); and at the step where K-FAC's curvature statistics blow up (NaN,
infinite, or indefinite once damped: the inversion raises CurvatureDiverged), whatever the loss.
A stop requested by SIGTERM/SIGINT (`interrupts`) is honoured at the next step boundary: a checkpoint of the steps
done is saved, then Interrupted is raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from kfac_repro.distribute import interrupts
from kfac_repro.kfac.base import Metrics, ModelOptimizer, as_floats
from kfac_repro.kfac.linalg.inverses import CurvatureDiverged
from kfac_repro.kfac.replicas import backing_variable
from kfac_repro.runner import checkpoints, layout, safe_paths
from kfac_repro.runner.metrics_log import MetricsLog, read_rows


@dataclass(frozen=True)
class LoopSettings:
    """How long to train and how often to log, validate and checkpoint (all in steps)."""

    steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    global_batch: int
    divergence_factor: float = 10.0


Row = dict[str, float | None]
DATA = "data"  # the checkpoint's entry for the training iterator's position
Progress = Callable[[int, Row], None]


class TrainingDiverged(ArithmeticError):
    """The training loss became NaN or infinite, or far above its first logged value, or the curvature statistics
    blew up."""


def train(
    optimizer: ModelOptimizer,
    batches: Callable[[int], Iterator],
    evaluate: Callable[[], Mapping[str, float]],
    settings: LoopSettings,
    run_dir: Path,
    resume: bool,
    data_position: bool = False,
    progress: Progress = lambda step, row: None,
    started: Callable[[], None] = lambda: None,
    chief_dir: Path | None = None,
) -> Row:
    """Train to `settings.steps` updates, writing run_dir/metrics.csv, tensorboard/ and checkpoints/.
    `batches(start)`: the training batches from update `start` on. `data_position`: the iterator's position is
    checkpointed (a tf.data iterator; a distributed one cannot be) and restored where the checkpoint holds it; a
    checkpoint without it (written with several replicas) resumes from `batches(start)`. Nothing else in a
    checkpoint depends on the number of replicas, so a run may be resumed with another. `started()` is called once
    the first update of this process has finished. TensorFlow writes tensorboard/ by path: a symlink found in
    it when training starts is refused (checkpoints/: runner/checkpoints.py).
    `chief_dir`: in a worker other than the chief, the chief's run directory: a resume restores the chief's
    checkpoint when it can see one (a shared file system), so that every worker continues from the same state
    whichever workers wrote it (a run may be resumed with another number of worker processes); the worker's own
    checkpoints (run_dir) otherwise."""
    for folder in (checkpoints.FOLDER, "tensorboard"):
        safe_paths.make_dirs(run_dir, folder)
        safe_paths.refuse_links(run_dir, folder)
    elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
    window = Window()
    state = {"weights": [backing_variable(v) for v in optimizer.model.weights],
             "optimizer": optimizer.checkpoint_state(), "elapsed": elapsed, "window": window.sums}
    source = run_dir  # whose checkpoints a resume restores
    if chief_dir is not None and checkpoints.checkpoint_steps(chief_dir / checkpoints.FOLDER):
        source = chief_dir
    directory = source / checkpoints.FOLDER
    restored = (checkpoints.restore_newest(tf.train.Checkpoint(**state), source, own=source == run_dir)
                if resume else None)
    start = 0
    metrics = run_dir / layout.METRICS
    logged = read_rows(metrics) if resume and metrics.is_file() else []
    if restored is not None:
        optimizer.restored()
        start = int(optimizer.iterations.numpy())
        if not logged and chief_dir is None:
            raise checkpoints.ResumeError(
                f"{metrics} is missing or has no rows, but checkpoint "
                f"{checkpoints.checkpoint_path(directory, restored)} is at step {start}: the rows up to step {start} "
                "cannot be recovered. Start a new run (without --resume)")
    elif any(int(row["step"]) > 0 for row in logged):
        checkpoints.log.warning("%s holds no checkpoint: training again from step 0 (the rows after step 0 are "
                                "dropped)", directory)
    if data_position and restored is not None and checkpoints.holds(directory, restored, DATA):
        iterator = batches(0)
        checkpoints.restore_part(tf.train.Checkpoint(**{DATA: iterator}), directory, restored)
    else:
        iterator = batches(start)
    checkpoint = tf.train.Checkpoint(**state, **({DATA: iterator} if data_position else {}))
    saved = restored  # the step of the newest checkpoint
    log = MetricsLog(run_dir / layout.METRICS, resume_step=start if resume else None)
    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard"))
    row: Row = dict(log.last)  # a run resumed at its last step returns its final row
    first_update: float | None = None
    first_loss = log.first_train_loss
    try:
        if start == 0 and not log.last:  # a run resumed before its first checkpoint keeps its step-0 row
            log.append({"step": 0, "examples": 0, "seconds": 0.0, **evaluate()})
        clock = time.perf_counter()
        for step in range(start + 1, settings.steps + 1):
            if interrupts.requested() is not None:
                elapsed.assign_add(time.perf_counter() - clock)
                log.sync()
                if saved != step - 1:
                    window.store()
                    checkpoints.save(checkpoint, run_dir, step - 1)
                interrupts.check()
            x, y = next(iterator)
            try:
                window.steps.append(optimizer.step(x, y))
            except CurvatureDiverged as error:
                raise TrainingDiverged(f"K-FAC's curvature statistics diverged at step {step}: {error}") from error
            if step == start + 1:  # its loss read back: the first update has finished before the clock starts
                float(window.steps[-1]["loss"])
                first_update, clock = time.perf_counter() - clock, time.perf_counter()
                started()
            if step % settings.log_every == 0 or step == settings.steps:
                elapsed.assign_add(time.perf_counter() - clock)
                row = window.row(step, settings.global_batch, float(elapsed.numpy()))
                row["first_update_seconds"], first_update = first_update, None
                if step % settings.eval_every == 0 or step == settings.steps:
                    row.update(evaluate())
                log.append(row)
                _summarise(writer, step, row)
                progress(step, row)
                first_loss = row["train_loss"] if first_loss is None else first_loss
                _check_divergence(row["train_loss"], first_loss, settings.divergence_factor, step)
                clock = time.perf_counter()
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                elapsed.assign_add(time.perf_counter() - clock)
                log.sync()
                window.store()
                checkpoints.save(checkpoint, run_dir, step)
                saved = step
                clock = time.perf_counter()
    finally:
        log.close()
        writer.close()
    return row


def _check_divergence(loss: float | None, first: float | None, factor: float, step: int) -> None:
    """TrainingDiverged if `loss` is not finite or above factor × (|first| + 1)."""
    if loss is None:
        return
    bound = factor * (abs(first) + 1.0) if first is not None and math.isfinite(first) else math.inf
    if not math.isfinite(loss) or loss > bound:
        reason = "" if not math.isfinite(loss) else (
            f", above the divergence bound {bound:.4g} = training.divergence_factor {factor:g} × "
            f"(|first logged loss {first:.4g}| + 1)")
        raise TrainingDiverged(
            f"training loss is {loss:.6g} at step {step}{reason}: the run diverged (K-FAC: try a larger damping or "
            "a smaller kl_clip; SGD: a smaller learning_rate)")


class Window:
    """The steps since the last row (their metrics as tensors: converted only when a row is logged). Before each
    checkpoint the sums of their losses and errors and their count are stored in `sums` (checkpointed), so that a run
    stopped between two rows and resumed logs the row an uninterrupted run logs, to the bit (the same additions in
    the same order)."""

    def __init__(self) -> None:
        self.sums = tf.Variable([0.0, 0.0, 0.0], dtype=tf.float64, trainable=False, name="window_sums")
        self.steps: list[Metrics] = []

    def store(self) -> None:
        self.sums.assign(self._totals())
        self.steps = []

    def row(self, step: int, global_batch: int, seconds: float) -> Row:
        """The row of `step`: the mean training loss and error of the window, the last step's settings; the window
        starts again empty."""
        last = as_floats(self.steps[-1])
        loss, error, count = self._totals()
        self.sums.assign([0.0, 0.0, 0.0])
        self.steps = []
        return {
            "step": step,
            "examples": step * global_batch,
            "seconds": seconds,
            "train_loss": loss / count,
            "train_error": error / count,
            "step_size": last["step_size"],
            "learning_rate": last["learning_rate"],
            "kl_clip": last.get("kl_clip"),
            "inverse_staleness": last.get("inverse_staleness"),
        }

    def _totals(self) -> list[float]:
        loss, error, count = (float(v) for v in self.sums.numpy())
        for metrics in self.steps:
            values = as_floats(metrics)
            loss, error, count = loss + values["loss"], error + values["error"], count + 1
        return [loss, error, count]


def _summarise(writer: tf.summary.SummaryWriter, step: int, row: Row) -> None:
    with writer.as_default(step=step):
        for name, value in row.items():
            if name != "step" and value is not None:
                tf.summary.scalar(name, value)
