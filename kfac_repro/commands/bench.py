"""`kfac-repro bench`: benchmarks that print measured figures (never pass/fail)."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from kfac_repro.benchmarks.gpu.table import PAPER_MODELS, Row, ratios, write_rows
from kfac_repro.benchmarks.keras_suite.plan import (
    DEFAULT_BATCHES,
    SCALES,
    TASK_DESCRIPTIONS,
    TASK_NAMES,
)

if TYPE_CHECKING:
    import tensorflow as tf


@click.group()
def bench() -> None:
    """Benchmarks: every arm's cost per update, step time against SGD, fit step time against Adam, inversion time,
    async inversion, step time of the newer layer blocks against Adam, the paper profile on a GPU, the Keras suite's
    time to target."""


@bench.command("arms")
@click.argument("name")
@click.option("--profile", default="paper", show_default=True)
@click.option("--arm", "arms", multiple=True, help="time only this arm (repeatable; default: all)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a resolved field")
@click.option("--blocks", type=click.IntRange(min=1), default=7, show_default=True,
              help="timed rounds, each a block of updates of every arm in turn (a block: at least one inversion "
                   "period); the median over them is the arm's cost, so a slow spell of the machine needs more than "
                   "half of the rounds to move it")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="writes OUT/<spec>/<profile>/bench-arms.csv, which `kfac-repro report` reads")
def arms(name: str, profile: str, arms: tuple[str, ...], overrides: tuple[str, ...], blocks: int,
         out: Path) -> None:
    """Every arm's steady-state seconds per update, back to back in one process, and its component times."""
    import os
    from datetime import UTC, datetime

    from kfac_repro.specs import SpecError, load_spec

    try:
        spec = load_spec(name, profile=profile, overrides=overrides, arms=arms)
    except SpecError as error:
        raise click.UsageError(str(error)) from error
    from kfac_repro.distribute.strategy import make_strategy, reserve_cpu_replicas

    reserve_cpu_replicas(max(int(a.distribution["workers"]) for a in spec.arms.values()))
    from kfac_repro.benchmarks.arm_costs.measure import machine_record, measure_arms
    from kfac_repro.benchmarks.arm_costs.other_cpu import OtherCPU
    from kfac_repro.benchmarks.arm_costs.table import (
        SHARED_OTHER,
        earlier_sittings,
        shared_by_other_cpu,
        table_path,
        write_costs,
    )
    from kfac_repro.runner.environment import git_commit

    machine = {**machine_record(), "commit": git_commit(Path(__file__).resolve().parent),
               "time_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    click.echo(f"{spec.name} [{profile}] on {machine['host']}, {machine['device']}, {machine['cpus']} cores; "
               f"load average before: {machine['load_before']}")
    others = OtherCPU()
    strategies: dict[int, tf.distribute.Strategy] = {}  # one per replica count (see measure_arms)

    def strategy_for(replicas: int) -> tf.distribute.Strategy:
        if replicas not in strategies:
            strategies[replicas] = make_strategy(local_replicas=replicas)
        return strategies[replicas]

    measurements = measure_arms(spec.arms, blocks, strategy_for,
                                progress=lambda what: click.echo(f"  {what} ...", err=True))
    machine["load_after"] = round(os.getloadavg()[0], 2)
    share = others.share()
    machine["other_cpu"] = "" if share is None else round(share, 4)
    path = table_path(out, spec.name, profile)
    write_costs(path, spec.name, profile, measurements, machine)
    for m in measurements:
        if m.unit == "bytes":
            click.echo(f"{m.arm:14}{m.quantity:17}{m.examples:>7}{m.value / 1e6:12.3f} MB")
        else:
            click.echo(f"{m.arm:14}{m.quantity:17}{m.examples:>7}{m.value * 1e3:12.2f} ms   "
                       f"[{m.low * 1e3:.2f}, {m.high * 1e3:.2f}]")
    other = "unknown (no /proc/stat)" if share is None else f"{100 * share:.1f}%"
    kind = "an unknown" if share is None else "a shared" if shared_by_other_cpu(share) else "an idle"
    click.echo(f"other processes' share of the CPU time while timing: {other}, so the report reads these timings as "
               f"taken on {kind} machine (shared above {100 * SHARED_OTHER:.0f}%); load average after: "
               f"{machine['load_after']}\nwrote {path}")
    earlier = earlier_sittings(path)
    if earlier:
        click.echo(f"earlier sittings kept beside it ({len(earlier)}, the newest {earlier[-1].name}); the report "
                   "checks every verdict with those of the same commit")


