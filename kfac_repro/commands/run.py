"""`kfac-repro run` (train the arms of an experiment) and `kfac-repro worker` (one process of a multi-process
run, started by `run --workers N` on this machine or by the user on each host of a cluster).

Exit codes: 0 success, 1 the run failed (or its data is missing), 2 bad usage or spec (or a run directory taken,
missing or in use), 3 the run diverged, 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP: the
parent of a child process died; a checkpoint was saved at the step boundary and the run marked `interrupted`;
`--resume` continues it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from kfac_repro.commands.child import child_command
from kfac_repro.distribute import interrupts
from kfac_repro.runner import layout, safe_paths
from kfac_repro.specs import SpecError, load_spec
from kfac_repro.specs.names import name_problem

DIVERGED_EXIT = 3
STOP_GRACE = 60.0  # seconds a child is given to checkpoint and exit after a stop, before SIGKILL

_RUN_OPTIONS = [
    click.option("--profile", default="paper", show_default=True, help="paper, cpu or smoke (or a spec's own)"),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="override a resolved field, e.g. --set training.steps=50 (repeatable)"),
    click.option("--seed", type=int, default=None, help="overrides training.seed of every arm"),
    click.option("--resume", is_flag=True, help="continue the newest (or --run-id) run of each arm"),
]


def _with_options(function: Any) -> Any:
    for option in reversed(_RUN_OPTIONS):
        function = option(function)
    return function


def _load(name: str, profile: str, overrides: tuple[str, ...], seed: int | None, arms: tuple[str, ...] = ()) -> Any:
    seeded = (*overrides, *([f"training.seed={seed}"] if seed is not None else []))
    try:
        return load_spec(name, profile=profile, overrides=seeded, arms=arms)
    except SpecError as error:
        raise click.UsageError(str(error)) from error


def _run_dir(out: Path, spec: Any, arm: str, run_id: str | None, resume: bool, seed: int | None) -> Path:
    """The run directory (<run-id>-seed<S> for a run of a seed list): claimed afresh (exclusive mkdir), or the
    one --resume continues."""
    suffix = layout.seed_suffix(seed)
    try:
        arms = layout.arm_dir(out, spec.name, spec.profile, arm)
        return (layout.existing_run_dir(arms, run_id, suffix, root=out) if resume
                else layout.claim_run_dir(arms, run_id, suffix, root=out))
    except (layout.LayoutError, safe_paths.UnsafePath) as error:
        raise click.UsageError(str(error)) from error


def check_data(spec: Any, arms: list[str]) -> None:
    """Exit 1, saying where it looked and what to do, when an arm's data set is not on this machine."""
    from kfac_repro.data.registry import dataset_available, describe

    for arm in arms:
        data = spec.arms[arm].data
        if not dataset_available(data["name"], data.get("data_dir")):
            click.echo(f"error: {spec.name} --profile {spec.profile}, arm {arm}: data set {data['name']!r} is not "
                       f"available.\n  {describe(data['name'], data.get('data_dir'))}", err=True)
            click.echo("  Put it in the data directory ($KFAC_REPRO_DATA, see `kfac-repro data list`; "
                       "`kfac-repro data download cifar10` where there is internet), or run the reduced "
                       f"reproduction on real offline data: kfac-repro run {spec.name} --profile cpu", err=True)
            sys.exit(1)


def _check_workers(spec: Any, arms: list[str], workers: int) -> None:
    """UsageError, before any process starts, unless every arm's distribution.workers equals --workers > 1 (one
    gradient worker per process); it says which --workers and --arm to pass instead."""
    if workers == 1:
        return
    by_count: dict[int, list[str]] = {}
    for arm in arms:
        by_count.setdefault(int(spec.arms[arm].distribution["workers"]), []).append(arm)
    wrong = {count: names for count, names in sorted(by_count.items()) if count != workers}
    if not wrong:
        return
    found = " and ".join(f"{count} for {', '.join(names)}" for count, names in wrong.items())
    instead = "; ".join(f"--workers {count} {' '.join(f'--arm {arm}' for arm in names)}"
                        for count, names in sorted(by_count.items()))
    raise click.UsageError(
        f"--workers {workers}: a multi-process run has one gradient worker per process, but distribution.workers is "
        f"{found} ({spec.name} --profile {spec.profile}). Pass instead: {instead}; or leave out --workers to train "
        "each arm's replicas in one process")


