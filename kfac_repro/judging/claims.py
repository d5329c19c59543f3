"""The paper's headline claims as data (TABLE), and the rules that judge them from the seeds of one figure's arms.

Progress and cost apart: per-update progress (updates to several targets, results/targets.py) comes from the runs,
one value per seed; the cost of an update from `kfac-repro bench arms`; time to target = updates × seconds per
update, on two clocks (judging/clocks.py): measured on this machine, and modelled for the paper's cluster layout.
Every verdict comes from results/paired.py: a paired interval over seeds against the claimed factor at every
target, the row giving the strongest verdict that holds at each (paired.combined) and each target's.

A claim comparing two methods (`methods`) gives no verdict unless both arms ran the best of equally large grids.
A claim whose per-update progress can at best tie (`bounded`: the same algorithm laid out differently) is limited
by its cost ratio: where that ceiling is below THRESHOLD × the claimed factor the row says it is not testable here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kfac_repro.judging.clocks import CLUSTER, MEASURED, Arms, Costs, Seconds, measured_cost, modelled_cost
from kfac_repro.results import paired
from kfac_repro.results.paired import INCONCLUSIVE, NO_DATA, NOT_REPRODUCED, PARTLY, REPRODUCED
from kfac_repro.results.runs import Run
from kfac_repro.results.seeds import capped_share, final
from kfac_repro.results.statistics_lag import INFERENCE_COLUMNS, LAG_FACTOR, statistics_lag
from kfac_repro.results.targets import targets, updates_to

NOT_TESTABLE = "not testable here"
SPEED, BN_GAP, BATCH_SCALING, CHEAP_FACTORS, FINAL = "speed", "bn-gap", "batch-scaling", "cheap-factors", "final"
PER_UPDATE_MARGIN = 1.1  # C7's "as good per update": cheap needs at most 10% more updates to each target


@dataclass(frozen=True)
class ClaimSpec:
    """One claim: its id, figure and text; the arm claimed better and its opponent (for batch scaling: the two
    methods' arm-name prefixes); the claimed factor (1.0: none stated); the metric; the clock its verdict is
    judged on; its rule; whether it compares two methods (tuning must be equal) and whether its per-update
    progress can at best tie (`bounded`)."""

    id: str
    figure: int
    text: str
    arms: tuple[str, str]
    factor: float = 1.0
    metric: str = "val_error"
    clock: str = MEASURED
    rule: str = SPEED
    methods: bool = False
    bounded: bool = False


TABLE: tuple[ClaimSpec, ...] = (
    ClaimSpec("C1", 2, "asynchronous inversion ≈1.5× faster than synchronous at comparable per-update progress "
              "(1 worker)", ("async-gpu1", "sync-gpu1"), 1.5, clock=CLUSTER, bounded=True),
    ClaimSpec("C1", 2, "asynchronous inversion ≈1.5× faster than synchronous at comparable per-update progress "
              "(4 workers)", ("async-gpu4", "sync-gpu4"), 1.5, clock=CLUSTER, bounded=True),
    ClaimSpec("C2", 2, "near-linear (≈4×) speed-up from 1 to 4 gradient workers (async inversion; modelled only)",
              ("async-gpu4", "async-gpu1"), 4.0, clock=CLUSTER, bounded=True),
    ClaimSpec("C3", 2, "K-FAC ≈2× faster in wall-clock than a tuned SGD+BN (§6.2's claim, on the CIFAR-10 net)",
              ("sync-gpu1", "sgd-bn"), 2.0, methods=True),
    ClaimSpec("C3", 3, "K-FAC ≈2× faster than improved SGD+BN (rbz 128)", ("kfac", "sgd-bn-rbz128"), 2.0,
              methods=True),
    ClaimSpec("C3", 3, "K-FAC ≈3.5× faster than standard SGD+BN (rbz 32)", ("kfac", "sgd-bn-rbz32"), 3.5,
              methods=True),
    ClaimSpec("C3", 3, "BN helps K-FAC generalise: a smaller validation − training gap at equal training loss",
              ("kfac-bn", "kfac"), rule=BN_GAP),
    ClaimSpec("C4", 4, "K-FAC with inverses refreshed every ~200 updates ≈1.5× faster than improved SGD+BN "
              "(rbz 256) on AlexNet", ("kfac", "sgd-bn-rbz256"), 1.5, methods=True),
    ClaimSpec("C5", 5, "K-FAC faster than SGD+BN (rbz 64) during the early stages on ResNet-50 (no factor stated)",
              ("kfac", "sgd-bn-rbz64"), metric="train_loss", methods=True),
    ClaimSpec("C6", 6, "per-example progress nearly constant across batch sizes for K-FAC, not for SGD+BN",
              ("kfac-bs", "sgd-bn-bs"), metric="train_loss", rule=BATCH_SCALING),
    ClaimSpec("C7", 7, "cheap App. A factors as good as KFC per update and 20–30% cheaper per update",
              ("cheap", "kfc"), 1.25, rule=CHEAP_FACTORS),
    ClaimSpec("C8", 8, "decaying the KL threshold beats decaying the learning rate (final validation loss)",
              ("decay-kl", "decay-lr"), metric="val_loss", rule=FINAL),
)


@dataclass(frozen=True)
class GridUse:
    """An arm's grid search (`kfac-repro grid`): the settings it tried, whether the arm's runs use its best, where
    their settings ranked in it when they do not (None: not among the grid's settings), and the axes on which the
    best setting is the grid's smallest or largest value (a better one may lie beyond)."""

    size: int
    applied: bool
    rank: int | None = None
    edges: tuple[str, ...] = ()

    @property
    def tuned(self) -> int:
        """The grid size the runs actually benefit from: 0 unless they run its best."""
        return self.size if self.applied else 0

    def text(self, arm: str) -> str:
        edge = f", its best at the edge of {', '.join(self.edges)}" if self.edges else ""
        if self.applied:
            return f"{arm}: best of a grid of {self.size}{edge}"
        where = f"rank {self.rank} of {self.size}" if self.rank else f"not among the {self.size}"
        return f"{arm}: the spec's settings ({where} in its grid{edge})"


Tuning = Mapping[str, GridUse]  # arm → its grid search, for the arms that have one
TUNING_RULE = "tuning: a verdict needs both arms to run the best of equally large grids"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, what the runs show, the verdict and the rule that gave it."""

    figure: int
    claim: str
    measured: str
    verdict: str
    rule: str = ""
    effect: str = ""  # the headline effect as `measured` prints it ('1.23× [1.05, 1.44]'), where the rule has one


def judge(spec: ClaimSpec, arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """The claim's row from its figure's runs, cost sitting and grids."""
    return _RULES[spec.rule](spec, arms, costs, tuning)


def figure_claims(figure: int, arms: Arms, costs: Costs, tuning: Tuning) -> list[Claim]:
    """Every claim of TABLE on `figure`, judged."""
    return [judge(spec, arms, costs, tuning) for spec in TABLE if spec.figure == figure]


def title(spec: ClaimSpec) -> str:
    return f"{spec.id}: {spec.text}"


def _missing(spec: ClaimSpec, arms: Arms, rule: str) -> Claim | None:
    absent = [arm for arm in spec.arms if arm not in arms]
    return Claim(spec.figure, title(spec), f"no complete run of {', '.join(absent)}", NO_DATA, rule) if absent else None


def _paired_updates(runs: Mapping[str, Sequence[Run]], column: str, level: float) -> tuple[dict[str, dict], set]:
    """arm → {seed: updates to `level`}, and the arms with a censored seed."""
    updates: dict[str, dict] = {}
    censored = set()
    for arm, arm_runs in runs.items():
        updates[arm] = {}
        for run in arm_runs:
            value, cut = updates_to(run, column, level)
            updates[arm][run.seed] = value
            if cut:
                censored.add(arm)
    return updates, censored


def _clock_rows(spec: ClaimSpec, arms: Arms, costs: Costs) -> dict[str, Seconds]:
    pooled = spec.arms if spec.bounded and spec.id == "C1" else ()
    return {MEASURED: measured_cost(costs), CLUSTER: modelled_cost(arms, costs, pooled)}


def _speed(spec: ClaimSpec, arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """Time to each target: updates (per seed) × seconds per update, paired by seed, on both clocks."""
    rule = (f"time to each target (updates × s/update), {spec.metric} targets 80/90/95/100% of the way from the "
            f"first value to the worst best over seeds; judged on the {spec.clock} clock; {paired.RULE}")
    if spec.methods:
        rule += f"; {TUNING_RULE}"
    rule += "; a target every run reached at its first evaluation gives no verdict (its updates are not resolved)"
    if spec.metric in INFERENCE_COLUMNS:
        rule += (f"; nor does one some BN run reached while its moving statistics lagged (inference-mode training loss "
                 f"above {LAG_FACTOR:g}× the training-mode one)")
    absent = _missing(spec, arms, rule)
    if absent:
        return absent
    better, other = spec.arms
    runs = {better: arms[better], other: arms[other]}
    levels = targets([*runs[better], *runs[other]], spec.metric)
    steps = [_paired_updates(runs, spec.metric, level) for level in levels]
    withheld = _withheld(runs, spec.metric, [updates for updates, _ in steps])
    progress = "; ".join(
        f"{spec.metric} ≤ {level:.3f}: updates {other} {_seed_values(u[other])}, {better} {_seed_values(u[better])}"
        + (f" (no verdict at this target: {lag})" if lag else "")
        for level, (u, _), lag in zip(levels, steps, withheld, strict=True))
    progress_effects = [paired.paired_log_ratios(u[other], u[better]) for u, _ in steps]  # per target, by seed
    progress += "; updates ratio per target (progress alone, cost apart) " + ", ".join(
        paired.interval(effects).ratio_text() for effects in progress_effects)
    per_clock, verdicts, effect = [], {}, ""
    for name, clock in _clock_rows(spec, arms, costs).items():
        (slow, slow_note), (fast, fast_note) = clock(other), clock(better)
        if slow is None or fast is None:
            per_clock.append(f"{name} clock: {slow_note if slow is None else fast_note}")
            verdicts[name] = NO_DATA
            continue
        found = []
        for (_, censored), effects in zip(steps, progress_effects, strict=True):
            interval = paired.interval([effect + math.log(slow / fast) for effect in effects])
            found.append((interval, paired.verdict(interval, spec.factor, better in censored, other in censored)))
        ratios = ", ".join(f"{interval.ratio_text()} {'no verdict' if lag else verdict}"
                           for (interval, verdict), lag in zip(found, withheld, strict=True))
        judged = [verdict for (_, verdict), lag in zip(found, withheld, strict=True) if not lag]
        verdicts[name] = paired.combined(judged) if judged else INCONCLUSIVE
        text = (f"{name} clock ({fast_note}): s/update {other} {slow:.4f}, {better} {fast:.4f}; time ratio per "
                f"target {ratios}")
        if spec.bounded and slow / fast < max(paired.THRESHOLD * spec.factor, 1.0):
            text += f"; the cost ratio caps the effect at {slow / fast:.3f}×"
            if name == spec.clock:
                verdicts[name] = NOT_TESTABLE
        if name == spec.clock and found:
            effect = found[-1][0].ratio_text()
        if "shared machine" in fast_note and verdicts[name] != NO_DATA:
            verdicts[name] = INCONCLUSIVE
        per_clock.append(text)
    verdict = verdicts[spec.clock]
    measured = f"{progress}; {'; '.join(per_clock)} ({_seeds_note(runs)})"
    measured, verdict = _checked(spec, runs, tuning, measured, verdict)
    return Claim(spec.figure, title(spec), measured, verdict, rule, effect)


def _withheld(runs: Mapping[str, Sequence[Run]], column: str,
              per_target: Sequence[Mapping[str, Mapping[int, float]]]) -> list[str]:
    """Per target (each arm's updates to it by seed), why it gives no verdict, '' where it does: some BN run reached
    a level of an inference-mode `column` while its moving statistics still lagged (results.statistics_lag), or every
    run reached it at its first evaluation after step 0, so that its updates are only known to be at most that step
    and its time ratio is the cost ratio alone. Each run's lag and first evaluation are read once."""
    keyed = {(arm, run.seed): run for arm, arm_runs in runs.items() for run in arm_runs}
    lags = {key: statistics_lag(run) if column in INFERENCE_COLUMNS else 0 for key, run in keyed.items()}
    firsts = {key: _first_evaluation(run, column) for key, run in keyed.items()}
    reasons = []
    for updates in per_target:
        reached = {(arm, seed): updates[arm][seed] for arm, seed in keyed}
        lagging = [f"{arm} seed {seed} at update {at:g}, its BN statistics lagging until {lags[arm, seed]}"
                   for (arm, seed), at in reached.items() if lags[arm, seed] and at <= lags[arm, seed]]
        if lagging:
            reasons.append("read off a lagging curve: " + ", ".join(lagging))
        elif all(at == firsts[key] for key, at in reached.items()):
            reasons.append("every run reached it at its first evaluation, so the updates to it are not resolved")
        else:
            reasons.append("")
    return reasons


def _first_evaluation(run: Run, column: str) -> float:
    """The first step after 0 at which `column` was logged (NaN if none)."""
    logged = run.metrics.dropna(subset=[column])["step"]
    return float(logged[logged > 0].min()) if (logged > 0).any() else math.nan


def _checked(spec: ClaimSpec, runs: Arms, tuning: Tuning, measured: str, verdict: str) -> tuple[str, str]:
    """Every arm's validation size and grid added to the row; the verdict withdrawn where the arms were validated
    differently or (for a methods claim) tuned unequally."""
    validation = {a: sorted({validation_examples(r) for r in rs}) for a, rs in runs.items()}
    measured += "; validation " + ", ".join(f"{a} {'/'.join(map(str, v))} images" for a, v in validation.items())
    if len({tuple(v) for v in validation.values()}) > 1 and verdict != NO_DATA:
        measured, verdict = measured + " (validated differently: no verdict)", INCONCLUSIVE
    uses = {a: tuning.get(a) for a in runs}
    measured += "; " + ", ".join(use.text(a) if use else f"{a}: no grid" for a, use in uses.items())
    sizes = {use.tuned if use else 0 for use in uses.values()}
    if spec.methods and (len(sizes) > 1 or 0 in sizes) and verdict not in (NO_DATA, NOT_TESTABLE):
        measured, verdict = measured + " (not tuned equally: no verdict)", INCONCLUSIVE
    return measured, verdict


def validation_examples(run: Run) -> int:
    """Images per validation pass: as the run recorded it, else eval_batches × batch within the holdout."""
    recorded = run.record.get("val_examples")
    if recorded:
        return int(recorded)
    holdout = int(run.record.get("holdout") or 0)
    batches = run.setting("training", "eval_batches")
    if not batches:
        return holdout
    read = int(batches) * int(run.setting("training", "batch_size") or 0)
    return min(read, holdout) if holdout else read


def _log_ratio(numerator: float, denominator: float) -> float:
    """log(numerator / denominator), NaN unless both are finite and positive (a diverged run's +∞, a missing seed)."""
    if not (math.isfinite(numerator) and math.isfinite(denominator) and numerator > 0 and denominator > 0):
        return math.nan
    return math.log(numerator / denominator)


def _seed_values(values: Mapping[int, float]) -> str:
    return "/".join(f"{values[s]:.0f}" for s in sorted(values))


def _seeds_note(runs: Arms) -> str:
    """'label: 5 seeds (0-4)' per arm, with how many diverged."""
    parts = []
    for runs_of_arm in runs.values():
        diverged = [f"seed {r.seed} diverged at step {r.last_step}" for r in runs_of_arm if r.diverged]
        parts.append(f"{runs_of_arm[0].label}: {len(runs_of_arm)} seeds" + (f" ({', '.join(diverged)})"
                                                                             if diverged else ""))
    return ", ".join(parts)


def _per_seed_effect(spec: ClaimSpec, runs: Arms, tuning: Tuning, effect: Callable[[int], float], rule: str,
                     what: str, as_ratio: bool) -> Claim:
    """A claim judged on one paired effect per seed (> 0 favours the claim)."""
    seeds = sorted(set.intersection(*({r.seed for r in rs} for rs in runs.values())))
    values = [effect(seed) for seed in seeds]
    finite = [v for v in values if math.isfinite(v)]
    interval = paired.interval(finite)
    verdict = paired.verdict(interval, spec.factor)
    if len(finite) < len(values) and verdict != NO_DATA:
        verdict = INCONCLUSIVE
    shown = interval.ratio_text() if as_ratio else interval.difference_text()
    measured = f"{what}: {shown} ({_seeds_note(runs)})"
    if len(finite) < len(values):
        measured += f"; {len(values) - len(finite)} seed(s) without a finite value: no verdict"
    measured, verdict = _checked(spec, runs, tuning, measured, verdict)
    return Claim(spec.figure, title(spec), measured, verdict, rule, shown)


def _bn_gap(spec: ClaimSpec, arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """C3 (BN): gap = val_loss − train_eval_loss (both in inference mode) at the first evaluation whose training
    loss is at or below the level every run reaches; effect = gap(K-FAC) − gap(K-FAC+BN), paired by seed."""
    rule = ("gap = validation loss − training-subset loss, both evaluated in inference mode, at the first evaluation "
            f"where the training-subset loss reaches the level every run reaches; {paired.RULE} (on the difference)")
    absent = _missing(spec, arms, rule)
    if absent:
        return absent
    runs = {arm: arms[arm] for arm in spec.arms}
    column = "train_eval_loss"
    if any(column not in r.metrics for rs in runs.values() for r in rs):
        return Claim(spec.figure, title(spec), "the runs log no inference-mode training loss (train_eval_loss)",
                     NO_DATA, rule)
    level = max(float(r.metrics[column].min()) for rs in runs.values() for r in rs)

    def gap(run: Run) -> float:
        logged = run.metrics.dropna(subset=["val_loss", column])
        reached = logged[logged[column] <= level + 1e-12]
        return float(reached["val_loss"].iloc[0] - reached[column].iloc[0]) if len(reached) else math.nan

    gaps = {arm: {r.seed: gap(r) for r in rs} for arm, rs in runs.items()}
    better, other = spec.arms
    return _per_seed_effect(spec, runs, tuning, lambda s: gaps[other][s] - gaps[better][s], rule,
                            f"at training loss {level:.3f}, gap {other} − gap {better}", as_ratio=False)


def _batch_scaling(spec: ClaimSpec, arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """C6: per seed r = max/min over batch sizes of the training loss at the largest example count every run
    reached; effect = log(r_SGD+BN / r_K-FAC), paired by seed."""
    rule = ("per seed: training loss max/min over batch sizes at the largest example count all runs reached; effect "
            f"log(SGD+BN's ratio / K-FAC's); {paired.RULE}")
    groups = {prefix: [a for a in arms if a.startswith(prefix)] for prefix in spec.arms}
    for prefix, names in groups.items():
        if len(names) < 2:
            return Claim(spec.figure, title(spec), f"fewer than two {prefix}* batch sizes", NO_DATA, rule)
    runs = [r for names in groups.values() for a in names for r in arms[a]]
    examples = min(float(r.metrics["examples"].max()) for r in ([r for r in runs if not r.diverged] or runs))
    ratios = {prefix: _ratios_by_seed(arms, names, examples) for prefix, names in groups.items()}
    better, other = spec.arms
    shown = {prefix: "/".join(f"{ratios[prefix][s]:.2f}" for s in sorted(ratios[prefix])) for prefix in ratios}
    return _per_seed_effect(spec, {a: arms[a] for names in groups.values() for a in names}, tuning,
                            lambda s: _log_ratio(ratios[other].get(s, math.nan), ratios[better].get(s, math.nan)),
                            rule, f"loss ratio across batch sizes at {examples:,.0f} examples, {better}* "
                            f"{shown[better]}, {other}* {shown[other]}; SGD+BN's ÷ K-FAC's", as_ratio=True)


def _ratios_by_seed(arms: Arms, names: Sequence[str], examples: float) -> dict[int, float]:
    """seed → max/min over the named arms of the training loss at `examples` (+∞ for a seed whose run at some
    batch size diverged before it got there), for the seeds every arm ran."""
    losses: dict[int, list[float]] = {}
    for name in names:
        for run in arms[name]:
            losses.setdefault(run.seed, []).append(_loss_at(run, examples))
    return {seed: max(v) / min(v) for seed, v in losses.items() if len(v) == len(names)}


def _loss_at(run: Run, examples: float) -> float:
    rows = run.metrics.dropna(subset=["train_loss"])
    if run.diverged and float(rows["examples"].max()) < examples:
        return math.inf
    return float(np.interp(examples, rows["examples"], rows["train_loss"]))


def _cheap_factors(spec: ClaimSpec, arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """C7, both halves by the paired rule: per update, log(updates_KFC / updates_cheap) at every target must lie
    above log(1 / PER_UPDATE_MARGIN) (as good per update); and cheap's time to every target must be the claimed
    factor faster (20% cheaper = 1.25×) on the measured clock."""
    speed = _speed(spec, arms, costs, tuning)
    if speed.verdict == NO_DATA:
        return speed
    better, other = spec.arms
    runs = {better: arms[better], other: arms[other]}
    found = []
    for level in targets([*runs[better], *runs[other]], spec.metric):
        updates, censored = _paired_updates(runs, spec.metric, level)
        seeds = sorted(set(updates[better]) & set(updates[other]))
        interval = paired.interval([math.log(updates[other][s] / updates[better][s]) for s in seeds])
        margin = -math.log(PER_UPDATE_MARGIN)
        verdict = (INCONCLUSIVE if interval.n < paired.MIN_SEEDS or math.isnan(interval.low) else
                   REPRODUCED if interval.low > margin and better not in censored else
                   NOT_REPRODUCED if interval.high < margin and other not in censored else INCONCLUSIVE)
        found.append((interval, verdict))
    per_update = paired.combined([verdict for _, verdict in found])
    halves = (per_update, speed.verdict)
    verdict = (NOT_REPRODUCED if NOT_REPRODUCED in halves else REPRODUCED if halves == (REPRODUCED, REPRODUCED)
               else PARTLY if per_update == REPRODUCED and speed.verdict == PARTLY else INCONCLUSIVE)
    text = ", ".join(f"{interval.ratio_text()} {v}" for interval, v in found)
    rule = (f"per update: updates KFC ÷ cheap at each target, interval above 1/{PER_UPDATE_MARGIN} (cheap at most "
            f"{PER_UPDATE_MARGIN - 1:.0%} slower per update); and time to target as for speed-ups: {speed.rule}")
    return Claim(spec.figure, title(spec), f"per update (KFC ÷ cheap updates): {text} → {per_update}; time to "
                 f"target: {speed.measured} → {speed.verdict}", verdict, rule, speed.effect)


def _final(spec: ClaimSpec, arms: Arms, costs: Costs, tuning: Tuning) -> Claim:
    """C8: effect = log(final val loss of decayLR / of decayKL), paired by seed; no verdict where decayLR's cap
    η_max never bound the step size (then nothing was decayed)."""
    rule = f"final {spec.metric} per seed, effect log({spec.arms[1]} ÷ {spec.arms[0]}); {paired.RULE}"
    absent = _missing(spec, arms, rule)
    if absent:
        return absent
    runs = {arm: arms[arm] for arm in spec.arms}
    finals = {arm: {r.seed: final(r, spec.metric) for r in rs} for arm, rs in runs.items()}
    better, other = spec.arms
    claim = _per_seed_effect(spec, runs, tuning, lambda s: _log_ratio(finals[other][s], finals[better][s]), rule,
                             f"final {spec.metric} {other} ÷ {better}", as_ratio=True)
    if not any(capped_share(r) > 0 for r in runs[other]):
        return Claim(claim.figure, claim.claim, claim.measured + f"; {other}'s η_max never bound the step size, so "
                     "nothing was decayed", INCONCLUSIVE, rule, claim.effect)
    return claim


_RULES: dict[str, Callable[[ClaimSpec, Arms, Costs, Tuning], Claim]] = {
    SPEED: _speed, BN_GAP: _bn_gap, BATCH_SCALING: _batch_scaling, CHEAP_FACTORS: _cheap_factors, FINAL: _final,
}