@bench.command("step")
@click.option("--model", "model_name", type=click.Choice(["cifar10", "mlp"]), default="cifar10", show_default=True,
              help="cifar10: the paper's CIFAR-10 net (3 conv 5×5, 32-32-64, softmax) on 32×32×3 inputs, K-FAC "
                   "variants without inversion and one inversion; mlp: 784-1000-500-250-30-10 tanh, K-FAC as it "
                   "trains (factors every step, inverses every 10). Both time K-FAC with float32 and with bfloat16 "
                   "products (KFACConfig.product_dtype).")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="timed steps per variant (the median is reported)")
def step(model_name: str, batch_size: int, repeats: int) -> None:
    """Median step time of SGD against K-FAC, as ratios measured in one process on one fixed random batch."""
    if model_name == "mlp":
        _mlp_updates(batch_size, repeats)
        return
    from kfac_repro.benchmarks.step_time import measure_step_times
    from kfac_repro.models.cifar10_net import cifar10_net

    click.echo(f"model: {model_name} net, batch {batch_size}, random inputs; median of {repeats} steps, the "
               "methods in turns")
    timings, volumes = measure_step_times(
        cifar10_net, (32, 32, 3), 10, batch_size, repeats=repeats,
        progress=lambda what: click.echo(f"  timing {what} ...", err=True),
    )
    click.echo(f"{'':58}{'seconds':>10}{'× SGD':>9}")
    for timing in timings:
        click.echo(f"{timing.what:58}{timing.seconds:10.4f}{timing.ratio:9.2f}")
    click.echo(f"all-reduced per replica: gradients {volumes['gradients_per_step'] / 1e6:.2f} MB every step, "
               f"factors {volumes['factors_per_refresh'] / 1e6:.2f} MB every statistics step")


def _mlp_updates(batch_size: int, repeats: int) -> None:
    from kfac_repro.benchmarks.arithmetic_floor import PRODUCT_SIZE, floor, mlp_multiply_adds
    from kfac_repro.benchmarks.step_time import MLP_WIDTHS, deep_mlp, measure_update_times

    widths = "-".join(map(str, MLP_WIDTHS))
    click.echo(f"model: MLP {widths} tanh, batch {batch_size}, random inputs; SGD: median of {repeats} "
               "steps; K-FAC: factors every step, inverses every 10, whole periods; SGD and each K-FAC in turns")
    timings = measure_update_times(deep_mlp, MLP_WIDTHS[:1], MLP_WIDTHS[-1], batch_size, repeats=repeats,
                                   progress=lambda what: click.echo(f"  timing {what} ...", err=True))
    click.echo(f"{'':58}{'seconds':>10}{'× SGD':>9}")
    for timing in timings:
        click.echo(f"{timing.what:58}{timing.seconds:10.4f}{timing.ratio:9.2f}")
    counts = mlp_multiply_adds(MLP_WIDTHS, batch_size)
    click.echo("  timing TensorFlow's matrix product ...", err=True)
    bound = floor(counts, timings[0].seconds)
    update = next(t.seconds for t in timings if t.what == "K-FAC update without inversion")
    giga = 1e9
    click.echo(f"arithmetic (counted): SGD {counts.sgd / giga:.2f} G multiply-adds; K-FAC adds the sampled backward "
               f"pass {counts.sampled_backward / giga:.2f} G, the factor products {counts.factor_products / giga:.2f} "
               f"G and the preconditioning {counts.preconditioning / giga:.2f} G: {counts.kfac / giga:.2f} G, "
               f"{counts.kfac / counts.sgd:.2f}× SGD's")
    click.echo(f"TensorFlow's {PRODUCT_SIZE}² product here: float32 {bound.float32_rate / giga:.0f} G/s, bfloat16 "
               f"{bound.bfloat16_rate / giga:.0f} G/s")
    click.echo(f"floor of K-FAC's update without inversion at those rates: {bound.float32_ratio:.2f}× SGD's step in "
               f"float32, {bound.bfloat16_ratio:.2f}× with bfloat16 products; the float32 update ran at "
               f"{counts.kfac / update / giga:.0f} G/s, {counts.kfac / update / bound.float32_rate:.0%} of the "
               "float32 product's rate")


