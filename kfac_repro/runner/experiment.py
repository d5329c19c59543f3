"""One arm of an experiment, from its resolved sections to a finished run directory:
resolved config → strategy, model, data, optimizer → training loop → metrics rows.

The arm is a resolved spec's ArmConfig: complete sections (model, data, training, optimizer, distribution) whose
optimizer section becomes the library's KFACConfig or SGDConfig. The run directory (runner/layout.py) receives
metrics.csv, resolved.yaml, run.json, environment.json, tensorboard/, checkpoints/ and (K-FAC) refreshes.log, one
line per installed inverse refresh.
In a multi-process run only worker 0 writes there. With data.holdout > 0, validation rows come from examples held
out of the training set, and the test split is evaluated once, after the last update, into run.json (test_loss,
test_error): it is reported, never used to choose.
run.json's status: running, then complete, interrupted (SIGTERM/SIGINT; a checkpoint was saved), diverged or failed.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kfac_repro.kfac.config import KFACConfig, SGDConfig
from kfac_repro.runner import layout, safe_paths
from kfac_repro.specs import schema

if TYPE_CHECKING:
    from kfac_repro.distribute.cluster import ClusterSpec
    from kfac_repro.distribute.rendezvous import StartWatch
    from kfac_repro.kfac import KFAC
    from kfac_repro.kfac.base import ModelOptimizer
    from kfac_repro.specs.resolve import ArmConfig

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
    grid: str = ""  # the arm whose grid's best settings the run trains with ('': the spec's own settings)


def optimizer_config(section: Section, seed: int) -> tuple[str, KFACConfig | SGDConfig]:
    """(name, its library config) from a resolved optimizer section: its fields are the config's settings
    (kfac/config.py declares them; the spec schema derives from them and the config checks the values)."""
    name = str(section["name"])
    config: KFACConfig | SGDConfig = schema.CONFIGS[name](**{k: v for k, v in section.items() if k != "name"},
                                                          seed=seed)
    return name, config


def run_arm(
    arm: ArmConfig,
    identity: RunIdentity,
    resume: bool,
    progress: Callable[[int, dict], None] = lambda step, row: None,
) -> dict[str, Any]:
    """Train one arm to completion in this process (one worker of a multi-process run if TF_CONFIG is set)."""
    from kfac_repro.distribute import interrupts
    from kfac_repro.distribute.cluster import cluster_from_environment

    cluster = cluster_from_environment()
    replicas = int(arm.distribution["workers"])
    processes = len(cluster.workers) if cluster else 1
    if processes > 1 and replicas != processes:
        raise ValueError(f"distribution.workers is {replicas} but {processes} worker processes were started: "
                         "a multi-process run has one gradient worker per process")
    # before TensorFlow is imported (and starts threads): the stop signals held, the peers met, the start bounded
    watch = _start_watch(cluster) if cluster is not None and processes > 1 else None
    if watch is None:
        interrupts.release()  # held by a `worker` command from its start (cli.py): a one-process cluster needs none

    import keras
    import tensorflow as tf

    from kfac_repro.data.registry import dataset_info, make_dataset
    from kfac_repro.distribute.strategy import make_strategy
    from kfac_repro.kfac.inversion.resources import reserve_inversion_cores
    from kfac_repro.models.registry import build_model
    from kfac_repro.runner.environment import environment_record, write_environment
    from kfac_repro.runner.loop import LoopSettings, TrainingDiverged, train

    model_section, data_section, training = arm.model, arm.data, arm.training
    seed = int(training["seed"])
    method, config = optimizer_config(arm.optimizer, seed)
    if isinstance(config, KFACConfig) and config.inversion_threads is not None:
        reserve_inversion_cores(config.inversion_threads)  # kept from TensorFlow's pools (before TensorFlow starts)
    strategy = make_strategy(local_replicas=1 if cluster else replicas)
    interrupts.install()  # again: TensorFlow's multi-worker coordination installs its own SIGTERM handler
    if training["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    info = dataset_info(data_section["name"], data_section.get("data_dir"))
    size = int(model_section["input_size"])
    channels = int(info["image_shape"][-1]) if info["image_shape"] else 3
    classes = int(model_section["num_classes"])
    if data_section["name"] != "synthetic" and info.get("num_classes") and classes < int(info["num_classes"]):
        raise ValueError(f"model.num_classes is {classes} but data set {data_section['name']!r} has labels "
                         f"0..{int(info['num_classes']) - 1}: set model.num_classes to {info['num_classes']}")
    holdout = int(data_section["holdout"])
    data_args: dict[str, Any] = {"data_dir": data_section.get("data_dir"), "image_size": size, "holdout": holdout,
                 "num_classes": classes if data_section["name"] == "synthetic" else None}
    global_batch = int(training["batch_size"])
    chief = cluster is None or cluster.is_chief
    run_dir = identity.run_dir if chief else identity.run_dir / f".worker-{cluster.index if cluster else 0}"

    def train_batches(skip: int) -> Iterator:
        """The training batches from step `skip` on (the seeded order is deterministic)."""
        def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
            dataset = make_dataset(data_section["name"], "train", global_batch, input_context=context, seed=seed,
                                   augment=data_section.get("augment"), **data_args)
            return dataset.skip(skip * context.num_replicas_in_sync // context.num_input_pipelines)

        return iter(strategy.distribute_datasets_from_function(pipeline))

    val_data = make_dataset(data_section["name"], "val", global_batch, repeat=False, **data_args)
    knobs = {k: v for k, v in model_section.items() if k not in ("name", "input_size", "num_classes")}
    with strategy.scope():
        model = build_model(model_section["name"], input_shape=(size, size, channels), num_classes=classes, **knobs)
        optimizer, kfac = _optimizer(model, config)

    safe_paths.make_dirs(identity.run_dir, run_dir.relative_to(identity.run_dir))  # a symlink there is refused
    if chief:
        safe_paths.write_atomic(run_dir, layout.RESOLVED, yaml.safe_dump(arm.to_dict(), sort_keys=False))
        write_environment(run_dir, environment_record(strategy.num_replicas_in_sync, processes))
        if kfac is not None:
            volumes = kfac.communication_bytes()
            safe_paths.write_atomic(run_dir, "blocks.txt", kfac.summary() + "\n\nall-reduced per replica: gradients "
                                    f"{volumes['gradients_per_step']} bytes every step, factors "
                                    f"{volumes['factors_per_refresh']} bytes every statistics step\n")
    record = {**dataclasses.asdict(identity), "run_dir": str(identity.run_dir), "run_id": identity.run_dir.name,
              "data": data_section["name"], "model": model_section["name"], "method": method,
              "batch_size": global_batch, "workers": replicas, "steps": int(training["steps"]), "seed": seed,
              "holdout": holdout}
    _write_status(run_dir, record, "running", chief)
    refresh_log = (logging.StreamHandler(safe_paths.open_file(run_dir, layout.REFRESH_LOG, "a"))
                   if chief and method == "kfac" else None)
    try:  # from here on, whatever stops the run marks it (interrupted, diverged or failed): never left `running`
        batches = None if training.get("eval_batches") is None else int(training["eval_batches"])
        validate = _Evaluator(optimizer, val_data, batches)
        # the inference-mode loss on a fixed share of the training set as large as a validation pass: a train-
        # validation gap measured the same way on both sides (Fig. 3's BN claim)
        train_subset = make_dataset(data_section["name"], "train", global_batch, repeat=False, seed=seed,
                                    augment=False, **data_args)
        examples = validate.examples()
        train_check = _Evaluator(optimizer, train_subset.take(-(-examples // global_batch)), None)
        record["val_examples"] = examples

        def evaluate() -> dict[str, float]:
            (val_loss, val_error), (train_loss, train_error) = validate(), train_check()
            return {"val_loss": val_loss, "val_error": val_error, "train_eval_loss": train_loss,
                    "train_eval_error": train_error}

        settings = LoopSettings(steps=int(training["steps"]), log_every=int(training["log_every"]),
                                eval_every=int(training["eval_every"]),
                                checkpoint_every=int(training["checkpoint_every"]), global_batch=global_batch,
                                divergence_factor=float(training["divergence_factor"]))
        if refresh_log is not None:  # the K-FAC library logs each refresh: snapshot step, hand-over step, seconds
            refresh_log.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logging.getLogger("kfac_repro.kfac").addHandler(refresh_log)
            logging.getLogger("kfac_repro.kfac").setLevel(logging.INFO)
        # A single-replica run checkpoints its tf.data iterator's position; a distributed iterator is not
        # checkpointable, so a multi-replica run (or one resumed from a multi-replica checkpoint) skips the batches
        # consumed.
        final = train(optimizer, train_batches, evaluate, settings, run_dir, resume,
                      data_position=strategy.num_replicas_in_sync == 1, progress=progress,
                      started=watch.started if watch else lambda: None,
                      chief_dir=None if chief else identity.run_dir)
        if holdout:
            test_data = make_dataset(data_section["name"], "test", global_batch, repeat=False, **data_args)
            record["test_loss"], record["test_error"] = _Evaluator(optimizer, test_data, None)()
    except BaseException as error:
        status = ("interrupted" if isinstance(error, interrupts.Interrupted | KeyboardInterrupt) else
                  layout.DIVERGED if isinstance(error, TrainingDiverged) else "failed")
        _write_status(run_dir, record, status, chief)
        raise
    finally:
        if watch is not None:
            watch.started()
        if kfac is not None:
            kfac.close()
        if refresh_log is not None:
            logging.getLogger("kfac_repro.kfac").removeHandler(refresh_log)
            refresh_log.stream.close()
    _write_status(run_dir, record, layout.COMPLETE, chief)
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
    return final


def _start_watch(cluster: ClusterSpec) -> StartWatch:
    """Hold the stop signals, meet the cluster's peers (bounded, reported, stoppable: distribute/rendezvous.py),
    then bound the start of training by the same time and end it at once on a stop."""
    from kfac_repro.distribute.rendezvous import StartWatch, await_peers, cluster_timeout

    def emit(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    timeout = cluster_timeout()
    watch = StartWatch(f"worker {cluster.index}", timeout, emit)
    watch.hold()
    try:
        await_peers(cluster, timeout, emit)
    except BaseException:
        watch.started()
        raise
    watch.start()
    return watch


def _optimizer(model: Any, config: KFACConfig | SGDConfig) -> tuple[ModelOptimizer, KFAC | None]:
    """The optimizer of `config`, and the same object again when it is K-FAC (summary, close), else None."""
    from kfac_repro.kfac import KFAC, optimizer_for

    optimizer = optimizer_for(model, config)
    return optimizer, optimizer if isinstance(optimizer, KFAC) else None


class _Evaluator:
    """Mean loss and error over the first `batches` batches of a dataset (None: all), in inference mode, with
    Polyak-averaged weights if any."""

    def __init__(self, optimizer: ModelOptimizer, dataset: Any, batches: int | None):
        import tensorflow as tf

        self.optimizer = optimizer
        self.dataset = dataset if batches is None else dataset.take(batches)

        @tf.function(reduce_retracing=True)
        def batch_metrics(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            loss, outputs = optimizer.loss_and_outputs(x, y, training=False)
            return loss * tf.cast(tf.shape(x)[0], tf.float32), optimizer.error_rate(outputs, y) * tf.cast(
                tf.shape(x)[0], tf.float32)

        self._batch_metrics = batch_metrics

    def examples(self) -> int:
        """How many examples one pass reads (counted by reading the labels once)."""
        return sum(len(y) for _, y in self.dataset)

    def __call__(self) -> tuple[float, float]:
        total_loss = total_error = count = 0.0
        with self.optimizer.averaged_weights():
            for x, y in self.dataset:
                loss, error = self._batch_metrics(x, y)
                total_loss, total_error, count = total_loss + float(loss), total_error + float(error), count + len(y)
        return total_loss / max(count, 1.0), total_error / max(count, 1.0)


def _write_status(run_dir: Path, record: dict[str, Any], status: str, chief: bool) -> None:
    if chief:
        layout.write_run_record(run_dir, {**record, "status": status})
