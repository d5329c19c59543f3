"""The paper's Figures 2–8 as declarative specs, and their rendering with matplotlib: each arm's mean over seeds
with a band (the range over seeds), training dashed and validation solid as in the paper; legends name what ran
(batch size, rbz, workers, seeds, from the runs' resolved settings), the caption what the paper ran."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfac_repro.plotting.clock import Clock
from kfac_repro.results.runs import Run
from kfac_repro.results.seeds import band

X_LABELS = {"step": "updates", "examples": "examples consumed",
            "seconds": "logged wall-clock from the first update (not an idle-machine cost)"}
Y_LABELS = {"loss": "cross-entropy", "error": "error"}
DATA_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "imagenet": "ImageNet", "synthetic": "synthetic"}
Arms = Mapping[str, Sequence[Run]]


@dataclass(frozen=True)
class FigureSpec:
    """Which experiment a figure shows, on which axes, and what the paper ran (for the caption). The "time" axis is
    updates × each arm's seconds per update (`clock.Clock`; the modelled cluster clock's when `modelled_clock`),
    or the runs' logged wall-clock without one. Methods are told apart by colour family (`FAMILIES`); colour_by
    "batch_size": a method's arms in its shades, light to dark with the batch size (Fig. 6)."""

    number: int
    spec: str
    title: str
    paper: str
    x_axes: tuple[str, ...] = ("step", "time")
    splits: tuple[str, ...] = ("train", "val")
    colour_by: str = "arm"
    modelled_clock: bool = False


FIGURES = {
    2: FigureSpec(2, "cifar10-async", "CIFAR-10 net: asynchronous vs synchronous inversion, 1 and 4 workers",
                  "paper: CIFAR-10, batch 512, 1 or 4 GPUs as gradient workers, 3000 updates", modelled_clock=True),
    3: FigureSpec(3, "googlenet-bs256", "GoogLeNet: SGD+BN (two rbz) vs K-FAC (± BN)",
                  "paper: ImageNet, batch 256, SGD+BN rbz 32 and 128, 4 GPUs"),
    4: FigureSpec(4, "alexnet-bs2048", "AlexNet: SGD, SGD+BN, K-FAC (doubly-factored fc6)",
                  "paper: ImageNet, batch 2048, SGD+BN rbz 256, 8 GPUs, inverses every ~200 updates"),
    5: FigureSpec(5, "resnet50-bs512", "ResNet-50: SGD+BN vs K-FAC", "paper: ImageNet, batch 512, rbz 64, 8 GPUs"),
    6: FigureSpec(6, "googlenet-batch-scaling", "GoogLeNet: batch-size scaling of SGD+BN and K-FAC",
                  "paper: ImageNet, batch 256, 1024 and 2048", x_axes=("examples",), splits=("train",),
                  colour_by="batch_size"),
    7: FigureSpec(7, "googlenet-kfc-vs-cheap", "GoogLeNet: KFC vs the cheap App. A conv factors",
                  "paper: ImageNet, batch 512"),
    8: FigureSpec(8, "googlenet-kl-decay", "GoogLeNet: KL-threshold decay vs learning-rate decay",
                  "paper: ImageNet, batch 256, decay ×0.96 every 3200 updates", x_axes=("step",)),
}


def scale_of(arms: Arms, profile: str) -> str:
    """'profile cpu, data Fashion-MNIST, CPU (x86_64)' from the runs' records."""
    runs = [run for seeds in arms.values() for run in seeds]
    data = sorted({DATA_NAMES.get(str(r.record.get("data")), str(r.record.get("data"))) for r in runs})
    devices = sorted({str(r.environment.get("device", "unknown device")) for r in runs})
    return f"profile {profile}, data {', '.join(data)}, {', '.join(devices)}"


def arm_label(runs: Sequence[Run]) -> str:
    """The arm's label with what ran: batch size, rbz (BN arms), workers and seeds, from its runs. The paper's batch
    sizes that older labels carry ("bz256", "rbz128") are dropped: the caption gives them."""
    first = runs[0]
    name = " ".join(word for word in first.label.split() if not re.fullmatch(r"r?bz\d+", word))
    batch = first.setting("training", "batch_size") or first.record.get("batch_size")
    workers = first.setting("distribution", "workers") or first.record.get("workers", 1)
    rbz = f" rbz {first.setting('model', 'bn_chunk_size')}" if first.setting("model", "batch_norm") else ""
    diverged = sum(run.diverged for run in runs)
    return f"{name}: bs {batch}{rbz}, {workers} worker(s), {len(runs)} seed(s)" + (
        f", {diverged} diverged (mean only up to the first divergence)" if diverged else "")