@bench.command("inversion")
@click.option("--map", "map_shape", nargs=3, type=click.IntRange(min=1), default=(6, 6, 256), show_default=True,
              help="H W C of the map the fully-connected layer reads (AlexNet fc6: 6 6 256)")
@click.option("--outputs", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--device", default=None, metavar="DEVICE",
              help="run the decompositions with tf.linalg on this TensorFlow device (e.g. /GPU:0; default: numpy "
                   "on the host)")
@click.option("--workers", type=click.IntRange(min=1), multiple=True,
              help="instead: the reduced AlexNet's inversion divided among this many worker processes on "
                   "127.0.0.1 (repeatable: --workers 1 --workers 2 --workers 4)")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="--workers: inversions per worker (the median is reported)")
def inversion(map_shape: tuple[int, int, int], outputs: int, dtype: Literal["float32", "float64"],
              device: str | None, workers: tuple[int, ...], repeats: int) -> None:
    """One inversion of a fully-connected layer over a map: doubly-factored against plain Kronecker factors;
    with --workers, the per-worker time of inversion divided among N workers."""
    if workers:
        _divided_inversion(workers, repeats)
        return
    from kfac_repro.benchmarks.inversion import time_inversions

    height, width, channels = map_shape
    where = f"tf.linalg Cholesky on {device}" if device else "LAPACK Cholesky"
    click.echo(f"layer: Dense over a {height}×{width}×{channels} map → {outputs}; {where} in {dtype}")
    timings = time_inversions(height, width, channels, outputs, dtype,
                              progress=lambda what: click.echo(f"  inverting {what} ...", err=True), device=device)
    for timing in timings:
        click.echo(f"{timing.block:18}{timing.factors:34}{timing.seconds:10.2f} s")
    click.echo(f"plain / doubly-factored: {timings[1].seconds / timings[0].seconds:.1f}×")


@bench.command("fit")
@click.option("--model", "models", type=click.Choice(["cnn", *TASK_NAMES]), multiple=True,
              default=("mlp", "cnn", "bn-cnn"), show_default=True,
              help="cnn: two 5×5 conv layers (16, 32) → 10 on Fashion-MNIST; or a task of the Keras suite at full "
                   "width, with its data and loss: " + "; ".join(f"{name}: {text}"
                                                               for name, text in TASK_DESCRIPTIONS.items()))
@click.option("--batch-size", "batch_sizes", type=click.IntRange(min=1), multiple=True, default=(128, 1024),
              show_default=True, help="batch size (repeatable)")
@click.option("--steps", type=click.IntRange(min=1), default=40, show_default=True,
              help="steps per epoch, rounded up to whole statistics and inverse periods of every K-FAC arm")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True,
              help="timed epochs after one warm-up epoch (the median is reported)")
@click.option("--kfac", "variants", multiple=True, metavar="'KEY=VALUE ...'",
              help="also time K-FAC with these settings (KFAC's keyword arguments, e.g. 'stats_every=5 "
                   "inverse_every=20'; repeatable), in the same turns")
