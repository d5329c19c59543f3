"""Sittings of `bench arms`: a new one keeps the previous table, and every verdict that rests on costs is checked
with each earlier sitting of the same commit (no verdict when they disagree)."""

from pathlib import Path

import pytest
from test_plotting import IDLE, write_run

from kfac_repro.benchmarks.cost_table import FILE_NAME, Measurement, earlier_sittings, read_costs, write_costs
from kfac_repro.plotting import claims, report
from kfac_repro.plotting.results import seed_runs

SPEC = "googlenet-kfc-vs-cheap"  # Fig. 7: C7's verdict is the timing ranges' (cheap against KFC)


def sitting(path: Path, when: str, cheap: tuple, kfc: tuple, commit: str = "c") -> None:
    costs = [Measurement(arm, quantity, 100, *timing, "seconds", 3) for arm, timing in (("cheap", cheap), ("kfc", kfc))
             for quantity in ("update", "gradient_pass")]
    write_costs(path, SPEC, "cpu", costs, {**IDLE, "commit": commit, "time_utc": when})


def fig7_runs(results: Path) -> Path:
    for seed in range(3):
        write_run(results, SPEC, "kfc", f"k{seed}", [0.9, 0.5, 0.30 + 0.01 * seed], seed=seed)
        write_run(results, SPEC, "cheap", f"c{seed}", [0.9, 0.5, 0.31 + 0.01 * seed], seed=seed)
    return results / SPEC / "cpu" / FILE_NAME


APART, OVERLAPPING = ((0.70, 0.68, 0.72), (1.0, 0.95, 1.05)), ((0.95, 0.90, 1.00), (1.0, 0.97, 1.03))


def test_a_new_sitting_keeps_the_previous_table_as_an_earlier_sitting(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    sitting(path, "2026-12-03T16:30:17+00:00", *APART)
    sitting(path, "2026-12-06T21:48:47+00:00", *OVERLAPPING)
    (kept,) = earlier_sittings(path)
    assert kept.name == "bench-arms.20261203T1630170000.csv"
    assert read_costs(kept)["cheap"].get("update").value == 0.70
    assert read_costs(path)["cheap"].get("update").value == 0.95


@pytest.mark.parametrize(("older", "newer", "older_commit", "verdict", "note"), [
    (APART, APART, "c", claims.REPRODUCED, None),  # the same costs: nothing to add
    (((0.72, 0.70, 0.74), APART[1]), APART, "c", claims.REPRODUCED,
     "with the costs of the sitting of 2026-12-03: reproduced too"),
    (APART, OVERLAPPING, "c", claims.INCONCLUSIVE, "2026-12-03: reproduced: the sittings disagree"),
    (OVERLAPPING, APART, "c", claims.INCONCLUSIVE, "2026-12-03: inconclusive: the sittings disagree"),
    (OVERLAPPING, APART, "other", claims.REPRODUCED, None),  # another commit's timings are not a sitting of this one
])
def test_every_claim_row_is_checked_with_each_earlier_sitting_of_the_same_commit(
        tmp_path: Path, older: tuple, newer: tuple, older_commit: str, verdict: str, note: str | None) -> None:
    path = fig7_runs(tmp_path)
    sitting(path, "2026-12-03", *older, commit=older_commit)
    sitting(path, "2026-12-06", *newer)
    sittings = report.cost_sittings(tmp_path, SPEC, "cpu")
    (row,) = report.figure_claims(tmp_path, sittings, 7, "cpu", seed_runs(tmp_path, SPEC, "cpu"))
    assert row.verdict == verdict
    if note is None:
        assert "sitting of" not in row.measured and report.SITTINGS_RULE not in row.rule
    else:
        assert note in row.measured and report.SITTINGS_RULE in row.rule
    text = report.report_text(tmp_path)
    assert ("Earlier sitting of the same commit, 2026-12-03" in text) is (older_commit == "c")
    if older_commit == "c":
        assert f"cheap {older[0][0]:.4f} [{older[0][1]:.4f}, {older[0][2]:.4f}]" in text


def test_a_speed_up_whose_sittings_disagree_names_the_earlier_sittings_effect(tmp_path: Path) -> None:
    spec = "resnet50-bs512"  # Fig. 5: C5, a speed-up in time to a training loss
    for seed in range(3):
        write_run(tmp_path, spec, "kfac", f"k{seed}", [0.9, 0.5, 0.2 - 0.01 * seed, 0.1], seed=seed)
        write_run(tmp_path, spec, "sgd-bn-rbz64", f"s{seed}", [0.9, 0.7, 0.5, 0.3 - 0.01 * seed], seed=seed)
    path = tmp_path / spec / "cpu" / FILE_NAME
    for when, kfac_seconds in (("2026-12-03", 1.0), ("2026-12-06", 1.5)):
        costs = [Measurement(arm, quantity, 100, value, value, value, "seconds", 3)
                 for arm, value in (("kfac", kfac_seconds), ("sgd-bn-rbz64", 1.0))
                 for quantity in ("update", "gradient_pass")]
        write_costs(path, spec, "cpu", costs, {**IDLE, "commit": "c", "time_utc": when})
    (row,) = report.figure_claims(tmp_path, report.cost_sittings(tmp_path, spec, "cpu"), 5, "cpu",
                                  seed_runs(tmp_path, spec, "cpu"))
    assert row.effect == "1.00×" and row.verdict == claims.INCONCLUSIVE
    assert "with the costs of the sitting of 2026-12-03: reproduced (→ 1.50×): the sittings disagree" in row.measured
