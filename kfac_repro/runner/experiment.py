"""One arm of an experiment, from its resolved sections to a finished run directory:
resolved config → strategy, model, data, optimizer → training loop → metrics rows.

The arm is a mapping of sections (model, data, training, optimizer, distribution), as a resolved spec gives them.
The run directory results/<spec>/<profile>/<arm>/<run-id>/ receives metrics.csv, resolved.yaml, run.json,
environment.json, tensorboard/, checkpoints/ and (K-FAC) refreshes.log, one line per installed inverse refresh.
In a multi-process run only worker 0 writes there. With data.holdout > 0, validation rows come from examples held
out of the training set, and the test split is evaluated once, after the last update, into run.json (test_loss,
test_error): it is reported, never used to choose.
run.json's status: running, then complete, interrupted (SIGTERM/SIGINT; a checkpoint was saved), diverged or failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Section = Mapping[str, Any]


@dataclass(frozen=True)
class RunIdentity:
    """Which spec, profile and arm a run belongs to, and where its directory is."""

    spec: str
    figure: str
    profile: str
    arm: str
    label: str
    run_dir: Path


def optimizer_config(section: Section, seed: int) -> tuple[str, object]:
    """('kfac', KFACConfig) or ('sgd', SGDConfig) from an optimizer section; unknown fields are errors."""
    from kfac_repro.kfac import KFACConfig, SGDConfig

    name = section.get("name")
    config_type = {"kfac": KFACConfig, "sgd": SGDConfig}.get(str(name))
    if config_type is None:
        raise ValueError(f"optimizer.name: expected 'kfac' or 'sgd', found {name!r}")
    known = {f.name for f in dataclasses.fields(config_type)}
    values = {k: v for k, v in section.items() if k != "name" and v is not None}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"optimizer: fields {unknown} are not {name} settings")
    if "doubly_factored" in values:
        values["doubly_factored"] = tuple(values["doubly_factored"])
    return str(name), config_type(**{**values, "seed": seed})


def run_arm(
    arm: Mapping[str, Section],
    identity: RunIdentity,
    resume: bool,
    progress: Callable[[int, dict], None] = lambda step, row: None,
) -> dict[str, Any]:
    """Train one arm to completion in this process (one worker of a multi-process run if TF_CONFIG is set)."""
    import keras
    import tensorflow as tf

    from kfac_repro.data.registry import dataset_info, make_dataset
    from kfac_repro.distribute.strategy import cluster_from_environment, make_strategy
    from kfac_repro.kfac import KFAC, SGD
    from kfac_repro.kfac.inversion_resources import reserve_inversion_cores
    from kfac_repro.models.registry import build_model
    from kfac_repro.runner import interrupts
    from kfac_repro.runner.environment import environment_record, write_environment
    from kfac_repro.runner.loop import LoopSettings, TrainingDiverged, train

    model_section, data_section = arm["model"], arm["data"]
    training, distribution = arm["training"], arm.get("distribution", {})
    cluster = cluster_from_environment()
    replicas = int(distribution.get("workers", 1))
    processes = len(cluster.workers) if cluster else 1
    if processes > 1 and replicas != processes:
        raise ValueError(f"distribution.workers is {replicas} but {processes} worker processes were started: "
                         "a multi-process run has one gradient worker per process")
    threads = arm["optimizer"].get("inversion_threads")
    if threads is not None:  # the inversion's cores are kept from TensorFlow's pools (before TensorFlow starts)
        reserve_inversion_cores(int(threads))
    strategy = make_strategy(local_replicas=1 if cluster else replicas)
    interrupts.install()  # again: TensorFlow's multi-worker coordination installs its own SIGTERM handler
    if training.get("deterministic", True):
        tf.config.experimental.enable_op_determinism()
    seed = int(training.get("seed", 0))
    keras.utils.set_random_seed(seed)
    info = dataset_info(data_section["name"], data_section.get("data_dir"))
    size = int(model_section["input_size"])
    channels = int(info["image_shape"][-1]) if info["image_shape"] else 3
    classes = int(model_section["num_classes"])
    if data_section["name"] != "synthetic" and info.get("num_classes") and classes < int(info["num_classes"]):
        raise ValueError(f"model.num_classes is {classes} but data set {data_section['name']!r} has labels "
                         f"0..{int(info['num_classes']) - 1}: set model.num_classes to {info['num_classes']}")
    holdout = int(data_section.get("holdout") or 0)
    data_args: dict[str, Any] = {"data_dir": data_section.get("data_dir"), "image_size": size, "holdout": holdout,
                 "num_classes": classes if data_section["name"] == "synthetic" else None}
    global_batch = int(training["batch_size"])
    chief = cluster is None or cluster.is_chief
    run_dir = identity.run_dir if chief else identity.run_dir / f".worker-{cluster.index if cluster else 0}"
    # A single-replica run checkpoints its tf.data iterator; a distributed iterator is not checkpointable, so a
    # resumed multi-replica run skips the batches it had consumed (the seeded order is deterministic).
    skip = _checkpointed_step(run_dir) if resume and strategy.num_replicas_in_sync > 1 else 0

    def train_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make_dataset(data_section["name"], "train", global_batch, input_context=context, seed=seed,
                               augment=data_section.get("augment"), **data_args)
        return dataset.skip(skip * context.num_replicas_in_sync // context.num_input_pipelines)

    train_data = strategy.distribute_datasets_from_function(train_pipeline)
    val_data = make_dataset(data_section["name"], "val", global_batch, repeat=False, **data_args)
    method, config = optimizer_config(arm["optimizer"], seed)
    knobs = {k: v for k, v in model_section.items() if k not in ("name", "input_size", "num_classes")}
    with strategy.scope():
        model = build_model(model_section["name"], input_shape=(size, size, channels), num_classes=classes, **knobs)
        optimizer = KFAC(model, config) if method == "kfac" else SGD(model, config)  # type: ignore[arg-type]

    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        (run_dir / "resolved.yaml").write_text(yaml.safe_dump(_plain(arm), sort_keys=False))
        write_environment(run_dir / "environment.json", environment_record(strategy.num_replicas_in_sync, processes))
        if isinstance(optimizer, KFAC):
            volumes = optimizer.communication_bytes()
            (run_dir / "blocks.txt").write_text(
                optimizer.summary() + f"\n\nall-reduced per replica: gradients {volumes['gradients_per_step']} bytes "
                f"every step, factors {volumes['factors_per_refresh']} bytes every statistics step\n")
    record = {**dataclasses.asdict(identity), "run_dir": str(identity.run_dir), "run_id": identity.run_dir.name,
              "data": data_section["name"], "model": model_section["name"], "method": method,
              "batch_size": global_batch, "workers": replicas, "steps": int(training["steps"]), "seed": seed,
              "holdout": holdout}
    _write_status(run_dir, record, "running", chief)
    evaluate = _evaluator(optimizer, val_data, int(training.get("eval_batches", 10)))
    settings = LoopSettings(steps=int(training["steps"]), log_every=int(training["log_every"]),
                            eval_every=int(training["eval_every"]),
                            checkpoint_every=int(training["checkpoint_every"]), global_batch=global_batch,
                            divergence_factor=float(training.get("divergence_factor", 10.0)))
    iterator = iter(train_data)
    refresh_log = logging.FileHandler(run_dir / "refreshes.log") if chief and method == "kfac" else None
    if refresh_log is not None:  # the K-FAC library logs each refresh: snapshot step, hand-over step, seconds
        refresh_log.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.getLogger("kfac_repro.kfac").addHandler(refresh_log)
        logging.getLogger("kfac_repro.kfac").setLevel(logging.INFO)
    try:
        extra_state = {"data": iterator} if strategy.num_replicas_in_sync == 1 else {}
        final = train(optimizer, iterator, evaluate, settings, run_dir, resume, extra_state=extra_state,
                      progress=progress)
    except BaseException as error:
        status = ("interrupted" if isinstance(error, interrupts.Interrupted | KeyboardInterrupt) else
                  "diverged" if isinstance(error, TrainingDiverged) else "failed")
        _write_status(run_dir, record, status, chief)
        raise
    finally:
        if isinstance(optimizer, KFAC):
            optimizer.close()
        if refresh_log is not None:
            logging.getLogger("kfac_repro.kfac").removeHandler(refresh_log)
            refresh_log.close()
    if holdout:
        test_data = make_dataset(data_section["name"], "test", global_batch, repeat=False, **data_args)
        record["test_loss"], record["test_error"] = _evaluator(optimizer, test_data, None)()
    _write_status(run_dir, record, "complete", chief)
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
    return final


def _checkpointed_step(run_dir: Path) -> int:
    """The step of the newest checkpoint in run_dir (0 if none): checkpoints are numbered by step."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _evaluator(optimizer: Any, dataset: Any, batches: int | None) -> Callable[[], tuple[float, float]]:
    """Mean loss and error over the first `batches` batches (None: all), with Polyak-averaged weights if any."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def batch_metrics(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss, outputs = optimizer.loss_and_outputs(x, y, training=False)
        return loss * tf.cast(tf.shape(x)[0], tf.float32), optimizer.error_rate(outputs, y) * tf.cast(
            tf.shape(x)[0], tf.float32)

    def evaluate() -> tuple[float, float]:
        total_loss = total_error = count = 0.0
        with optimizer.averaged_weights():
            for x, y in dataset if batches is None else dataset.take(batches):
                loss, error = batch_metrics(x, y)
                total_loss, total_error, count = total_loss + float(loss), total_error + float(error), count + len(y)
        return total_loss / max(count, 1.0), total_error / max(count, 1.0)

    return evaluate


def _write_status(run_dir: Path, record: dict[str, Any], status: str, chief: bool) -> None:
    if chief:
        temporary = run_dir / "run.json.tmp"
        temporary.write_text(json.dumps({**record, "status": status}, indent=2) + "\n")
        temporary.replace(run_dir / "run.json")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