def fit(models: tuple[str, ...], batch_sizes: tuple[int, ...], steps: int, epochs: int,
        variants: tuple[str, ...]) -> None:
    """ms per step of Keras `fit` with kfac_repro.keras.KFAC (its defaults: their amortisation and inverse
    refreshes included; and each --kfac variant) and with Adam, at each batch size, every optimizer's and batch
    size's epochs in turns; K-FAC's cost as a ratio to Adam's at the same batch size."""
    from kfac_repro.benchmarks.fit_time import ADAM_LABEL, DEFAULTS, epoch_steps, kfac_label, time_fit

    settings = [DEFAULTS]
    for text in variants:
        arm = _kfac_settings(text)
        if arm in settings:
            raise click.BadParameter(f"{text!r}: the same settings as another --kfac; every arm must differ",
                                     param_hint="--kfac")
        settings.append(arm)
    models = tuple(dict.fromkeys(models))
    sizes = sorted(set(batch_sizes))
    asked, steps = steps, epoch_steps(steps, settings)
    rounded = f" ({asked} asked, rounded up to whole refresh periods of every K-FAC arm)" if steps != asked else ""
    click.echo(f"each model's first batch × {steps} training examples, batch {', '.join(map(str, sizes))}; median "
               f"(and range) of {epochs} epochs of {steps} steps{rounded} after a warm-up epoch, every optimizer "
               "and batch size in turns")
    width = max(20, *(len(kfac_label(arm)) + 2 for arm in settings))
    named = max(8, *(len(name) + 1 for name in models))
    click.echo(f"{'model':{named}}{'batch':>6}  {'optimizer':{width}}{'ms/step':>10}{'range':>16}{'× Adam':>9}"
               f"{'train loss':>12}")
    for name in models:  # each model's rows as soon as it is timed
        timings = time_fit([name], sizes, steps, epochs,
                           progress=lambda what: click.echo(f"  fitting {what} ...", err=True), variants=settings)
        adam = {t.batch_size: t.ms_per_step for t in timings if t.optimizer == ADAM_LABEL}
        for t in sorted(timings, key=lambda t: (t.batch_size, t.optimizer == ADAM_LABEL)):
            spread = f"{t.low_ms:.1f}-{t.high_ms:.1f}"
            click.echo(f"{t.model:{named}}{t.batch_size:6}  {t.optimizer:{width}}{t.ms_per_step:10.1f}"
                       f"{spread:>16}{t.ms_per_step / adam[t.batch_size]:9.2f}{t.loss:12.4f}")


def _kfac_settings(text: str) -> dict[str, object]:
    """'stats_every=5 inverse_every=20' → KFAC's keyword arguments, checked by building an unattached KFAC."""
    from kfac_repro.keras import KFAC
    from kfac_repro.specs.yaml_source import parse_scalar

    pairs = [item.partition("=") for item in text.split()]
    bad = [key for key, sign, value in pairs if not (key and sign and value)]
    if bad or not pairs:
        raise click.BadParameter(f"{text!r}: expected KEY=VALUE items separated by spaces", param_hint="--kfac")
    repeated = sorted(key for key, count in Counter(key for key, _, _ in pairs).items() if count > 1)
    if repeated:
        raise click.BadParameter(f"{text!r}: {', '.join(repeated)} given more than once", param_hint="--kfac")
    settings = {key: parse_scalar(value) for key, _, value in pairs}
    try:
        KFAC(None, **settings)
    except (TypeError, ValueError) as error:
        raise click.BadParameter(f"{text!r}: {error}", param_hint="--kfac") from error
    return settings


@bench.command("keras")
@click.option("--only", "tasks", type=click.Choice(TASK_NAMES), multiple=True,
              help="only this task (repeatable; default: all): " + "; ".join(
                  f"{name}: {text}" for name, text in TASK_DESCRIPTIONS.items()))
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True,
              help="batch size (repeatable; default 128 and 1024, tiny: 32)")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="measured seeds per optimizer (1..N; the tuning runs use seed 0)")
