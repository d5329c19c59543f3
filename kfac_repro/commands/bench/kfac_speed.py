"""`kfac-repro bench step`, `inversion`, `layers` and `async`: K-FAC's own speed, its update against SGD's or
Adam's step, one inversion, divided inversion and asynchronous inversion."""

from __future__ import annotations

from typing import Literal

import click


@click.command("step")
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


@click.command("inversion")
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


@click.command("layers")
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


@click.command("async")
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
