"""`kfac-repro data`: list, verify and download data sets; benchmark the input pipeline against a training step.

Exit codes: 0 success, 1 failure (missing or corrupt data, failed download), 2 bad usage. TensorFlow is imported
only by `bench`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kfac_repro.data import registry
from kfac_repro.data.locations import ENV_VAR, DataNotFoundError
from kfac_repro.models.registry import MODEL_NAMES

if TYPE_CHECKING:
    import tensorflow as tf

_data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"data root holding cifar10/, imagenet/, fashion-mnist/ (default: ${ENV_VAR} or ~/.kfac_repro/data)",
)


@click.group()
def data() -> None:
    """Data sets: list, verify, download, benchmark the input pipeline."""


@data.command("list")
@_data_dir_option
def list_datasets(data_dir: Path | None) -> None:
    """Which data sets are present, and where (or where they were looked for)."""
    for name in registry.DATASET_NAMES:
        present = "yes" if registry.dataset_available(name, data_dir) else "no"
        click.echo(f"{name:<14}{present:<5}{registry.describe(name, data_dir)}")


@data.command()
@click.argument("name", type=click.Choice(registry.DATASET_NAMES))
@_data_dir_option
def verify(name: str, data_dir: Path | None) -> None:
    """Read every file (or record header) of data set NAME and count the examples."""
    try:
        summary = registry.verify(name, data_dir)
    except DataNotFoundError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"ok: {summary}")


@data.command()
@click.argument("name", type=click.Choice(["cifar10", "fashion_mnist"]))
@_data_dir_option
@click.option("--url", default=None,
              help="cifar10: archive to fetch (http(s):// or file://); default: the official one")
@click.option("--md5", default=None, help="cifar10: expected MD5 of the archive; default: the official archive's")
def download(name: str, data_dir: Path | None, url: str | None, md5: str | None) -> None:
    """Download NAME into the data root atomically: CIFAR-10 (python version, MD5 checked) from its official
    address; Fashion-MNIST from the Debian package dataset-fashion-mnist (apt-get download, no root needed)."""
    from kfac_repro.data.download import CIFAR10_MD5, CIFAR10_URL, DownloadError, download_cifar10

    if registry.dataset_available(name, data_dir):
        click.echo(f"already present: {registry.describe(name, data_dir)}")
        return
    if name == "fashion_mnist":
        from kfac_repro.data.debian_package import PACKAGE, install_fashion_mnist

        if url or md5:
            raise click.UsageError("--url and --md5 apply to cifar10 only")
        click.echo(f"fetching the Debian package {PACKAGE}")
        try:
            target = install_fashion_mnist(data_dir)
        except DownloadError as error:
            raise click.ClickException(str(error)) from error
        click.echo(f"ok: Fashion-MNIST idx files in {target}")
        return
    source = url or CIFAR10_URL
    click.echo(f"downloading {source}")
    reported = [-1]  # last tenth reported

    def progress(done: int, total: int | None) -> None:
        tenth = 10 * done // total if total else done // (16 << 20)  # tenths, or every 16 MiB without a size
        if tenth > reported[0]:
            reported[0] = tenth
            of = f" of {total / 2**20:.1f} MiB ({100 * done // total}%)" if total else ""
            click.echo(f"  {done / 2**20:.1f} MiB{of}", err=True)

    try:
        target = download_cifar10(data_dir, url=source, md5=md5 or CIFAR10_MD5, progress=progress)
    except DownloadError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"ok: CIFAR-10 python batches in {target}")


@data.command()
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default="googlenet", show_default=True)
@click.option("--image-size", type=click.IntRange(min=8), default=112, show_default=True,
              help="crop side S (training images are resized to round(S·256/224) first)")
@click.option("--width-multiplier", type=click.FloatRange(min=0, min_open=True), default=0.25, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--images", type=click.IntRange(min=16), default=320, show_default=True,
              help="training JPEGs written to a temporary class-folder set")
@click.option("--jpeg-size", type=(click.IntRange(min=8), click.IntRange(min=8)), default=(240, 320),
              show_default=True, help="height and width of the JPEGs")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="timed batches/steps")
def bench(model_name: str, image_size: int, width_multiplier: float, batch_size: int, images: int,
          jpeg_size: tuple[int, int], steps: int) -> None:
    """Input-pipeline images/s against the SGD training-step rate of a reduced-scale ImageNet-style model."""
    import tempfile

    from kfac_repro.data.throughput import pipeline_rate, step_seconds, write_jpeg_folders
    from kfac_repro.models.registry import build_model

    num_classes = 10
    with tempfile.TemporaryDirectory(prefix="kfac-repro-bench-") as tmp:
        click.echo(f"writing {images} JPEGs of {jpeg_size[0]}×{jpeg_size[1]} in {num_classes} class folders ...",
                   err=True)
        write_jpeg_folders(Path(tmp) / "imagenet", images, num_classes, jpeg_size)

        def pipeline() -> tf.data.Dataset:
            return registry.make_dataset("imagenet", "train", batch_size, data_dir=tmp, image_size=image_size)

        rate = pipeline_rate(pipeline(), steps)
        model = build_model(model_name, input_shape=(image_size, image_size, 3), num_classes=num_classes,
                            width_multiplier=width_multiplier)
        in_memory = step_seconds(model, batch_size, num_classes, steps)
        fed = step_seconds(model, batch_size, num_classes, steps, dataset=pipeline())
    model_rate = batch_size / in_memory
    click.echo(f"input pipeline (JPEG {jpeg_size[0]}×{jpeg_size[1]} → decode, resize "
               f"{round(image_size * 256 / 224)}, random crop {image_size}, batch {batch_size}): {rate:9.1f} images/s")
    click.echo(f"SGD step, {model_name} ×{width_multiplier} at {image_size}×{image_size}, in-memory batch: "
               f"{in_memory:.4f} s = {model_rate:9.1f} images/s")
    click.echo(f"SGD step fed by the pipeline: {fed:.4f} s ({fed / in_memory:.2f} × the in-memory step)")
    verdict = "the pipeline is not the bottleneck" if rate > model_rate else "the PIPELINE IS THE BOTTLENECK"
    click.echo(f"ratio pipeline / training: {rate / model_rate:.2f} ({verdict})")
