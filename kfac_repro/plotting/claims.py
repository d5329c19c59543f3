"""The paper's headline claims, each measured from the seeds of one figure's arms, with its rule and verdict.

Progress and cost apart: per-update progress (updates to a target) comes from the runs, one value per seed; the
cost of an update from `kfac-repro bench arms` (bench-arms.csv: every arm timed back to back on one machine); time
to target = updates × seconds per update. Distributed claims (C1 async vs sync, C2 gradient workers) use the
cluster clock, modelled from measured components (`benchmarks.cluster_clock`).

Verdict rule for a speed-up claim of factor F (values where smaller is better, one per seed): *reproduced* when the
effect (mean of the slower arm / mean of the faster) reaches 0.75·F and the two arms' seed ranges do not overlap;
*partly* when the ranges are apart in the claimed direction but the effect is below 0.75·F; *not reproduced* when
they are apart the other way; *inconclusive* when the ranges overlap, an arm has fewer than 3 seeds, or the
timings were taken on a shared machine; *no data* when an arm or its cost is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from kfac_repro.benchmarks.cluster_clock import LABEL, Components, Layout, async_staleness, per_update_seconds
from kfac_repro.benchmarks.cost_table import ArmCosts
from kfac_repro.plotting.results import Run
from kfac_repro.plotting.seeds import (
    Spread,
    best,
    capped_share,
    final,
    per_seed,
    seeds_text,
    spread,
    updates_to_target,
)

REPRODUCED, PARTLY, NOT_REPRODUCED, NO_DATA = "reproduced", "partly", "not reproduced", "no data"
INCONCLUSIVE = "inconclusive"
MIN_SEEDS = 3
THRESHOLD = 0.75
BANDWIDTH = 1.25e9  # bytes/second: a 10 Gbit/s link between gradient workers (our choice; the paper states none)
SPEED_RULE = ("effect = mean of the slower arm / mean of the faster, over seeds; reproduced: ≥ 75% of the claimed "
              "factor and the seed ranges apart; partly: apart but below 75%; not reproduced: apart the other way; "
              "inconclusive: ranges overlap, < 3 seeds, or timings from a shared machine")

Arms = Mapping[str, Sequence[Run]]
Costs = Mapping[str, ArmCosts]


@dataclass(frozen=True)
class GridUse:
    """An arm's grid search (`kfac-repro grid`): the settings it tried, whether the arm's runs use its best, and
    where their settings ranked in it when they do not (None: not among the grid's settings)."""

    size: int
    applied: bool
    rank: int | None = None

    @property
    def tuned(self) -> int:
        """The grid size the runs actually benefit from: 0 unless they run its best."""
        return self.size if self.applied else 0

    def text(self, arm: str) -> str:
        if self.applied:
            return f"{arm} runs the best of its grid of {self.size}"
        where = f"rank {self.rank} of {self.size}" if self.rank else f"not among the {self.size}"
        return f"{arm} runs the spec's settings ({where} in its grid)"


Tuning = Mapping[str, GridUse]  # arm → its grid search, for the arms that have one
TUNING_RULE = ("tuning: a verdict needs both arms to run the best of equally large grids, or else the less tuned "
               "arm to be the one that won")


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, what the runs show, the verdict and the rule that gave it."""

    figure: int
    claim: str
    measured: str
    verdict: str
    rule: str = ""
    effect: str = ""  # the headline effect as `measured` prints it (a speed-up's "1.23×"), where the rule has one


def compare(faster: Spread, slower: Spread, claimed: float) -> tuple[str, float]:
    """(verdict, effect) for per-seed values where smaller is better, `faster` the arm claimed faster by `claimed`."""
    if faster.n == 0 or slower.n == 0 or math.isnan(faster.mean) or math.isnan(slower.mean):
        return NO_DATA, math.nan
    effect = slower.mean / faster.mean if math.isfinite(faster.mean) else math.nan
    if min(faster.n, slower.n) < MIN_SEEDS:
        return INCONCLUSIVE, effect
    if faster.high < slower.low:
        return (REPRODUCED if effect >= THRESHOLD * claimed else PARTLY), effect
    if slower.high < faster.low:
        return NOT_REPRODUCED, effect
    return INCONCLUSIVE, effect


def common_target(arms: Arms, names: Sequence[str], column: str) -> float:
    """The largest best value of `column` over every seed of the named arms: a target every run reaches."""
    return max(best(run, column) for name in names for run in arms[name])


def seeds_note(arms: Arms, names: Sequence[str]) -> str:
    """'label: 3 seed(s)' per arm, with how many diverged."""
    return ", ".join(f"{arms[name][0].label}: {len(arms[name])} seed(s)" + diverged_note(arms[name]) for name in names)


def diverged_note(runs: Sequence[Run]) -> str:
    """' (seed 0 diverged at step 5740)' for the runs that diverged, '' if none did."""
    diverged = [f"seed {r.seed} diverged at step {r.last_step}" for r in runs if r.diverged]
    return f" ({', '.join(diverged)})" if diverged else ""


def components(costs: ArmCosts) -> Components:
    def seconds(quantity: str) -> float:
        found = costs.get(quantity)
        return found.value if found else 0.0

    passes = {m.examples: m.value for (q, _), m in costs.values.items() if q == "gradient_pass"}
    return Components(passes, seconds("apply"), seconds("inversion"), int(seconds("gradient_bytes")))


def layout(run: Run, workers: int | None = None) -> Layout:
    optimizer = run.resolved.get("optimizer") or {}
    inversion = str(optimizer.get("inversion", "sync")) if run.method == "kfac" else "none"
    return Layout(workers or int(run.setting("distribution", "workers") or 1),
                  int(run.setting("training", "batch_size") or run.record.get("batch_size", 1)), inversion,
                  int(optimizer.get("inverse_every") or 1), BANDWIDTH)


def speedup(figure: int, claim: str, arms: Arms, faster: str, slower: str, claimed: float,
            seconds: Callable[[str], tuple[float | None, str]], column: str = "val_error",
            tuning: Tuning | None = None) -> Claim:
    """Time to the common target: updates (per seed) × seconds per update (`seconds(arm)`: value and where it came
    from, None when missing); the verdict by `compare`. With `tuning`, arms tuned with grids of different sizes
    give no verdict."""
    rule = f"{SPEED_RULE}; metric {column}, target: the worst best {column} over all seeds of both arms"
    if faster not in arms or slower not in arms:
        missing = faster if faster not in arms else slower
        return Claim(figure, claim, f"no complete run of {missing}", NO_DATA, rule)
    target = common_target(arms, (faster, slower), column)
    reached = {a: [updates_to_target(run, column, target) for run in arms[a]] for a in (faster, slower)}
    updates = {a: spread(values) for a, values in reached.items()}
    progress = (f"{column} target {target:.3f}; updates to target: {arms[slower][0].label} "
                f"{seeds_text(arms[slower], reached[slower])}, {arms[faster][0].label} "
                f"{seeds_text(arms[faster], reached[faster])}")
    costs = {a: seconds(a) for a in (faster, slower)}
    if any(value is None for value, _ in costs.values()):
        return Claim(figure, claim, f"{progress}; {costs[faster][1] or costs[slower][1]}", NO_DATA, rule)
    times = {a: updates[a].scaled(float(costs[a][0] or 0.0)) for a in (faster, slower)}
    verdict, effect = compare(times[faster], times[slower], claimed)
    measured = (f"{progress}; s/update {costs[slower][0]:.4f} vs {costs[faster][0]:.4f} ({costs[faster][1]}); "
                f"time to target {times[slower].text(1, ' s')} vs {times[faster].text(1, ' s')} → {effect:.2f}× "
                f"({seeds_note(arms, (slower, faster))})")
    if "shared machine" in costs[faster][1] and verdict != NO_DATA:
        verdict = INCONCLUSIVE
    splits = {a: sorted({int(r.record.get("holdout") or 0) for r in arms[a]}) for a in (faster, slower)}
    if splits[faster] != splits[slower] and verdict != NO_DATA:
        measured, verdict = measured + f"; validated on different splits (held out: {splits}), no verdict", \
            INCONCLUSIVE
    if tuning is not None:
        measured, verdict = _judge_tuning(measured, verdict, tuning, faster, slower)
    return Claim(figure, claim, measured, verdict, f"{rule}; {TUNING_RULE}" if tuning is not None else rule,
                 f"{effect:.2f}×" if math.isfinite(effect) else "")


def _judge_tuning(measured: str, verdict: str, tuning: Tuning, faster: str, slower: str) -> tuple[str, str]:
    """The tuning each arm ran with appended; the verdict withdrawn when the better-tuned arm is the one that won."""
    uses = {a: tuning.get(a) for a in (faster, slower)}
    if not any(uses.values()):
        return measured + "; neither arm grid-searched: both run the spec's settings", verdict
    parts = [use.text(a) if use else f"{a} not grid-searched" for a, use in uses.items()]
    measured += "; " + ", ".join(parts)
    tuned = {a: use.tuned if use else 0 for a, use in uses.items()}
    winner = {REPRODUCED: faster, PARTLY: faster, NOT_REPRODUCED: slower}.get(verdict)
    if tuned[faster] != tuned[slower] and winner is not None and tuned[winner] > min(tuned.values()):
        return measured + ": the winner was tuned more, no verdict", INCONCLUSIVE
    return measured, verdict


def measured_cost(costs: Costs) -> Callable[[str], tuple[float | None, str]]:
    """Seconds per update from bench-arms.csv, and a note naming the machine (and whether it was shared)."""

    def seconds(arm: str) -> tuple[float | None, str]:
        if arm not in costs:
            return None, "no cost measured: run `kfac-repro bench arms` for this experiment"
        found, machine = costs[arm].get("update"), costs[arm].machine
        where = f"bench arms on {machine.get('device')}, {machine.get('cpus')} cores"
        if costs[arm].shared:
            where += f", a shared machine ({costs[arm].load}): no verdict"
        return (found.value if found else None), where

    return seconds


def modelled_cost(arms: Arms, costs: Costs, workers: int | None = None) -> Callable[[str], tuple[float | None, str]]:
    """Per-update seconds of the paper's layout for the arm (cluster clock), from its measured components."""

    def seconds(arm: str) -> tuple[float | None, str]:
        if arm not in costs or arm not in arms:
            return None, "no components measured: run `kfac-repro bench arms` for this experiment"
        shape = layout(arms[arm][0], workers)
        note = f"{LABEL}, link {BANDWIDTH / 1e9:.2f} GB/s"
        if costs[arm].shared:
            note += ", components from a shared machine: no verdict"
        return per_update_seconds(components(costs[arm]), shape), note

    return seconds


def pooled_modelled_cost(arms: Arms, costs: Costs, pair: Sequence[str]) -> Callable[[str], tuple[float | None, str]]:
    """The cluster clock for two arms that differ only in how they invert (C1): their gradient passes and
    preconditioning are the same computation, so those components are pooled (the mean of the two arms' timings)
    and the modelled updates differ only where the layouts do, sync's inline inversion."""
    if any(arm not in costs or arm not in arms for arm in pair):
        return modelled_cost(arms, costs)
    parts = [components(costs[arm]) for arm in pair]
    shards = set.intersection(*(set(part.gradient_seconds) for part in parts))
    gradient = {n: float(np.mean([part.gradient_seconds[n] for part in parts])) for n in shards}
    apply = float(np.mean([part.apply_seconds for part in parts]))

    def seconds(arm: str) -> tuple[float | None, str]:
        own = components(costs[arm])
        note = f"{LABEL}, gradient pass and apply pooled over both arms, link {BANDWIDTH / 1e9:.2f} GB/s"
        if costs[arm].shared:
            note += ", components from a shared machine: no verdict"
        pooled = Components(gradient, apply, own.inversion_seconds, own.gradient_bytes)
        return per_update_seconds(pooled, layout(arms[arm][0])), note

    return seconds


def async_claims(arms: Arms, costs: Costs) -> list[Claim]:
    """C1 (Fig. 2): asynchronous inversion ≈1.5× faster per update than sync-every-20, at comparable progress."""
    claims = []
    for n in (1, 4):
        claim = f"C1: async inversion ≈1.5× faster than sync at comparable per-update progress ({n} worker(s))"
        pair = (f"async-gpu{n}", f"sync-gpu{n}")
        row = speedup(2, claim, arms, *pair, 1.5, pooled_modelled_cost(arms, costs, pair))
        if f"async-gpu{n}" in arms and f"async-gpu{n}" in costs:
            run = arms[f"async-gpu{n}"][0]
            stale = async_staleness(components(costs[f"async-gpu{n}"]), layout(run))
            ran = per_seed(arms[f"async-gpu{n}"], lambda r: float(r.metrics["inverse_staleness"].mean()))
            row = replace(row, measured=row.measured + f"; modelled async staleness {stale} updates, mean "
                          f"staleness in the runs {ran.text(1)}")
        claims.append(row)
    return claims


def worker_scaling(arms: Arms, costs: Costs) -> Claim:
    """C2 (Fig. 2): near-linear speed-up from 1 to 4 gradient workers (async inversion)."""
    claim = "C2: near-linear (≈4×) speed-up from 1 to 4 gradient workers (async inversion)"
    one, four = modelled_cost(arms, costs, 1), modelled_cost(arms, costs, 4)
    return speedup(2, claim, arms, "async-gpu4", "async-gpu1", 4.0,
                   lambda arm: (four if arm.endswith("4") else one)(arm))


def stale_inverses(arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """C4 (Fig. 4): K-FAC works with inverses refreshed only every ~200 updates, ≈1.5× faster than SGD+BN."""
    row = speedup(4, "C4: K-FAC with inverses refreshed every ~200 updates ≈1.5× faster than improved SGD+BN "
                  "(rbz 256) on AlexNet", arms, "kfac", "sgd-bn-rbz256", 1.5, measured_cost(costs), tuning=tuning)
    stale = per_seed(arms.get("kfac", []), lambda r: float(r.metrics["inverse_staleness"].max()))
    return replace(row, measured=f"K-FAC's largest inverse staleness {stale.text(0)} updates; " + row.measured)


def bn_generalisation(arms: Arms) -> Claim:
    """Fig. 3: BN regularises K-FAC: a smaller validation − training loss gap at equal training loss."""
    claim = "C3 (BN): BN helps K-FAC generalise: smaller validation − training gap at equal training loss"
    rule = ("gap = val_loss − train_loss at the first validation row whose train_loss ≤ the level both arms "
            "reach (the larger of their lowest train losses); verdict as for speed-ups with the gap in place of time")
    if "kfac" not in arms or "kfac-bn" not in arms:
        return Claim(3, claim, "missing runs", NO_DATA, rule)
    rows = [r.metrics.dropna(subset=["val_loss", "train_loss"]) for a in ("kfac", "kfac-bn") for r in arms[a]]
    level = max(float(r["train_loss"].min()) for r in rows)

    def gap(run: Run) -> float:
        logged = run.metrics.dropna(subset=["val_loss", "train_loss"])
        reached = logged[logged["train_loss"] <= level + 1e-12]
        return float(reached["val_loss"].iloc[0] - reached["train_loss"].iloc[0]) if len(reached) else math.nan

    gaps = {a: per_seed(arms[a], gap) for a in ("kfac", "kfac-bn")}
    verdict, _ = compare(gaps["kfac-bn"], gaps["kfac"], 1.0)
    measured = (f"at train loss {level:.3f}: gap K-FAC {gaps['kfac'].text()}, K-FAC+BN {gaps['kfac-bn'].text()} "
                f"({seeds_note(arms, ('kfac', 'kfac-bn'))})")
    return Claim(3, claim, measured, REPRODUCED if verdict == PARTLY else verdict, rule)


def early_speedup(arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """C5 (Fig. 5): K-FAC trains ResNet-50 faster than SGD+BN early on (no factor stated)."""
    claim = "C5: K-FAC faster than SGD+BN (rbz 64) during the early stages on ResNet-50 (no factor stated)"
    names = ("kfac", "sgd-bn-rbz64")
    if any(a not in arms for a in names):
        return Claim(5, claim, "missing runs", NO_DATA, SPEED_RULE)
    row = speedup(5, claim, arms, "kfac", "sgd-bn-rbz64", 1.0, measured_cost(costs), column="train_loss",
                  tuning=tuning)
    return replace(row, rule=row.rule + "; any speed-up beyond the seed ranges counts")


def batch_scaling(arms: Arms) -> Claim:
    """C6 (Fig. 6): training loss at equal examples nearly independent of the batch size for K-FAC, not SGD+BN.

    Per seed s: r_s = max_b L(b, s) / min_b L(b, s), L(b, s) the training loss of seed s at batch size b after the
    largest example count every run reached; K-FAC's r_s against SGD+BN's by `compare` (smaller is better)."""
    claim = "C6: per-example progress nearly constant across batch sizes for K-FAC, not for SGD+BN"
    rule = ("per seed: train loss max/min over batch sizes at the largest example count all runs reached; "
            "reproduced when K-FAC's seed range lies below SGD+BN's; not reproduced when above; inconclusive when "
            "the ranges overlap or < 3 seeds")
    groups = {method: [a for a in arms if a.startswith(f"{method}-bs")] for method in ("kfac", "sgd-bn")}
    for method, names in groups.items():
        if len(names) < 2:
            return Claim(6, claim, f"fewer than two {method} batch sizes", NO_DATA, rule)
    runs = [r for names in groups.values() for a in names for r in arms[a]]
    examples = min(float(r.metrics["examples"].max()) for r in ([r for r in runs if not r.diverged] or runs))
    ratios = {method: spread(_ratios_by_seed(arms, names, examples)) for method, names in groups.items()}
    verdict, _ = compare(ratios["kfac"], ratios["sgd-bn"], 1.0)
    measured = (f"train loss max/min across batch sizes at {examples:,.0f} examples, per seed: K-FAC "
                f"{ratios['kfac'].text(2)}, SGD+BN {ratios['sgd-bn'].text(2)} ({seeds_note(arms, list(arms))})")
    return Claim(6, claim, measured, REPRODUCED if verdict == PARTLY else verdict, rule)


def _ratios_by_seed(arms: Arms, names: Sequence[str], examples: float) -> list[float]:
    """max/min over the named arms of the training loss at `examples`, for each seed every arm ran (+∞ for a seed
    whose run at some batch size diverged before it got there)."""
    losses: dict[int, list[float]] = {}
    for name in names:
        for run in arms[name]:
            losses.setdefault(run.seed, []).append(_loss_at(run, examples))
    return [max(values) / min(values) for values in losses.values() if len(values) == len(names)]


def _loss_at(run: Run, examples: float) -> float:
    rows = run.metrics.dropna(subset=["train_loss"])
    if run.diverged and float(rows["examples"].max()) < examples:
        return math.inf
    return float(np.interp(examples, rows["examples"], rows["train_loss"]))


def cheap_factors(arms: Arms, costs: Costs) -> Claim:
    """C7 (Fig. 7): cheap App. A factors progress like KFC per update at 20–30% less time per update.

    saving = 1 − t_cheap / t_KFC from bench arms' medians; a verdict needs their ranges over timed blocks apart."""
    claim = "C7: cheap App. A factors as good as KFC per update and 20–30% cheaper per update"
    rule = ("saving = 1 − s/update cheap ÷ KFC (bench arms: medians, and the ranges over timed blocks apart); "
            "reproduced at ≥ 15% with cheap's seed-mean final val error at most 0.03 above KFC's; partly: apart but "
            "a smaller saving or a larger gap; not reproduced: cheap slower beyond the ranges; inconclusive: ranges "
            "overlap, < 3 seeds, or timings from a shared machine")
    if "kfc" not in arms or "cheap" not in arms:
        return Claim(7, claim, "missing runs", NO_DATA, rule)
    errors = {a: per_seed(arms[a], lambda r: final(r, "val_error")) for a in ("cheap", "kfc")}
    gap = errors["cheap"].mean - errors["kfc"].mean
    progress = (f"final val error cheap {errors['cheap'].text()}, KFC {errors['kfc'].text()} (cheap − KFC "
                f"{gap:+.3f}; {seeds_note(arms, ('cheap', 'kfc'))})")
    where = measured_cost(costs)("cheap")[1]
    cheap, kfc = (costs[a].get("update") if a in costs else None for a in ("cheap", "kfc"))
    if cheap is None or kfc is None:
        return Claim(7, claim, f"{progress}; {where}", NO_DATA, rule)
    saving = 1 - cheap.value / kfc.value
    if cheap.high < kfc.low:
        verdict = REPRODUCED if saving >= 0.15 and gap <= 0.03 else PARTLY
    else:
        verdict = NOT_REPRODUCED if cheap.low > kfc.high else INCONCLUSIVE
    measured = (f"cheap saves {100 * saving:.0f}% per update: {1e3 * cheap.value:.1f} [{1e3 * cheap.low:.1f}, "
                f"{1e3 * cheap.high:.1f}] ms vs KFC {1e3 * kfc.value:.1f} [{1e3 * kfc.low:.1f}, {1e3 * kfc.high:.1f}] "
                f"ms ({where}); {progress}")
    return _seeded(arms, Claim(7, claim, measured, INCONCLUSIVE if "shared" in where else verdict, rule))


def kl_decay(arms: Arms) -> Claim:
    """Fig. 8: decaying the KL threshold beats decaying the learning rate (final validation loss)."""
    claim = "C8: KL-threshold decay better than learning-rate decay"
    rule = ("final val loss per seed; reproduced: decayKL's seed range wholly below decayLR's; not reproduced: wholly "
            "above; inconclusive: ranges overlap, < 3 seeds, or decayLR's η_max never bound the step size")
    if "decay-kl" not in arms or "decay-lr" not in arms:
        return Claim(8, claim, "missing runs", NO_DATA, rule)
    kl, lr = (per_seed(arms[a], lambda r: final(r, "val_loss")) for a in ("decay-kl", "decay-lr"))
    measured = f"final val loss decayKL {kl.text(4)}, decayLR {lr.text(4)}"
    if not any(capped_share(r) > 0 for r in arms["decay-lr"]):
        return Claim(8, claim, measured + "; decayLR's η_max never bound the step size, so nothing was decayed",
                     INCONCLUSIVE, rule)
    verdict, _ = compare(kl, lr, 1.0)
    return Claim(8, claim, measured, REPRODUCED if verdict == PARTLY else verdict, rule)


def _seeded(arms: Arms, claim: Claim) -> Claim:
    """Inconclusive when any arm has fewer than MIN_SEEDS seeds (for rules that do not compare ranges)."""
    fewest = min(len(runs) for runs in arms.values())
    if fewest >= MIN_SEEDS or claim.verdict == NO_DATA:
        return claim
    return replace(claim, measured=claim.measured + f" ({fewest} seed(s): needs ≥ {MIN_SEEDS})", verdict=INCONCLUSIVE)


CLAIMS: dict[int, Callable[[Arms, Costs, Tuning], list[Claim]]] = {
    2: lambda arms, costs, tuning: [*async_claims(arms, costs), worker_scaling(arms, costs), speedup(
        2, "C3: K-FAC ≈2× faster in wall-clock than a tuned SGD+BN (§6.2's claim, here on the CIFAR-10 net, 1 worker)",
        arms, "sync-gpu1", "sgd-bn", 2.0, measured_cost(costs), tuning=tuning)],
    3: lambda arms, costs, tuning: [
        speedup(3, "C3: K-FAC ≈2× faster than improved SGD+BN (rbz 128)", arms, "kfac", "sgd-bn-rbz128", 2.0,
                measured_cost(costs), tuning=tuning),
        speedup(3, "C3: K-FAC ≈3.5× faster than standard SGD+BN (rbz 32)", arms, "kfac", "sgd-bn-rbz32", 3.5,
                measured_cost(costs), tuning=tuning),
        bn_generalisation(arms),
    ],
    4: lambda arms, costs, tuning: [stale_inverses(arms, costs, tuning)],
    5: lambda arms, costs, tuning: [early_speedup(arms, costs, tuning)],
    6: lambda arms, costs, tuning: [batch_scaling(arms)],
    7: lambda arms, costs, tuning: [cheap_factors(arms, costs)],
    8: lambda arms, costs, tuning: [kl_decay(arms)],
}

