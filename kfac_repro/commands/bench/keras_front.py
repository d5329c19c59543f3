"""`kfac-repro bench fit` and `keras`: the Keras front end, its `fit` step against Adam's and the Keras
benchmark suite's time to target against tuned AdamW, Muon and SGD."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from kfac_repro.benchmarks.keras_suite.plan import DEFAULT_BATCHES, SCALES, TASK_DESCRIPTIONS, TASK_NAMES


@click.command("fit")
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


@click.command("keras")
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