def _order(arms: Arms, figure: FigureSpec) -> list[str]:
    def key(arm: str) -> tuple[str, int, int, str]:
        first = arms[arm][0]
        return (first.method, int(first.setting("training", "batch_size") or first.record.get("batch_size", 0)),
                int(first.setting("distribution", "workers") or 1), arm)

    return sorted(arms, key=key) if figure.colour_by == "batch_size" else list(arms)


# Each method's colour family (K-FAC cool, SGD warm): its arms take the family's colours in turn (colour_by "arm")
# or its shades, light to dark with the batch size (colour_by "batch_size").
FAMILIES = {"kfac": ("#1f4e9c", "#7b4fb0", "#2aa1b8", "#5b8fd6", "#0b2a5c"),
            "sgd": ("#e07b00", "#c0392b", "#b59a00", "#8c564b", "#f2a65a")}
SHADES = {"kfac": "Blues", "sgd": "Oranges"}


def _colours(arms: Arms, order: list[str], figure: FigureSpec) -> dict[str, Any]:
    """Every arm's colour: methods told apart by colour family, arms of one method by the family's colours or, by
    batch size, its shades."""
    from matplotlib import colormaps

    colours: dict[str, Any] = {}
    for method in dict.fromkeys(arms[a][0].method for a in order):
        mine = [a for a in order if arms[a][0].method == method]
        if figure.colour_by == "batch_size":
            sizes = sorted({int(arms[a][0].setting("training", "batch_size") or 0) for a in mine})
            shades = colormaps[SHADES.get(method, "Greys")]
            colours.update({a: shades(0.45 + 0.5 * sizes.index(int(arms[a][0].setting("training", "batch_size")
                                                                      or 0)) / max(1, len(sizes) - 1))
                            for a in mine})
        else:
            family = FAMILIES.get(method, tuple(f"C{i}" for i in range(10)))
            colours.update({a: family[i % len(family)] for i, a in enumerate(mine)})
    return colours


def caption(figure: FigureSpec, arms: Arms, clock: Clock | None = None) -> str:
    commits = sorted({run.commit[:10] for runs in arms.values() for run in runs})
    mixing = f"mixes commits {', '.join(commits)}" if len(commits) > 1 else f"commit {commits[0] if commits else '?'}"
    if clock is not None or "time" not in figure.x_axes:
        return f"{figure.paper}. Ours: lines are seed means, bands the range over seeds; {mixing}."
    first_updates = [float(v) for runs in arms.values() for run in runs if "first_update_seconds" in run.metrics
                     for v in run.metrics["first_update_seconds"].dropna()]
    older = any("first_update_seconds" not in run.metrics for runs in arms.values() for run in runs)
    tracing = "; ".join(
        ([f"first update (tracing) {min(first_updates):.1f}–{max(first_updates):.1f} s, not on the wall-clock axis"]
         if first_updates else []) + (["older runs' wall-clock includes their first update's tracing"] if older
                                      else []))
    return f"{figure.paper}. Ours: lines are seed means, bands the range over seeds; {tracing}; {mixing}."


