"""The Keras suite's results, without TensorFlow: the CSV files (written atomically), each optimizer's selected
setting, the targets, steps and wall-clock to each target, K-FAC's paired ratios, the README table and the plot.

Selection: the grid setting with the lowest time-average of the held-out metric over its run on the tuning seed
(the area under the held-out curve by the trapezoid rule over the evaluation steps, ÷ the last step: it rewards
getting low early and staying low, whatever the spacing of the evaluations; NaN counts as worse than any value), the
same rule for every optimizer.

Targets, per task and batch size, from the measured runs (the selected settings on the measured seeds): with s the
median first value of the target metric and w the worst, over the optimizers, of the median over seeds of each
run's best value (a level every tuned method reaches in its median seed), the targets are s + f·(w − s) for f in
results.targets.FRACTIONS. A run's steps to a target are the first evaluation step at or below it; a run that never
gets there is censored at the budget (a lower bound, counted in the `censored` columns). Wall-clock to a target is
its steps × the optimizer's seconds per `fit` step from the cost timing (one process, the methods in turns).

K-FAC (and each variant of plan.VARIANTS the suite ran) against the best-tuned opponent (AdamW, Muon,
SGD+Nesterov): for each target and clock, the opponent with the lowest mean log time; the ratio K-FAC ÷ opponent per
seed, and the 90% paired t-interval of its mean log (results.paired). The targets come from K-FAC's and the
opponents' runs alone.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfac_repro.benchmarks.keras_suite.plan import (
    DEFAULT_OPTIMIZERS,
    LABELS,
    OPPONENTS,
    OPTIMIZERS,
    SUBJECTS,
    parse_setting,
)
from kfac_repro.results.paired import Interval, interval, paired_log_ratios
from kfac_repro.results.targets import FRACTIONS

Row = dict[str, str]
RUN_FIELDS = ("scale", "phase", "task", "batch", "optimizer", "setting", "seed", "budget", "steps", "selection",
              "target", "train_seconds")
COST_FIELDS = ("scale", "task", "batch", "optimizer", "setting", "ms_per_step", "cost_steps", "rounds", "load")
SUITE_FIELDS = ("task", "batch", "fraction", "target", "optimizer", "setting", "grid_edge", "seeds", "steps_median",
                "seconds_median", "censored", "ms_per_step", "steps_opponent", "steps_ratio", "steps_low",
                "steps_high", "seconds_opponent", "seconds_ratio", "seconds_low", "seconds_high")
REACHED_FIELDS = ("task", "batch", "fraction", "target", "optimizer", "setting", "seed", "steps", "seconds",
                  "censored")
CLOCKS = ("steps", "seconds")
DATA = ("Fashion-MNIST (Debian's dataset-fashion-mnist) for the MLP, the CNNs and the autoencoder; generated token "
        "sequences for the sequence task")


def read_rows(path: Path) -> list[Row]:
    """The rows of a CSV file ([] when it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, fields: Sequence[str], rows: Sequence[Row]) -> None:
    """Write `rows` to `path` through a temporary file and an atomic rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def numbers(text: str) -> list[float]:
    """A space-separated list of numbers ('nan' allowed), as the run rows store curves."""
    return [float(value) for value in text.split()]


def number_text(values: Sequence[float]) -> str:
    """The inverse of `numbers`."""
    return " ".join(f"{value:.6g}" for value in values)


def _score(row: Row) -> float:
    """The time-average of the run's held-out curve (module docstring)."""
    steps, values = numbers(row["steps"]), numbers(row["selection"])
    if not values or any(math.isnan(v) for v in values):
        return math.inf
    if len(values) == 1 or steps[-1] == steps[0]:
        return values[0]
    area = sum((b - a) * (u + v) / 2 for (a, u), (b, v) in itertools.pairwise(zip(steps, values, strict=True)))
    return area / (steps[-1] - steps[0])


