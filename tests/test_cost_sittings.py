"""Sittings of `bench arms`: a new one keeps the previous table, and every verdict that rests on costs is checked
with each earlier sitting of the same commit and CPU (no verdict when they disagree)."""

from pathlib import Path

import pytest
from test_judging_claims import curve
from test_plotting import IDLE, write_run

from kfac_repro.benchmarks.arm_costs.table import FILE_NAME, Measurement, earlier_sittings, read_costs, write_costs
from kfac_repro.plotting import report
from kfac_repro.results import paired
from kfac_repro.results.runs import seed_runs

SPEC = "googlenet-kfc-vs-cheap"  # Fig. 7: C7's time half rests on the costs (cheap against KFC)


def sitting(path: Path, when: str, cheap: tuple, kfc: tuple, commit: str = "c") -> None:
    """Updates timed as given; both arms' gradient pass (the same computation) 0.5 s."""
    costs = [Measurement(arm, "update", 100, *timing, "seconds", 3) for arm, timing in (("cheap", cheap), ("kfc", kfc))]
    costs += [Measurement(arm, "gradient_pass", 100, 0.5, 0.5, 0.5, "seconds", 3) for arm in ("cheap", "kfc")]
    write_costs(path, SPEC, "cpu", costs, {**IDLE, "commit": commit, "time_utc": when})


def fig7_runs(results: Path) -> Path:
    for seed in range(5):  # the same progress per update
        write_run(results, SPEC, "kfc", f"k{seed}", curve(0.5, seed), seed=seed)
        write_run(results, SPEC, "cheap", f"c{seed}", curve(0.5, seed), seed=seed)
    return results / SPEC / "cpu" / FILE_NAME


CHEAPER, DEARER = ((0.70, 0.68, 0.72), (1.0, 0.95, 1.05)), ((1.30, 1.25, 1.35), (1.0, 0.97, 1.03))


def test_a_new_sitting_keeps_the_previous_table_as_an_earlier_sitting(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    sitting(path, "2026-12-03T16:30:17+00:00", *CHEAPER)
    sitting(path, "2026-12-06T21:48:47+00:00", *DEARER)
    (kept,) = earlier_sittings(path)
    assert kept.name == "bench-arms.20261203T1630170000.csv"
    assert read_costs(kept)["cheap"].get("update").value == 0.70
    assert read_costs(path)["cheap"].get("update").value == 1.30


@pytest.mark.parametrize(("older", "newer", "older_commit", "verdict", "note"), [
    (CHEAPER, CHEAPER, "c", paired.REPRODUCED, None),  # the same costs: nothing to add
    (((0.72, 0.70, 0.74), CHEAPER[1]), CHEAPER, "c", paired.REPRODUCED,
     "with the costs of the sitting of 2026-12-03: reproduced too"),
    (CHEAPER, DEARER, "c", paired.INCONCLUSIVE, "2026-12-03: reproduced (→ 1.43× [1.43, 1.43]): the sittings "
                                                "disagree"),
    (DEARER, CHEAPER, "c", paired.INCONCLUSIVE, "2026-12-03: not reproduced (→ 0.77× [0.77, 0.77]): the sittings "
                                                "disagree"),
    (DEARER, CHEAPER, "other", paired.REPRODUCED, None),  # another commit's timings are not a sitting of this one
])
def test_every_claim_row_is_checked_with_each_earlier_sitting_of_the_same_commit(
        tmp_path: Path, older: tuple, newer: tuple, older_commit: str, verdict: str, note: str | None) -> None:
    path = fig7_runs(tmp_path)
    sitting(path, "2026-12-03", *older, commit=older_commit)
    sitting(path, "2026-12-06", *newer)
    arms = seed_runs(tmp_path, SPEC, "cpu")
    sittings = report.cost_sittings(tmp_path, SPEC, "cpu", arms)
    (row,) = report.figure_claims(tmp_path, sittings, 7, "cpu", arms)
    assert row.verdict == verdict, row.measured
    if note is None:
        assert "with the costs of the sitting of" not in row.measured and report.SITTINGS_RULE not in row.rule
    else:
        assert note in row.measured and report.SITTINGS_RULE in row.rule
    text = report.report_text(tmp_path)
    assert ("Earlier sitting of the same commit, 2026-12-03" in text) is (older_commit == "c")
    if older_commit == "c":
        assert f"cheap {older[0][0]:.4f} [{older[0][1]:.4f}, {older[0][2]:.4f}]" in text