def draw(figure: FigureSpec, arms: Arms, profile: str, clock: Clock | None = None) -> Any:
    """The matplotlib Figure: rows cross-entropy and error, one column per x axis; per arm a mean line and a
    band for each split; time in minutes (updates × the clock's s/update, else logged wall-clock); log-scaled y axes
    fitted to the plotted data (so neither the untrained start nor a spike flattens the curves' later differences);
    the legend outside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    columns = len(figure.x_axes)
    untrained: float | None = None  # the highest step-0 value left above a loss or error axis
    fig, axes = plt.subplots(2, columns, figsize=(5.0 * columns + 4.2, 7.4), squeeze=False)
    order = _order(arms, figure)
    colours = _colours(arms, order, figure)
    for row, y in enumerate(("loss", "error")):
        for column, x in enumerate(figure.x_axes):
            axis = axes[row][column]
            drawn: list[tuple[Any, Any, Any]] = []  # (x, low, high) of every band, for the axis range
            for arm in order:
                for split in figure.splits:
                    curve = band(arms[arm], _source(x, clock), f"{split}_{y}")
                    if curve.empty:
                        continue
                    xs = _x_values(curve["x"], x, arm, clock)
                    axis.plot(xs, curve["mean"], color=colours[arm], linestyle="--" if split == "train" else "-",
                              label=f"{arm} ({split})")
                    axis.fill_between(xs, curve["low"], curve["high"], color=colours[arm], alpha=0.15, linewidth=0)
                    drawn.append((curve["x"], curve["low"], curve["high"]))
            if drawn:
                low, high, above = _y_range(drawn)
                margin = (high / low) ** 0.05 if high > low else 1.1
                axis.set_yscale("log")
                axis.set_ylim(low / margin, high * margin)
                axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
                axis.yaxis.set_minor_formatter(ticker.FuncFormatter(_minor_tick))
                if above is not None:
                    untrained = max(untrained or 0.0, above)
            axis.set_xlabel(_x_label(x, clock))
            axis.set_ylabel(Y_LABELS[y])
            axis.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[a], label=arm_label(arms[a])) for a in order]
    handles += [Line2D([], [], color="grey", linestyle="--", label="training"),
                Line2D([], [], color="grey", linestyle="-", label="validation")][: 2 if len(figure.splits) > 1 else 1]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(f"Fig. {figure.number} (paper): {figure.title}\n{scale_of(arms, profile)}", fontsize=10)
    note = "" if untrained is None else (f" The untrained models' first evaluation (up to {untrained:.3g}) lies "
                                         "above the axes, which are fitted to the later points.")
    fig.text(0.5, 0.005, caption(figure, arms, clock) + note, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _y_range(bands: Sequence[tuple[Any, Any, Any]]) -> tuple[float, float, float | None]:
    """(low, high) over every band's points (low: the smallest positive one, for the log axis), and None; but where
    the bands' step-0 points (x = 0, the untrained model) reach above twice the highest later point, the range of the
    later points and that step-0 height."""
    low = _positive_min([lows for _, lows, _ in bands])
    high = max(float(highs.max()) for _, _, highs in bands)
    later = [(lows[xs > 0], highs[xs > 0]) for xs, lows, highs in bands if (xs > 0).any()]
    if not later:
        return low, high, None
    later_high = max(float(highs.max()) for _, highs in later)
    if high <= 2.0 * later_high:
        return low, high, None
    return _positive_min([lows for lows, _ in later]), later_high, high


def _minor_tick(value: float, _: object) -> str:
    """A log axis's minor tick label: 2, 3 and 5 times a power of ten, the others unlabelled."""
    leading = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if any(math.isclose(leading, digit) for digit in (2, 3, 5)) else ""


def _positive_min(values: Sequence[Any]) -> float:
    """The smallest positive value of the arrays (a log axis cannot show 0), 1e-3 when none is positive."""
    positive = [float(v[v > 0].min()) for v in values if (v > 0).any()]
    return min(positive) if positive else 1e-3


def _source(x: str, clock: Clock | None) -> str:
    """The metrics column behind an axis: time is steps × s/update with a clock, the logged seconds without."""
    return ("step" if clock else "seconds") if x == "time" else x


def _x_values(values: Any, x: str, arm: str, clock: Clock | None) -> Any:
    if x != "time":
        return values
    return values * clock.seconds[arm] / 60.0 if clock else values / 60.0


def _x_label(x: str, clock: Clock | None) -> str:
    if x != "time":
        return X_LABELS[x]
    return f"time: {clock.label} (minutes)" if clock else X_LABELS["seconds"] + " (minutes)"


def render(figure: FigureSpec, arms: Arms, profile: str, out_dir: Path, clock: Clock | None = None) -> list[Path]:
    """Draw the figure and write it as plots/fig<N>-<profile>.png and .pdf."""
    import matplotlib.pyplot as plt

    fig = draw(figure, arms, profile, clock)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"fig{figure.number}-{profile}.{ext}" for ext in ("png", "pdf")]
    for path in paths:  # no creation date in the PDF: regenerating unchanged results leaves the files unchanged
        fig.savefig(path, dpi=110, bbox_inches="tight",
                    metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(fig)
    return paths