def select(runs: Sequence[Row], task: str, batch: int, optimizer: str) -> str | None:
    """The setting (as stored) of the tuning run with the lowest score (module docstring); None without one."""
    tuned = [r for r in runs if r["phase"] == "tune" and r["task"] == task and int(r["batch"]) == batch
             and r["optimizer"] == optimizer]
    return min(tuned, key=_score)["setting"] if tuned else None


def grid_edge(runs: Sequence[Row], task: str, batch: int, optimizer: str, setting: str) -> str:
    """Where the selected `setting` lies on an edge of the grid its tuning runs tried, e.g. 'learning_rate highest'
    (a wider grid might have done better); '' inside it, or for a grid of one value per parameter."""
    tried = [parse_setting(r["setting"]) for r in runs if r["phase"] == "tune" and r["task"] == task
             and int(r["batch"]) == batch and r["optimizer"] == optimizer]
    edges = []
    for key, value in parse_setting(setting).items():
        values = sorted({t[key] for t in tried if key in t})
        if len(values) > 1 and value in (values[0], values[-1]):
            edges.append(f"{key} {'lowest' if value == values[0] else 'highest'}")
    return ", ".join(edges)


def steps_to(row: Row, level: float) -> tuple[float, bool]:
    """(the first evaluation step whose target metric is ≤ `level`, False), or (the budget, True) when none is."""
    for step, value in zip(numbers(row["steps"]), numbers(row["target"]), strict=True):
        if value <= level:
            return max(step, 1.0), False
    return float(row["budget"]), True


def _best(row: Row) -> float:
    values = [v for v in numbers(row["target"]) if not math.isnan(v)]
    return min(values) if values else math.inf


def targets(measured: dict[str, list[Row]]) -> list[float]:
    """The levels of the module docstring from the measured runs of the default optimizers (K-FAC and its
    opponents: a variant run besides them never moves their rows)."""
    defaults = [rows for optimizer, rows in measured.items() if optimizer in DEFAULT_OPTIMIZERS]
    start = statistics.median(numbers(r["target"])[0] for rows in defaults for r in rows)
    worst = max(statistics.median(_best(r) for r in rows) for rows in defaults)
    return [start + fraction * (worst - start) for fraction in FRACTIONS]


def _mean_log(times: dict[int, float]) -> float:
    return sum(math.log(t) for t in times.values()) / len(times)


@dataclass(frozen=True)
class _Reached:
    """One target of one task and batch size: each optimizer's selected setting, its seconds per step, and per
    measured seed (steps to the target, censored)."""

    task: str
    batch: int
    fraction: float
    level: float
    chosen: dict[str, str]
    edges: dict[str, str]
    ms_per_step: dict[str, float]
    found: dict[str, dict[int, tuple[float, bool]]]


def _reached(runs: Sequence[Row], costs: Sequence[Row]) -> Iterator[_Reached]:
    """Every target of every task and batch size whose measured runs and costs cover all its optimizers (the
    default ones and any other with runs there) on at least one common seed (only the common seeds count)."""
    for task, batch in sorted({(r["task"], int(r["batch"])) for r in runs if r["phase"] == "final"}):
        here = [r for r in runs if r["task"] == task and int(r["batch"]) == batch]
        optimizers = [o for o in OPTIMIZERS if o in DEFAULT_OPTIMIZERS or any(r["optimizer"] == o for r in here)]
        chosen = {o: select(runs, task, batch, o) or "" for o in optimizers}
        edges = {o: grid_edge(runs, task, batch, o, chosen[o]) for o in optimizers}
        measured = {o: [r for r in here if r["phase"] == "final" and r["optimizer"] == o
                        and r["setting"] == chosen[o]] for o in optimizers}
        cost = {c["optimizer"]: float(c["ms_per_step"]) for c in costs
                if c["task"] == task and int(c["batch"]) == batch}
        seeds = set.intersection(*({int(r["seed"]) for r in measured[o]} for o in optimizers))
        if not seeds or not set(cost) >= set(optimizers):
            continue
        measured = {o: [r for r in measured[o] if int(r["seed"]) in seeds] for o in optimizers}
        for fraction, level in zip(FRACTIONS, targets(measured), strict=True):
            found = {o: {int(r["seed"]): steps_to(r, level) for r in measured[o]} for o in optimizers}
            yield _Reached(task, batch, fraction, level, chosen, edges, cost, found)