@click.option("--scale", type=click.Choice(sorted(SCALES)), default="full", show_default=True,
              help="; ".join(f"{name}: {scale.description}" for name, scale in SCALES.items()))
@click.option("--tiny", is_flag=True, help="the same as --scale tiny")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/keras"),
              show_default=True, help="runs.csv and costs.csv (resumed from), suite.csv, suite.md, suite.png")
@click.option("--ekfac", is_flag=True, help="also run EKFAC (K-FAC with eigenvalue_correction, amortised as K-FAC "
              "amortised) on K-FAC's grid, compared with the same opponents; a suite already run adds EKFAC's runs "
              "and times every optimizer again in turns")
@click.option("--amortised", is_flag=True, help="also run K-FAC amortised (statistics and inverses less often: "
              "keras_suite.plan.AMORTISED) on K-FAC's grid, compared with the same opponents; added to a suite already "
              "run like --ekfac")
@click.option("--defaults", is_flag=True, help="also run K-FAC with its Keras defaults, untuned (one setting), "
              "against the same tuned opponents: the arm the README's targets are judged on")
@click.option("--no-timing", is_flag=True, help="train only: leave the per-step cost timings to a later call "
              "without this flag, made on an otherwise idle machine (training runs count steps, not seconds, so "
              "they may share the machine; the timings may not)")
def keras_suite(tasks: tuple[str, ...], batches: tuple[int, ...], seeds: int, scale: str, tiny: bool,
                out: Path, ekfac: bool, amortised: bool, defaults: bool, no_timing: bool) -> None:
    """Time to target of K-FAC (kfac_repro.keras.KFAC in `fit`) against AdamW, Muon and SGD+Nesterov, each tuned
    with an equal grid, on five tasks and two batch sizes; K-FAC's (and its variants') paired ratios to the
    best-tuned opponent.
    Resumable: each run is written as it finishes, and a rerun skips what OUT holds."""
    import shlex
    import sys

    from kfac_repro.benchmarks.keras_suite.plan import DEFAULT_OPTIMIZERS, SuiteError
    from kfac_repro.benchmarks.keras_suite.run import Plan, run_suite

    chosen = SCALES["tiny" if tiny else scale]
    command = "kfac-repro " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else (
        "kfac-repro bench keras")
    asked = {"ekfac": ekfac, "kfac-amortised": amortised, "kfac-defaults": defaults}
    optimizers = (*DEFAULT_OPTIMIZERS, *(name for name, wanted in asked.items() if wanted))
    plan = Plan(tasks or TASK_NAMES, batches or DEFAULT_BATCHES[chosen.name], seeds, chosen, out, command, optimizers,
                timing=not no_timing)
    try:
        suite = run_suite(plan, echo=lambda line: click.echo(line, err=True))
    except SuiteError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {out / 'suite.csv'} ({len(suite)} rows), {out / 'suite.md'}"
               + (f", {out / 'suite.png'}" if suite else ""))


@bench.command("layers")
@click.option("--model", "model_names", type=click.Choice(["transformer", "embedding"]), multiple=True,
              default=("transformer", "embedding"), show_default=True,
              help="transformer: an encoder block over 64 tokens, width 64, 4 heads, vocabulary 1000; "
                   "embedding: a 10000 × 64 Embedding + Conv1D text classifier over 64 tokens")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="timed steps per variant (the median is reported)")
def layers(model_names: tuple[str, ...], batch_size: int, repeats: int) -> None:
    """Median ms/step of K-FAC against Adam on models of the newer blocks (EinsumDense, LayerNorm, Embedding,
    Conv1D), random tokens, all measured in one process."""
    from kfac_repro.benchmarks.layer_time import embedding_classifier, measure_layer_models, transformer_block

    length, classes = 64, 10
    models = {
        "transformer": (lambda: transformer_block(length, 1000, 64, 4, classes), 1000),
        "embedding": (lambda: embedding_classifier(length, 10_000, 64, classes), 10_000),
    }
    for name in model_names:
        build, vocabulary = models[name]
        click.echo(f"model: {name}, batch {batch_size}, {length} random tokens; median of {repeats} steps")
        timings = measure_layer_models(build, length, vocabulary, classes, batch_size, repeats=repeats,
                                       progress=lambda what: click.echo(f"  timing {what} ...", err=True))
        click.echo(f"{'':44}{'ms':>10}{'× Adam':>9}")
        for timing in timings:
            click.echo(f"{timing.what:44}{1000 * timing.seconds:10.1f}{timing.ratio:9.2f}")


