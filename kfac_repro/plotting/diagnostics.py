"""Diagnostic runs: an arm of a figure rerun with some settings changed, to test why the figure comes out as it does.

They are made with `kfac-repro run SPEC --arm ARM --set KEY=VALUE ... --run-id VARIANT --seeds S1,S2,...
--out results/diagnostics` (`layout.DIAGNOSTICS`, the usual layout below it). The report lists each variant under
the figure's own runs of that arm: the settings that differ (from the runs' resolved.yaml), and for every row the
updates each seed needed to the validation error that every seed of the figure's own runs of that arm reached.
Then the figure's claims are recomputed with each variant's runs in place of its arms' runs (every arm the variant
varies at once), by the same rules, each arm keeping its own cost per update: the rows the variant changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kfac_repro.judging.claims import Claim
from kfac_repro.judging.clocks import Arms
from kfac_repro.plotting.figures import FIGURES
from kfac_repro.results.runs import Run, flatten, variant_runs
from kfac_repro.results.seeds import best, final, late_progress, per_seed, seeds_text, updates_to_target
from kfac_repro.runner.layout import DIAGNOSTICS

UNCOMPARED = ("label", "training.seed")  # settings every seed or variant may differ in without changing the method

Row = tuple[str, str, Sequence[Run]]  # arm, variant ('' for the figure's own runs), its runs over seeds
ClaimsOf = Callable[[int, str, Arms], Sequence[Claim]]  # (figure, profile, arm → runs) → the figure's claim rows


def changes(run: Run, reference: Run) -> str:
    """The resolved settings in which `run` differs from `reference`, as 'key old → new' ('(none)' if none)."""
    ours, theirs = flatten(run.resolved), flatten(reference.resolved)
    keys = sorted(k for k in set(ours) | set(theirs) if k not in UNCOMPARED and ours.get(k) != theirs.get(k))
    return "; ".join(f"{k} {theirs.get(k, '(absent)')} → {ours.get(k, '(absent)')}" for k in keys) or "(none)"


def diagnostics_section(results: Path, figures: Mapping[int, tuple[str, Arms]], claims_of: ClaimsOf) -> list[str]:
    """Markdown: per figure with diagnostic runs under results/diagnostics (same profile), a table of the figure's
    runs of each varied arm followed by its variants, then the claims each variant changes (`claims_of`)."""
    root = results / DIAGNOSTICS
    lines: list[str] = []
    for number, (profile, arms) in figures.items():
        spec = FIGURES[number].spec
        variants = variant_runs(root, spec, profile)
        varied: list[Row] = []
        for arm in dict.fromkeys(arm for arm, _ in variants):
            varied += ([(arm, "", arms[arm])] if arm in arms else []) + [
                (arm, variant, runs) for (name, variant), runs in variants.items() if name == arm]
        if varied:
            others = [(arm, "", runs) for arm, runs in arms.items() if arm not in {row[0] for row in varied}]
            lines += _table(number, spec, profile, varied, others, arms)
            lines += _variant_claims(number, profile, arms, variants, claims_of)
    if not lines:
        return []
    return ["", "## Diagnostic runs", "",
            f"Arms rerun with settings changed (`kfac-repro run SPEC --arm ARM --set ... --run-id VARIANT --seeds ... "
            f"--out results/{DIAGNOSTICS}`), to test explanations of the verdicts above: each variant under the "
            "figure's own runs of its arm, then the figure's other arms to compare. They are part of no verdict.", "",
            *lines]


def _table(number: int, spec: str, profile: str, varied: Sequence[Row], others: Sequence[Row], arms: Arms) -> list[str]:
    """The varied arms' rows, then the figure's other arms for comparison; the target is the worst best val_error
    over every seed of the figure's own runs of the varied arms (of all varied rows if the figure has none), so
    that a variant is measured against what the figure's arm reached."""
    reference = [runs for _, variant, runs in varied if not variant] or [runs for _, _, runs in varied]
    target = max(best(run, "val_error") for runs in reference for run in runs)
    lines = [f"**Fig. {number}** (`{spec}`, profile {profile}): updates to val_error ≤ {target:.4f}, the worst best "
             "val_error over every seed of the figure's own runs of the varied arm (inf: a seed never reached it).",
             "",
             "| arm | variant | change from the figure's arm | seeds | updates to target | best val error | "
             "final train loss | final val loss | late progress | commit |", "|---" * 10 + "|"]
    for index, (arm, variant, runs) in enumerate([*varied, *others]):
        if not variant:
            change = "— (the figure's runs)" if index < len(varied) else "— (the figure's runs, to compare)"
        else:
            change = changes(runs[0], arms[arm][0]) if arm in arms else "— (the figure has no runs of this arm)"
            if any(changes(run, runs[0]) != "(none)" for run in runs[1:]):
                change += " (**its seeds differ in other settings**)"
        lines.append(
            f"| {arm} | {variant or '—'} | {change} | {', '.join(str(r.seed) for r in runs)} | "
            f"{seeds_text(runs, [updates_to_target(r, 'val_error', target) for r in runs])} | "
            f"{per_seed(runs, lambda r: best(r, 'val_error')).text(4)} | "
            f"{per_seed(runs, lambda r: final(r, 'train_loss')).text(4)} | "
            f"{per_seed(runs, lambda r: final(r, 'val_loss')).text(4)} | {late_progress(runs)} | "
            f"{', '.join(sorted({r.commit[:10] for r in runs}))} |")
    return [*lines, ""]


def _variant_claims(number: int, profile: str, arms: Arms, variants: Mapping[tuple[str, str], Sequence[Run]],
                    claims_of: ClaimsOf) -> list[str]:
    """Markdown: the figure's claims recomputed with each variant's runs in place of the runs of the arms it varies,
    the rows whose measurement differs from the figure's own."""
    own = {claim.claim: claim.measured for claim in claims_of(number, profile, arms)}
    replacements: dict[str, dict[str, Sequence[Run]]] = {}
    for (arm, variant), runs in variants.items():
        if arm in arms:
            replacements.setdefault(variant, {})[arm] = runs
    rows = [f"| {variant} (in place of {', '.join(replaced)}) | {claim.claim} | {claim.measured} | {claim.verdict} |"
            for variant, replaced in replacements.items()
            for claim in claims_of(number, profile, {**arms, **replaced}) if own.get(claim.claim) != claim.measured]
    if not rows:
        return []
    return [f"Fig. {number}'s claims with a variant's runs in place of its arms' runs: what the same rule gives (not a "
            "verdict of this reproduction; each arm keeps its own cost per update from `bench arms`).", "",
            "| variant | claim | measured | the rule gives |", "|---|---|---|---|", *rows, ""]