def _seed_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct integers ≥ 0 separated by commas, e.g. 0,1,2; found {text!r}",
                                 param_hint="--seeds")
    return seeds


def _seeds_of(spec: Any, arm: str, chosen: list[int] | None) -> list[int] | None:
    """The seeds an arm runs with: --seeds, else training.seeds consecutive seeds from training.seed (None: one
    run named without a seed, as before seeds existed)."""
    if chosen is not None:
        return chosen
    training = spec.arms[arm].training
    count, first = int(training["seeds"]), int(training["seed"])
    return list(range(first, first + count)) if count > 1 else None


@click.command("run")
@click.argument("name")
@click.option("--arm", "arms", multiple=True, help="run only this arm (repeatable; default: all)")
@_with_options
@click.option("--seeds", "seeds_text", default=None, metavar="S1,S2,...",
              help="run each arm once per seed (initialisation and data order), each in its own run directory "
                   "<run-id>-seed<S>; default: the spec's training.seeds")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="results root: runs go to OUT/<spec>/<profile>/<arm>/<run-id>/")
@click.option("--run-id", default=None,
              help="run directory name: letters, digits and . _ - + = , (default: the UTC start time); one that "
                   "exists is refused unless --resume")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy); must equal the arm's "
                   "distribution.workers when > 1")
@click.option("--tuned", is_flag=True,
              help="apply the best settings found by `kfac-repro grid NAME --arm ARM` (OUT/<spec>/<profile>/"
                   "grid-<arm>/best.json) before any --set")
def run(name: str, arms: tuple[str, ...], profile: str, overrides: tuple[str, ...], seed: int | None,
        resume: bool, seeds_text: str | None, out: Path, run_id: str | None, workers: int, tuned: bool) -> None:
    """Train the arms of experiment NAME (a name from `kfac-repro list`, or a spec file)."""
    interrupts.install()
    if run_id is not None and name_problem(run_id):
        raise click.UsageError(f"--run-id: {name_problem(run_id)}")
    chosen = _seed_list(seeds_text)
    if chosen is not None and seed is not None:
        raise click.UsageError("give --seed or --seeds, not both")
    spec = _load(name, profile, overrides, seed, arms)
    selected = list(arms) or list(spec.arms)  # load_spec rejected unknown arms
    _check_workers(spec, selected, workers)
    check_data(spec, selected)
    jobs: list[tuple[str, int | None]] = []
    for arm in selected:
        seeds = _seeds_of(spec, arm, chosen)
        jobs += [(arm, s) for s in seeds] if seeds else [(arm, None)]
    if len(jobs) > 1:  # every arm and seed in a fresh process: no TensorFlow state carries over between them
        if tuned:
            for arm in selected:
                _grid_best(out, spec, spec.tuned.get(arm, arm))  # every grid result exists before any training
        failed = []
        for arm, job_seed in jobs:
            what = f"arm {arm}" + ("" if job_seed is None else f" seed {job_seed}")
            child = interrupts.start_child(child_command(run, {
                **click.get_current_context().params, "arms": (arm,),
                "seeds_text": None if job_seed is None else str(job_seed)}))
            try:
                code = interrupts.wait_child(child, STOP_GRACE)
            except interrupts.Interrupted as stop:
                click.echo(f"{stop}: {what} interrupted; later runs not started", err=True)
                sys.exit(stop.exit_code)
            if code != 0:
                failed.append(what)
        if failed:
            click.echo(f"error: failed: {', '.join(failed)}", err=True)
            sys.exit(1)
        return
    arm, job_seed = jobs[0]
    seed = job_seed if job_seed is not None else seed
    spec = _load(name, profile, overrides, seed, arms)
    label_suffix, grid_arm = "", ""
    if tuned:
        grid_arm = spec.tuned.get(arm, arm)
        best = _grid_best(out, spec, grid_arm)
        overrides = (*(f"{key}={value}" for key, value in best.items()), *overrides)
        spec = _load(name, profile, overrides, seed, arms)
        label_suffix = " (grid best: " + ", ".join(f"{k.split('.')[-1]} {v}" for k, v in best.items()) + ")"
    run_dir = _run_dir(out, spec, arm, run_id, resume, job_seed)
    try:
        lock = layout.lock_run_dir(run_dir)
    except (layout.LayoutError, safe_paths.UnsafePath) as error:
        raise click.UsageError(str(error)) from error
    try:
        safe_paths.refuse_links(run_dir, ".")  # a link planted in a run being resumed: refused before any write
    except safe_paths.UnsafePath as error:
        lock.close()
        raise click.UsageError(str(error)) from error
    click.echo(f"== {spec.name} [{spec.profile}] arm {arm} → {run_dir}")
    if resume and layout.run_complete(run_dir, int(spec.arms[arm].training["steps"])):
        lock.close()
        click.echo("   complete already: kept")  # as it is, with the commit and machine that made it
        return
    with lock:
        _train_or_exit(lambda: _launch(name, arm, profile, overrides, seed, resume, run_dir, workers) if workers > 1
                       else _train_single(spec, arm, run_dir, resume, label_suffix, grid_arm), f"arm {arm}")