def _divided_inversion(counts: tuple[int, ...], repeats: int) -> None:
    from kfac_repro.benchmarks.divided_inversion import ARM, PROFILE, SPEC, measure, shares_alone

    click.echo(f"model: {SPEC} {PROFILE} profile, arm {ARM} (reduced AlexNet), seeded random factors; damped "
               "inverses divided per factor among N worker processes on 127.0.0.1, one LAPACK thread each; "
               f"median of {repeats}")
    click.echo(f"{'N':>3}{'worker':>8}{'parts':>8}{'cost share':>12}{'compute s':>11}{'CPU s':>9}{'share s':>9}")
    single: float | None = None
    for count in counts:
        click.echo(f"  timing {count} worker(s) ...", err=True)
        timings = measure(count, repeats)
        total = sum(t.cost for t in timings)
        for t in timings:
            click.echo(f"{count:>3}{t.worker:>8}{len(t.parts):>8}{t.cost / total:>12.1%}{t.compute_seconds:>11.3f}"
                       f"{t.compute_cpu_seconds:>9.3f}{t.share_seconds:>9.3f}")
        slowest = max(t.compute_cpu_seconds for t in timings)
        if count == 1:
            single = slowest
        if single is not None:
            click.echo(f"    N={count}: slowest worker's CPU seconds = {slowest * count / single:.2f} × time(1)/N "
                       "(goal ≤ 1.3)")
    click.echo("each worker's share timed alone in this process (one LAPACK thread; no worker shares a core with "
               "another):")
    alone = shares_alone(counts, repeats)
    for count, seconds in alone.items():
        ratio = max(seconds) * count / sum(alone[1]) if 1 in alone else float("nan")
        shares = ", ".join(f"{value:.3f}" for value in seconds)
        click.echo(f"    N={count}: shares {shares} s; slowest = {ratio:.2f} × time(1)/N (goal ≤ 1.3)")