def per_run(runs: Sequence[Row], costs: Sequence[Row]) -> list[Row]:
    """Each measured run's steps and wall-clock seconds to each target (REACHED_FIELDS)."""
    return [{"task": r.task, "batch": str(r.batch), "fraction": f"{r.fraction:g}", "target": f"{r.level:.6g}",
             "optimizer": o, "setting": r.chosen[o], "seed": str(seed), "steps": f"{steps:g}",
             "seconds": f"{steps * r.ms_per_step[o] / 1000:.4g}", "censored": str(int(censored))}
            for r in _reached(runs, costs) for o in r.chosen
            for seed, (steps, censored) in sorted(r.found[o].items())]


def summarise(runs: Sequence[Row], costs: Sequence[Row]) -> list[Row]:
    """The suite table's rows (SUITE_FIELDS): per task, batch, target and optimizer, for every task and batch
    whose measured runs and costs cover all optimizers on at least one common seed."""
    rows = []
    for r in _reached(runs, costs):
        times = {"steps": {o: {s: v[0] for s, v in r.found[o].items()} for o in r.chosen}}
        times["seconds"] = {o: {s: v * r.ms_per_step[o] / 1000 for s, v in times["steps"][o].items()}
                            for o in r.chosen}
        for o in r.chosen:
            row = {"task": r.task, "batch": str(r.batch), "fraction": f"{r.fraction:g}", "target": f"{r.level:.6g}",
                   "optimizer": o, "setting": r.chosen[o], "grid_edge": r.edges[o], "seeds": str(len(r.found[o])),
                   "steps_median": f"{statistics.median(times['steps'][o].values()):g}",
                   "seconds_median": f"{statistics.median(times['seconds'][o].values()):.4g}",
                   "censored": str(sum(c for _, c in r.found[o].values())), "ms_per_step": f"{r.ms_per_step[o]:.4g}"}
            for clock in CLOCKS:
                if o not in SUBJECTS:
                    row.update({f"{clock}_{key}": "" for key in ("opponent", "ratio", "low", "high")})
                    continue
                row[f"{clock}_opponent"], found_interval = _against_best(times[clock], o)
                for key, value in zip(("ratio", "low", "high"), (found_interval.mean, found_interval.low,
                                                                  found_interval.high), strict=True):
                    row[f"{clock}_{key}"] = f"{math.exp(value):.4g}"
            rows.append(row)
    return rows


def _against_best(times: dict[str, dict[int, float]], subject: str) -> tuple[str, Interval]:
    """The opponent with the lowest mean log time, and the interval of log(subject / it) over seeds."""
    opponent = min(OPPONENTS, key=lambda o: _mean_log(times[o]))
    return opponent, interval(paired_log_ratios(times[subject], times[opponent]))


def _interval_text(row: Row, clock: str) -> str:
    mean, low, high = (math.log(float(row[f"{clock}_{key}"])) for key in ("ratio", "low", "high"))
    return Interval(mean, low, high, int(row["seeds"])).ratio_text()


def markdown_table(suite: Sequence[Row], command: str) -> str:
    """The README's table of K-FAC against the best-tuned opponent, from the suite CSV's rows, with `command`; the
    same table of each variant after it where the suite ran it."""
    tables = [_subject_table(suite, subject) for subject in SUBJECTS
              if subject == "kfac" or any(r["optimizer"] == subject for r in suite)]
    return f"Made by `{command}`. " + "\n".join(tables)


