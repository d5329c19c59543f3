"""The paper's Figures 2–8 as declarative specs, and their rendering with matplotlib (training dashed,
validation solid, as in the paper), titled with the profile, data set and device that made them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfac_repro.plotting.results import Run, series

X_LABELS = {"step": "updates", "seconds": "wall-clock", "examples": "examples consumed"}
Y_LABELS = {"loss": "cross-entropy", "error": "error"}
DATA_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "imagenet": "ImageNet", "synthetic": "synthetic"}


@dataclass(frozen=True)
class FigureSpec:
    """Which experiment a figure shows and on which axes."""

    number: int
    spec: str
    title: str
    x_axes: tuple[str, ...] = ("step", "seconds")
    splits: tuple[str, ...] = ("train", "val")


FIGURES = {
    2: FigureSpec(2, "cifar10-async", "CIFAR-10 net: asynchronous vs synchronous inversion, 1 and 4 workers"),
    3: FigureSpec(3, "googlenet-bs256", "GoogLeNet bs 256: SGD+BN (rbz 32/128) vs K-FAC (± BN)"),
    4: FigureSpec(4, "alexnet-bs2048", "AlexNet bs 2048: SGD, SGD+BN rbz 256, K-FAC (doubly-factored fc6)"),
    5: FigureSpec(5, "resnet50-bs512", "ResNet-50 bs 512: SGD+BN rbz 64 vs K-FAC"),
    6: FigureSpec(6, "googlenet-batch-scaling", "GoogLeNet: batch-size scaling of SGD+BN and K-FAC",
                  x_axes=("examples",), splits=("train",)),
    7: FigureSpec(7, "googlenet-kfc-vs-cheap", "GoogLeNet bs 512: KFC vs the cheap App. A conv factors"),
    8: FigureSpec(8, "googlenet-kl-decay", "GoogLeNet bs 256: KL-threshold decay vs learning-rate decay",
                  x_axes=("step",)),
}


def scale_of(runs: dict[str, Run], profile: str) -> str:
    """'profile cpu, data Fashion-MNIST, CPU (x86_64)' from the runs' records."""
    data = sorted({DATA_NAMES.get(str(r.record.get("data")), str(r.record.get("data"))) for r in runs.values()})
    devices = sorted({str(r.environment.get("device", "unknown device")) for r in runs.values()})
    return f"profile {profile}, data {', '.join(data)}, {', '.join(devices)}"


def draw(figure: FigureSpec, runs: dict[str, Run], profile: str) -> Any:
    """The matplotlib Figure of the paper's panels: rows cross-entropy and error, one column per x axis; a line
    per run and split (training dashed, validation solid), x in minutes for wall-clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(figure.x_axes)
    fig, axes = plt.subplots(2, columns, figsize=(5.2 * columns, 7.0), squeeze=False)
    colours: dict[str, Any] = {}
    for row, y in enumerate(("loss", "error")):
        for column, x in enumerate(figure.x_axes):
            axis = axes[row][column]
            for arm, run in runs.items():
                colour = colours.setdefault(arm, f"C{len(colours) % 10}")
                for split in figure.splits:
                    xs, ys = series(run, x, y, split)
                    if x == "seconds":
                        xs = xs / 60.0
                    axis.plot(xs, ys, color=colour, linestyle="--" if split == "train" else "-",
                              label=f"{run.label} ({'train' if split == 'train' else 'val'})")
            if y == "loss":  # early validation spikes (e.g. BN moving averages not yet settled) would flatten the rest
                axis.set_ylim(0, 1.5 * max(float(r.metrics["train_loss"].max()) for r in runs.values()))
            else:
                axis.set_ylim(0, 1)
            axis.set_xlabel(X_LABELS[x] + (" (minutes)" if x == "seconds" else ""))
            axis.set_ylabel(Y_LABELS[y])
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Fig. {figure.number} (paper): {figure.title}\n{scale_of(runs, profile)}", fontsize=10)
    fig.tight_layout()
    return fig


def render(figure: FigureSpec, runs: dict[str, Run], profile: str, out_dir: Path) -> list[Path]:
    """Draw the figure and write it as plots/fig<N>-<profile>.png and .pdf."""
    import matplotlib.pyplot as plt

    fig = draw(figure, runs, profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"fig{figure.number}-{profile}.{ext}" for ext in ("png", "pdf")]
    for path in paths:  # no creation date in the PDF: regenerating unchanged results leaves the files unchanged
        fig.savefig(path, dpi=110, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(fig)
    return paths