@bench.command("async")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=60, show_default=True, help="timed updates per arm")
@click.option("--inversion-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="cores given to the inversion; TensorFlow gets the others")
def async_(batch_size: int, steps: int, inversion_threads: int) -> None:
    """Update time of asynchronous K-FAC and of synchronous refresh every 20, against never inverting."""
    from kfac_repro.kfac.inversion.resources import reserve_inversion_cores

    tf_threads = reserve_inversion_cores(inversion_threads)  # before TensorFlow runs anything
    from kfac_repro.benchmarks.async_inversion import PROFILE, SPEC, measure_async

    click.echo(f"model: CIFAR-10 net ({SPEC}, {PROFILE} profile settings), batch {batch_size}, random inputs; "
               f"inversion on {inversion_threads} LAPACK thread(s), TensorFlow on {tf_threads}; mean of {steps} "
               "updates per arm")
    timing = measure_async(batch_size, steps, inversion_threads=inversion_threads,
                           progress=lambda what: click.echo(f"  timing {what} ...", err=True))
    click.echo(f"{'':52}{'s/update':>10}{'ratio':>8}")
    click.echo(f"{'K-FAC, never inverting':52}{timing.never_seconds:10.4f}{1.0:8.3f}")
    click.echo(f"{'K-FAC, asynchronous inversion (free-running)':52}{timing.async_seconds:10.4f}"
               f"{timing.async_seconds / timing.never_seconds:8.3f}   (goal ≤ 1.05)")
    sync_label = f"K-FAC, synchronous inversion every {timing.sync_every}"
    click.echo(f"{sync_label:52}{timing.sync_seconds:10.4f}{timing.sync_seconds / timing.never_seconds:8.3f}")
    interval = f"{timing.steps / timing.refreshes:.1f} updates" if timing.refreshes else "none in the timed updates"
    click.echo(f"async refresh interval achieved: {interval} ({timing.refreshes} refreshes in {timing.steps}); "
               f"mean staleness {timing.mean_staleness:.1f} updates")


@bench.command("paper-scale")
@click.argument("names", nargs=-1, required=True)
@click.option("--arm", "arms", multiple=True, help="only this arm (repeatable; default: all)")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--updates", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the rows (with every update's loss) to this CSV file")
@click.option("--result-file", type=click.Path(dir_okay=False, path_type=Path), default=None, hidden=True)
def paper_scale(names: tuple[str, ...], arms: tuple[str, ...], batch_size: int, updates: int,
                csv_path: Path | None, result_file: Path | None) -> None:
    """Each paper-profile arm of experiments NAMES at full size: a few updates on one batch of synthetic data, each
    arm in a process of its own (first loss, last loss, s/update, peak MB)."""
    import dataclasses
    import json
    import sys
    import tempfile

    from kfac_repro.benchmarks.paper_scale import PaperScaleResult, check_arm, small_batch_overrides, table
    from kfac_repro.distribute import interrupts
    from kfac_repro.specs import SpecError, load_spec

    if arms and len(names) > 1:
        raise click.UsageError(f"--arm selects arms of one experiment; {len(names)} were named: {', '.join(names)}")
    jobs = []
    try:
        for name in names:
            spec = load_spec(name, arms=arms)
            jobs += [(name, arm, small_batch_overrides(config, batch_size)) for arm, config in spec.arms.items()]
    except SpecError as error:
        raise click.UsageError(str(error)) from error
    if result_file is not None:  # the child: one arm, its result as JSON
        ((name, arm, overrides),) = jobs
        adapted = load_spec(name, overrides=overrides, arms=(arm,)).arms[arm]
        result_file.write_text(json.dumps(dataclasses.asdict(check_arm(name, arm, adapted, updates))))
        return
    interrupts.install()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, arm, overrides) in enumerate(jobs, 1):
            click.echo(f"[{index}/{len(jobs)}] {name} {arm}: {' '.join(overrides)}", err=True)
            path = Path(scratch) / f"{index}.json"
            child = interrupts.start_child([sys.executable, "-m", "cli", "bench", "paper-scale", name, "--arm", arm,
                                            "--batch-size", str(batch_size), "--updates", str(updates),
                                            "--result-file", str(path)])
            try:
                code = interrupts.wait_child(child, grace=10.0)
            except interrupts.Interrupted as stop:
                click.echo(f"{stop}: {name} {arm} stopped; the arms after it not checked", err=True)
                sys.exit(stop.exit_code)
            if code != 0 or not path.exists():
                raise click.ClickException(f"{name} {arm}: the check failed (its output above)")
            fields = json.loads(path.read_text())
            results.append(PaperScaleResult(**{**fields, "losses": tuple(fields["losses"])}))
    click.echo(table(results))
    if csv_path is not None:
        import csv

        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, [field.name for field in dataclasses.fields(PaperScaleResult)])
            writer.writeheader()
            writer.writerows({**dataclasses.asdict(r), "losses": " ".join(f"{x:.4f}" for x in r.losses)}
                             for r in results)


@bench.command("gpu")
@click.option("--scale", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="full: the paper profile's models (224×224, 1000 classes) at the paper's per-GPU batch; tiny: the "
                   "smoke profile's (32×32, width ×0.125, batch 16), seconds on a CPU, for tests")
@click.option("--model", "models", type=click.Choice(list(PAPER_MODELS)), multiple=True,
              help="only this model (repeatable; default: all three)")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="timed blocks, inversions, fit epochs per method (the median is reported)")