def _train_single(spec: Any, arm: str, run_dir: Path, resume: bool, label_suffix: str, grid_arm: str) -> None:
    from kfac_repro.distribute.strategy import reserve_cpu_replicas

    reserve_cpu_replicas(spec.arms[arm].distribution["workers"])
    _train_here(spec, arm, run_dir, resume, label_suffix, grid_arm)


def _train_or_exit(train: Any, what: str) -> None:
    """Run `train()`; exit 128 + N when stopped by signal N, 3 when the run diverged, 1 when it failed."""
    from kfac_repro.distribute.launcher import WorkerFailure

    try:
        train()
    except (interrupts.Interrupted, KeyboardInterrupt) as stop:
        code = stop.exit_code if isinstance(stop, interrupts.Interrupted) else 130
        click.echo(f"\n{what} interrupted ({stop}); continue it with --resume", err=True)
        sys.exit(code)
    except WorkerFailure as error:
        click.echo(f"error: {what} failed: {error}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:
        loop = sys.modules.get("kfac_repro.runner.loop")  # imports TensorFlow: only a run that trained has it
        if loop is not None and isinstance(error, loop.TrainingDiverged):
            click.echo(f"\nerror: {what} diverged: {error}", err=True)
            sys.exit(DIVERGED_EXIT)
        click.echo(f"error: {what} failed: {type(error).__name__}: {error}", err=True)
        sys.exit(1)


@click.command("worker")
@click.argument("name")
@click.option("--arm", required=True, help="the arm this job trains")
@_with_options
@click.option("--run-dir", type=click.Path(path_type=Path), required=True,
              help="the run directory (the same on every worker; worker 0 writes it)")
@click.option("--cluster", "cluster_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help='JSON {"workers": ["host:port", ...]} instead of TF_CONFIG (with --index)')
@click.option("--index", type=click.IntRange(min=0), default=None, help="this host's index in --cluster")
def worker(name: str, arm: str, profile: str, overrides: tuple[str, ...], seed: int | None, resume: bool,
           run_dir: Path, cluster_file: Path | None, index: int | None) -> None:
    """One worker process of a multi-worker run (TF_CONFIG or --cluster/--index say which)."""
    interrupts.install()
    from kfac_repro.distribute.cluster import ClusterConfigError, load_cluster_file, parse_tf_config

    try:
        if cluster_file is not None:
            if index is None:
                raise click.UsageError("--cluster needs --index (this host's position in the workers list)")
            os.environ["TF_CONFIG"] = load_cluster_file(cluster_file, index).tf_config()
        elif "TF_CONFIG" not in os.environ:
            raise click.UsageError("no cluster: set TF_CONFIG or give --cluster FILE --index I")
        parse_tf_config(os.environ["TF_CONFIG"])
    except ClusterConfigError as error:
        raise click.UsageError(str(error)) from error
    spec = _load(name, profile, overrides, seed, (arm,))
    try:
        if run_dir.exists():
            safe_paths.refuse_links(run_dir, ".")
    except safe_paths.UnsafePath as error:
        raise click.UsageError(str(error)) from error
    _train_or_exit(lambda: _train_here(spec, arm, run_dir, resume), "worker")


def _grid_best(out: Path, spec: Any, arm: str) -> dict[str, Any]:
    """The best combination ({section.field: value}) of the arm's grid search under `out`."""
    path = layout.grid_dir(out, spec.name, spec.profile, arm) / layout.GRID_BEST
    try:
        return dict(json.loads(path.read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise click.UsageError(f"--tuned: no grid result for arm {arm!r} ({path}: {error}); run `kfac-repro grid "
                               f"{spec.name} --arm {arm} --profile {spec.profile} --out {out}` first") from error


def _train_here(spec: Any, arm: str, run_dir: Path, resume: bool, label_suffix: str = "", grid_arm: str = "") -> None:
    from kfac_repro.distribute.cluster import parse_tf_config
    from kfac_repro.runner.experiment import RunIdentity, run_arm

    config = spec.arms[arm]
    identity = RunIdentity(spec.name, spec.figure or "", spec.profile, arm, config.label + label_suffix, run_dir,
                           grid_arm)
    steps = int(config.training["steps"])
    chief = "TF_CONFIG" not in os.environ or parse_tf_config(os.environ["TF_CONFIG"]).is_chief
    with click.progressbar(length=steps, label=f"{arm}", show_pos=True, file=sys.stderr) as bar:
        done = [0]

        def progress(step: int, row: dict) -> None:
            bar.update(step - done[0])
            done[0] = step
            if chief:
                val = "" if row.get("val_loss") is None else f" val_loss {row['val_loss']:.4f}"
                click.echo(f"\n  step {step}: train_loss {row['train_loss']:.4f}{val}", err=True)

        final = run_arm(config, identity, resume, progress)
    click.echo(f"   done: step {final.get('step', 0):g}, train_loss {final.get('train_loss'):.4f}, "
               f"val_error {final.get('val_error')}")


def _launch(name: str, arm: str, profile: str, overrides: tuple[str, ...], seed: int | None, resume: bool,
            run_dir: Path, workers: int) -> None:
    from kfac_repro.distribute.launcher import run_local_workers

    command = child_command(worker, {"name": name, "arm": arm, "profile": profile, "overrides": overrides,
                                     "seed": seed, "resume": resume, "run_dir": run_dir})
    seconds = run_local_workers(lambda spec: command, workers, emit=lambda line: click.echo(line, err=True),
                                stop_grace=STOP_GRACE, on_stop=lambda: _mark_interrupted(run_dir))
    click.echo(f"   {workers} workers finished in {seconds:.1f} s")


def _mark_interrupted(run_dir: Path) -> None:
    """After the workers were stopped: a run.json still at `running` (worker 0 killed before it could write) is
    marked `interrupted`."""
    record = layout.read_run_record(run_dir)
    if record.get("status") == "running":
        layout.write_run_record(run_dir, {**record, "status": "interrupted"})