def _subject_table(suite: Sequence[Row], subject: str) -> str:
    name = LABELS[subject]
    lines = [f"Ratios: {name} ÷ the best-tuned of AdamW, Muon and SGD+Nesterov at each target (mean over paired "
             f"seeds, 90% interval), each optimizer with the setting its grid chose (lr: learning rate); censored: "
             f"seeds that never reached the target ({name} / opponent); a setting marked ‡ is its grid's lowest or "
             f"highest value of that parameter (a wider grid might have done better). Data: {DATA}.", "",
             f"| task | batch | target (fraction) | {name} setting | {name} steps | steps: opponent (median), "
             f"{name} ÷ it | wall-clock: opponent (median s), {name} ÷ it | {name} ms/step | seeds | censored |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["task"], r["batch"], r["fraction"], r["optimizer"]): r for r in suite}
    for row in (r for r in suite if r["optimizer"] == subject):
        cells = []
        for clock in CLOCKS:
            opponent = by_key[(row["task"], row["batch"], row["fraction"], row[f"{clock}_opponent"])]
            cells.append(f"{LABELS[opponent['optimizer']]} {_shown(opponent)} "
                         f"({opponent[f'{clock}_median']}) {_interval_text(row, clock)}")
        steps_opponent = by_key[(row["task"], row["batch"], row["fraction"], row["steps_opponent"])]
        lines.append(f"| {row['task']} | {row['batch']} | {float(row['target']):.4g} ({row['fraction']}) | "
                     f"{_shown(row)} | {row['steps_median']} | {cells[0]} | {cells[1]} | "
                     f"{row['ms_per_step']} | {row['seeds']} | {row['censored']} / {steps_opponent['censored']} |")
    return "\n".join(lines) + "\n"


def _shown(row: Row) -> str:
    """A suite row's setting as the table shows it: 'learning_rate=0.003' as 'lr=0.003', no setting as 'defaults',
    a parameter at its grid's edge marked ‡ (grid_edge)."""
    marked = {edge.split()[0] for edge in row["grid_edge"].split(", ") if edge}
    parts = [f"{key}={value}‡" if key in marked else f"{key}={value}"
             for key, value in (item.split("=") for item in row["setting"].split())]
    return " ".join(parts).replace("learning_rate=", "lr=") or "defaults"


def plot(suite: Sequence[Row], path: Path) -> None:
    """PNG: K-FAC's (and its variants', where run) wall-clock (filled) and steps (open) ratio to the best-tuned opponent
    at each target, with the 90% paired intervals, on a log axis; 1 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for r in suite if r["optimizer"] in SUBJECTS]
    figure, axes = plt.subplots(figsize=(7, 1.5 + 0.3 * len(rows)))
    for offset, clock, fill in ((-0.15, "seconds", "C0"), (0.15, "steps", "none")):
        ratio = [float(r[f"{clock}_ratio"]) for r in rows]
        low = [max(v - float(r[f"{clock}_low"]), 0.0) if r[f"{clock}_low"] != "nan" else 0.0
               for v, r in zip(ratio, rows, strict=True)]
        high = [max(float(r[f"{clock}_high"]) - v, 0.0) if r[f"{clock}_high"] != "nan" else 0.0
                for v, r in zip(ratio, rows, strict=True)]
        axes.errorbar(ratio, [i + offset for i in range(len(rows))], xerr=[low, high], fmt="o", color="C0",
                      markerfacecolor=fill, label="wall-clock" if clock == "seconds" else "steps")
    axes.axvline(1.0, color="grey", linewidth=0.8)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_yticks(range(len(rows)), [f"{r['task']} b{r['batch']} f{r['fraction']}"
                                       + (f" {LABELS[r['optimizer']]}" if r["optimizer"] != "kfac" else "")
                                       for r in rows])
    axes.invert_yaxis()
    axes.set_xlabel("K-FAC (and variants) ÷ best-tuned opponent, time to target (90% paired interval)")
    axes.set_title("Keras suite; data: Fashion-MNIST, and generated tokens for the sequence task", fontsize=9)
    axes.legend(loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