@click.option("--budget-s", type=click.FloatRange(min=0, min_open=True), default=450.0, show_default=True,
              help="stop when this many seconds have passed since the start, keeping what was measured; the "
                   "measurement running then is dropped, the rest skipped")
@click.option("--largest-batch", is_flag=True,
              help="also each model's largest batch that fits, doubling the per-GPU batch up to the scale's limit "
                   "(gpu.profile.SCALES), and SGD and K-FAC amortised there; each batch tried traces anew (minutes "
                   "on a GPU)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the CSV, rewritten after each measurement (default: results/gpu/<UTC time>-<scale>.csv)")
def gpu(scale: str, models: tuple[str, ...], repeats: int, budget_s: float, largest_batch: bool,
        out: Path | None) -> None:
    """The paper profile's costs on the device TensorFlow finds (a GPU, else the CPU), in one process, methods in
    turns: SGD and K-FAC updates (statistics every step in float32 and bfloat16 products, amortised as the spec's
    paper profile), one inversion on the host and on the device, peak memory, Keras fit with K-FAC and Adam on a
    BatchNormalization CNN; ratios printed, rows written to a CSV as measured."""
    from kfac_repro.benchmarks.budget import Budget

    budget = Budget(budget_s)  # the whole command, imports included
    from datetime import UTC, datetime

    from kfac_repro.benchmarks.budget import run_measurements
    from kfac_repro.benchmarks.gpu import profile as gpu_profile
    from kfac_repro.runner.environment import git_commit

    now = datetime.now(UTC)
    path = out or Path("results") / "gpu" / f"{now.strftime('%Y%m%dT%H%M%SZ')}-{scale}.csv"
    import tensorflow as tf

    context = {"time_utc": now.isoformat(timespec="seconds"), "commit": git_commit(Path(__file__).resolve().parent)
               or "", "device": gpu_profile.device_name(), "driver": gpu_profile.driver_version(),
               "tensorflow": tf.__version__, "build": gpu_profile.build_info(), "scale": scale}
    click.echo(f"device: {context['device']}; driver: {context['driver']}\n{context['build']}")
    rows: list[Row] = []
    try:
        write_rows(path, rows, context)
    except OSError as error:
        raise click.ClickException(f"--out {path}: cannot write there ({error})") from error
    progress = functools.partial(click.echo, err=True)
    found, profiles = gpu_profile.measurements(models or tuple(PAPER_MODELS), gpu_profile.SCALES[scale], repeats,
                                               lambda what: progress(f"    {what}"), largest_batch)

    def announced(index: int, name: str, measure: Callable[[], list[Row]]) -> list[Row]:
        progress(f"[{index}/{len(found)}] {name} ({budget.left():.0f} s of the budget left) ...")
        return measure()

    def keep(_name: str, measured: list[Row]) -> None:
        rows.extend(measured)
        write_rows(path, rows, context)

    try:
        outcome = run_measurements([(name, functools.partial(announced, i, name, measure))
                                    for i, (name, measure) in enumerate(found, 1)], budget, keep)
    finally:
        for profile in profiles:
            profile.close()
    click.echo(f"{'model':10}{'batch':>6}  {'quantity':40}{'value':>14}  unit")
    for row in rows:
        value = "n/a" if row.value is None else f"{row.value:.6g}"
        click.echo(f"{row.model:10}{row.batch_size:>6}  {row.quantity:40}{value:>14}  {row.unit}"
                   + (f"  ({row.note})" if row.note else ""))
    click.echo("ratios (of times, measured in this run):")
    for ratio in ratios(rows):
        click.echo(f"  {ratio.text()}")
    if outcome.interrupted or outcome.skipped:
        stopped = f"stopped during: {outcome.interrupted} (dropped); " if outcome.interrupted else ""
        click.echo(f"the budget of {budget_s:g} s ran out: {stopped}skipped: {'; '.join(outcome.skipped) or 'none'}")
    click.echo(f"wrote {path} ({len(rows)} rows)")
