"""Figures and report from small synthetic result trees: seed selection and aggregation, axes and labels, files
written, claims and verdict rules whose answer is known, commits, and no TensorFlow import."""

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

import cli
from kfac_repro.benchmarks.arm_costs.table import FILE_NAME, Measurement, read_costs, write_costs
from kfac_repro.judging import claims
from kfac_repro.plotting import report
from kfac_repro.plotting.clock import figure_clock
from kfac_repro.plotting.figures import FIGURES, arm_label, draw
from kfac_repro.results import paired
from kfac_repro.results.runs import SkippedRunWarning, newest_complete_runs, seed_runs
from kfac_repro.results.seeds import Spread, band, capped_share, late_share, spread, updates_to_target
from kfac_repro.runner.metrics_log import COLUMNS, MetricsLog

IDLE = {"host": "h", "device": "CPU (test)", "cpus": 2, "load_before": 0.1, "load_after": 0.2, "commit": "c"}


def write_run(results: Path, spec: str, arm: str, run_id: str, errors: list[float], seed: int = 0,
              status: str = "complete", batch: int = 100, commit: str = "abc", method: str = "kfac",
              resolved: dict | None = None, profile: str = "cpu") -> Path:
    """A run logging every 10 updates: train error/loss, validation every 10 (error e, loss 3e) from step 0."""
    run_dir = results / spec / profile / arm / run_id
    run_dir.mkdir(parents=True)
    log = MetricsLog(run_dir / "metrics.csv")
    for i, error in enumerate(errors):
        step = 10 * i
        log.append({"step": step, "examples": step * batch, "seconds": 2.0 * step,
                    "train_loss": 2 * error if step else None, "train_error": error if step else None,
                    "val_loss": 3 * error, "val_error": error, "inverse_staleness": float(i % 3)})
    log.close()
    (run_dir / "run.json").write_text(json.dumps({
        "status": status, "label": f"{arm} label", "data": "fashion_mnist", "method": method, "seed": seed,
        "steps": 10 * (len(errors) - 1), "holdout": 5000, "test_error": errors[-1] + 0.01}))
    (run_dir / "environment.json").write_text(json.dumps({"device": "CPU (test)", "git_commit": commit,
                                                          "time_utc": run_id}))
    settings = resolved or {"training": {"batch_size": batch, "seed": seed}, "distribution": {"workers": 1},
                            "model": {}, "optimizer": {"inversion": "sync", "inverse_every": 20}}
    (run_dir / "resolved.yaml").write_text(yaml.safe_dump(settings))
    return run_dir


def test_newest_complete_run_of_every_seed_and_grid_runs_are_not_arms(tmp_path: Path) -> None:
    write_run(tmp_path, "cifar10-async", "sync-gpu1", "2026-01-01-seed0", [0.5, 0.4], seed=0)
    new = write_run(tmp_path, "cifar10-async", "sync-gpu1", "2026-01-02-seed0", [0.5, 0.3], seed=0)
    write_run(tmp_path, "cifar10-async", "sync-gpu1", "2026-01-03-seed0", [0.5], seed=0, status="failed")
    one = write_run(tmp_path, "cifar10-async", "sync-gpu1", "2026-01-01-seed1", [0.5, 0.2], seed=1)
    write_run(tmp_path, "cifar10-async", "grid-sgd-bn", "lr=0.1", [0.5, 0.4])
    with pytest.warns(SkippedRunWarning, match="2026-01-03-seed0: incomplete \\(status failed\\)"):
        arms = seed_runs(tmp_path, "cifar10-async", "cpu")
    assert list(arms) == ["sync-gpu1"]
    assert [(r.seed, r.directory) for r in arms["sync-gpu1"]] == [(0, new), (1, one)]


def test_seed_aggregation_mean_band_and_spread(tmp_path: Path) -> None:
    for seed, errors in enumerate(([0.9, 0.5, 0.3], [0.9, 0.7, 0.1], [0.9, 0.6, 0.2, 0.1])):
        write_run(tmp_path, "s", "a", f"r{seed}", errors, seed=seed)
    runs = seed_runs(tmp_path, "s", "cpu")["a"]
    curve = band(runs, "step", "val_error")
    assert list(curve["x"]) == [0, 10, 20]  # step 30 only in one seed: not a mean over seeds
    assert list(curve["mean"]) == pytest.approx([0.9, 0.6, 0.2])
    assert list(curve["low"]) == pytest.approx([0.9, 0.5, 0.1]) and list(curve["high"]) == pytest.approx(
        [0.9, 0.7, 0.3])
    assert spread([1.0, 2.0, 6.0]) == Spread(3.0, 1.0, 6.0, 3)
    assert spread([1.0, math.nan]).high == math.inf  # a seed that never reached the target
    assert spread([1.0, 2.0, 6.0]).text(1) == "3.0 [1.0, 6.0]"


def test_updates_to_target_is_the_first_logged_step_at_or_below_it(tmp_path: Path) -> None:
    run = write_run(tmp_path, "s", "fast", "r", [0.9, 0.5, 0.3, 0.2])
    assert updates_to_target(seed_runs(tmp_path, "s", "cpu")["fast"][0], "val_error", 0.3) == 20.0
    assert math.isnan(updates_to_target(seed_runs(tmp_path, "s", "cpu")["fast"][0], "val_error", 0.1))
    assert run.exists()


@pytest.mark.parametrize(("before", "after", "shared"), [
    (0.1, 0.2, False), (0.3, 2.4, False),  # the benchmark alone keeps the 2 cores busy: load up to 2 after
    (0.7, 1.0, True), (0.1, 2.6, True),    # other work before it, or more than the 2 cores' worth after
])
def test_a_machine_is_shared_when_its_load_exceeds_what_the_benchmark_itself_adds(tmp_path: Path, before: float,
                                                                                   after: float, shared: bool) -> None:
    path = tmp_path / FILE_NAME
    write_costs(path, "s", "cpu", [Measurement("a", "update", 8, 0.1, 0.1, 0.1, "seconds", 3)],
                {**IDLE, "load_before": before, "load_after": after})
    assert read_costs(path)["a"].shared is shared


def test_grid_use_says_whether_an_arms_runs_ran_its_grids_best(tmp_path: Path) -> None:
    def settings(rate: float, seed: int) -> dict:
        return {"training": {"batch_size": 100, "seed": seed}, "optimizer": {"learning_rate": rate}}

    for seed in range(2):
        write_run(tmp_path, "s", "tuned", f"r-seed{seed}", [0.9, 0.5], seed=seed, resolved=settings(0.01, seed))
        write_run(tmp_path, "s", "spec", f"r-seed{seed}", [0.9, 0.5], seed=seed, resolved=settings(0.3, seed))
    profile = tmp_path / "s" / "cpu"
    for arm in ("tuned", "spec"):
        grid = profile / f"grid-{arm}"
        grid.mkdir()
        (grid / "leaderboard.csv").write_text("rank,best,optimizer.learning_rate,status\n1,True,0.01,complete\n"
                                              "2,False,0.1,complete\n3,False,0.3,complete\n")
        (grid / "best.json").write_text(json.dumps({"params": {"optimizer.learning_rate": 0.01}}))
    uses = report.grid_use(profile, seed_runs(tmp_path, "s", "cpu"))
    edge = ("learning_rate",)  # 0.01 is the smallest rate tried: a better one may lie below
    assert uses == {"tuned": claims.GridUse(3, True, None, edge), "spec": claims.GridUse(3, False, 3, edge)}
    assert uses["spec"].tuned == 0 and uses["tuned"].tuned == 3
    assert uses["tuned"].text("tuned") == "tuned: best of a grid of 3, its best at the edge of learning_rate"
    (profile / "grid-tuned" / "leaderboard.csv").write_text(
        "rank,best,optimizer.learning_rate,status\n1,True,0.01,complete\n2,False,0.003,complete\n"
        "3,False,0.3,complete\n")
    assert report.grid_use(profile, seed_runs(tmp_path, "s", "cpu"))["tuned"].edges == ()  # inside the grid


def test_a_figure_short_of_seeds_says_so_and_only_test_split_runs_are_old_method(tmp_path: Path) -> None:
    for seed in range(5):
        write_run(tmp_path, "s", "a", f"a{seed}", [0.9, 0.5], seed=seed)
    write_run(tmp_path, "s", "b", "b0", [0.9, 0.4])
    arms = seed_runs(tmp_path, "s", "cpu")
    assert report.method_of(arms).startswith("**only 1 seed(s) in some arm**") and not report.old_method(arms)
    assert report.method_of({"a": arms["a"]}).startswith(f"{report.MIN_SEEDS}+ seeds")
    run_json = arms["b"][0].directory / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "holdout": 0}))
    assert report.method_of(seed_runs(tmp_path, "s", "cpu")).startswith("**old method**")


def test_diagnostic_variants_are_listed_with_their_changed_settings_and_one_target(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path, "alexnet-bs2048", "kfac", f"r-seed{seed}", [0.9, 0.5, 0.3, 0.2], seed=seed)
        write_run(tmp_path, "alexnet-bs2048", "sgd", f"r-seed{seed}", [0.9, 0.6, 0.4, 0.25], seed=seed, method="sgd")
    assert "## Diagnostic runs" not in report.report_text(tmp_path)
    changed = {"training": {"batch_size": 100}, "distribution": {"workers": 1}, "model": {},
               "optimizer": {"inversion": "sync", "inverse_every": 5}}
    for seed, errors in ((0, [0.9, 0.4, 0.2, 0.15]), (1, [0.9, 0.5, 0.3, 0.24])):
        write_run(tmp_path / "diagnostics", "alexnet-bs2048", "kfac", f"every5-seed{seed}", errors, seed=seed,
                  resolved={**changed, "training": {"batch_size": 100, "seed": seed}})
    text = report.report_text(tmp_path)
    section = text[text.index("## Diagnostic runs"):]
    assert "updates to val_error ≤ 0.2000" in section  # the worst best of the figure's own kfac runs
    rows = [line for line in section.splitlines() if line.startswith("| kfac") or line.startswith("| sgd")]
    assert rows[0].startswith("| kfac | — | — (the figure's runs) | 0, 1, 2 | 30 [30, 30] "
                              "(seeds 0, 1, 2: 30, 30, 30) |")
    assert rows[1].startswith("| kfac | every5 | optimizer.inverse_every 20 → 5 | 0, 1 | inf [20, inf] "
                              "(seeds 0, 1: 20, inf) |")  # seed 1's best is 0.24: it never reached the target
    assert rows[2].startswith("| sgd | — | — (the figure's runs, to compare) | 0, 1, 2 | inf [inf, inf] "
                              "(seeds 0, 1, 2: inf, inf, inf) |")


def test_a_variant_recomputes_the_claims_it_changes_with_its_runs_in_place_of_its_arms(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path, "alexnet-bs2048", "kfac", f"r-seed{seed}", [0.9, 0.5, 0.3, 0.2], seed=seed)
        write_run(tmp_path, "alexnet-bs2048", "sgd-bn-rbz256", f"r-seed{seed}", [0.9, 0.6, 0.4, 0.3, 0.2], seed=seed,
                  method="sgd")
        write_run(tmp_path, "alexnet-bs2048", "sgd", f"r-seed{seed}", [0.9, 0.7, 0.5], seed=seed, method="sgd")
        write_run(tmp_path / "diagnostics", "alexnet-bs2048", "kfac", f"fast-seed{seed}", [0.9, 0.2, 0.1, 0.1],
                  seed=seed)
        write_run(tmp_path / "diagnostics", "alexnet-bs2048", "sgd", f"other-seed{seed}", [0.9, 0.6, 0.4], seed=seed,
                  method="sgd")
    costs = [Measurement(arm, quantity, 100, value, 0.9 * value, 1.1 * value, "seconds", 3)
             for arm, update in (("kfac", 0.5), ("sgd-bn-rbz256", 0.25))
             for quantity, value in (("update", update), ("gradient_pass", 0.25))]
    write_costs(tmp_path / "alexnet-bs2048" / "cpu" / FILE_NAME, "alexnet-bs2048", "cpu", costs, IDLE)
    text = report.report_text(tmp_path)
    # the figure's own runs: last target 0.2; K-FAC 30 updates × 0.5 s against SGD+BN's 40 × 0.25 s: 0.67×
    own = next(line for line in text.splitlines() if line.startswith("| 4 | C4"))
    assert "0.67×" in own and f"**{paired.INCONCLUSIVE}**" in own  # three seeds: no verdict
    section = text[text.index("## Diagnostic runs"):]
    rows = [line for line in section.splitlines() if line.startswith("| fast") or line.startswith("| other")]
    # with 'fast' in place of K-FAC's runs: the last target stays 0.2 (SGD+BN's best), reached at update 10 → 2.0×
    assert len(rows) == 1 and rows[0].startswith("| fast (in place of kfac) | C4: ")  # 'other' changes no claim
    assert "2.00×" in rows[0] and rows[0].endswith(f"| {paired.INCONCLUSIVE} |")


def test_the_share_of_updates_at_the_step_size_cap_is_reported_for_kfac_arms(tmp_path: Path) -> None:
    for arm, method in (("kfac", "kfac"), ("sgd", "sgd")):
        run_dir = write_run(tmp_path, "alexnet-bs2048", arm, "r", [0.5, 0.4, 0.3, 0.2], method=method)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        metrics["learning_rate"] = 1.0
        metrics["step_size"] = [None, 1.0, 0.2, 0.3] if method == "kfac" else 1.0  # capped once of three
        metrics.to_csv(run_dir / "metrics.csv", index=False)
    arms = seed_runs(tmp_path, "alexnet-bs2048", "cpu")
    assert capped_share(arms["kfac"][0]) == pytest.approx(1 / 3) and math.isnan(capped_share(arms["sgd"][0]))
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in report.report_text(tmp_path).splitlines())
            if cells[0] in ("kfac label", "sgd label")}
    assert rows["kfac label"][8] == "33%" and rows["sgd label"][8] == "—"  # the 'step size at η_max' column


def test_late_progress_is_the_last_stretch_share_of_the_whole_decrease(tmp_path: Path) -> None:
    write_run(tmp_path, "s", "flat", "r", [0.9, 0.5, 0.3] + [0.2] * 8)
    write_run(tmp_path, "s", "linear", "r", [0.9 - 0.08 * i for i in range(11)])
    write_run(tmp_path, "s", "short", "r", [0.9, 0.5])
    arms = seed_runs(tmp_path, "s", "cpu")
    assert late_share(arms["flat"][0]) == pytest.approx(0.0)
    # train loss 2e at steps 10..100: first 1.64; steps 70, 80 → mean 0.60; steps 90, 100 → mean 0.28
    assert late_share(arms["linear"][0]) == pytest.approx((0.60 - 0.28) / (1.64 - 0.28))
    assert math.isnan(late_share(arms["short"][0]))  # one logged training loss: no curve to judge


def test_report_says_which_arms_flattened_within_their_budget(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path, "cifar10-async", "sync-gpu1", f"k{seed}", [0.9, 0.5, 0.3] + [0.2 + 0.001 * seed] * 8,
                  seed=seed)
        write_run(tmp_path, "cifar10-async", "sgd-bn", f"s{seed}", [0.9 - 0.08 * i for i in range(11)], seed=seed,
                  method="sgd")
        rising = [0.5, 0.4, 0.6, 0.7] if seed == 2 else [0.9, 0.5, 0.3, 0.2]  # seed 2's loss never decreased
        write_run(tmp_path, "cifar10-async", "sync-gpu4", f"r{seed}", rising, seed=seed)
        climbing = [0.9, 0.5, 0.3] + [0.2] * 6 + [0.2 + 0.02 * seed] * 2  # seeds 1, 2 climb back in the last 20%
        write_run(tmp_path, "cifar10-async", "async-gpu1", f"c{seed}", climbing, seed=seed)
    out = tmp_path / "report.md"
    result = CliRunner().invoke(cli.main, ["report", "--results", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {line.split(" | ")[0]: line for line in out.read_text().splitlines() if " label | 0, 1, 2 |" in line}
    assert "| 0.0 [0.0, 0.0]% flat |" in rows["| sync-gpu1 label"]
    # train loss 2e: steps 70, 80 at 0.4, steps 90, 100 at 0.4 + 0.04·seed, first 1.0: seed 2 −0.08 / 0.52
    assert f"[{-100 * 0.08 / 0.52:.1f}, 0.0]% **rising** |" in rows["| async-gpu1 label"]
    assert "| 0.3767 [0.2100, 0.7100] | — |" in rows["| sync-gpu4 label"]  # test error, then no late progress
    assert f"| {100 * 0.32 / 1.36:.1f} [" in rows["| sgd-bn label"] and "**still falling**" in rows["| sgd-bn label"]
    assert all(f"C{n}" in out.read_text() for n in range(1, 9))


def test_a_diverged_run_is_a_result_in_figures_tables_and_claims(tmp_path: Path) -> None:
    def errors(batch: int) -> list[float]:
        return [1 - 10 * i * batch / 40_000 + 0.05 for i in range(11)]

    for seed in range(3):
        for batch in (100, 400):
            for method in ("kfac", "sgd-bn"):
                write_run(tmp_path, "googlenet-batch-scaling", f"{method}-bs{batch}", f"r{seed}", errors(batch),
                          seed=seed, batch=batch, method=method.split("-")[0])
    run_dir = tmp_path / "googlenet-batch-scaling" / "cpu" / "kfac-bs100" / "r0"  # diverged at step 50 of 100
    (run_dir / "run.json").write_text(json.dumps({**json.loads((run_dir / "run.json").read_text()),
                                                  "status": "diverged"}))
    metrics = pd.read_csv(run_dir / "metrics.csv")
    metrics[metrics["step"] <= 50].to_csv(run_dir / "metrics.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arms = seed_runs(tmp_path, "googlenet-batch-scaling", "cpu")
    assert not [w for w in caught if w.category is SkippedRunWarning]  # the diverged run is not left out
    assert [r.seed for r in arms["kfac-bs100"]] == [0, 1, 2] and arms["kfac-bs100"][0].diverged
    assert arm_label(arms["kfac-bs100"]).endswith("3 seed(s), 1 diverged (mean only up to the first divergence)")
    row = claims.judge(next(s for s in claims.TABLE if s.rule == claims.BATCH_SCALING), arms, {}, {})
    assert "at 10,000 examples" in row.measured  # the diverged run's 5,000 do not set the comparison point
    assert "kfac-bs* inf/1.00/1.00" in row.measured and "(seed 0 diverged at step 50)" in row.measured
    assert row.verdict == paired.INCONCLUSIVE
    table = report.report_text(tmp_path)
    assert "| kfac-bs100 label | 0, 1, 2 (seed 0 diverged at step 50) | 100 |" in table


def test_cluster_clock_on_hand_computed_layouts() -> None:
    from kfac_repro.benchmarks.arm_costs.cluster_clock import (
        Components,
        Layout,
        allreduce_seconds,
        async_staleness,
        per_update_seconds,
    )

    parts = Components({512: 0.4, 256: 0.21, 128: 0.11}, apply_seconds=0.02, inversion_seconds=2.0,
                       gradient_bytes=1_000_000)
    assert allreduce_seconds(1_000_000, 4, 1e9) == pytest.approx(2 * 3 / 4 * 1e-3)
    assert allreduce_seconds(1_000_000, 1, 1e9) == 0.0
    # sync, 1 worker: 0.4 + 0 + 0.02 + 2.0/20 = 0.52; async: 0.42 (inversion off the critical path)
    assert per_update_seconds(parts, Layout(1, 512, "sync", 20, 1e9)) == pytest.approx(0.52)
    assert per_update_seconds(parts, Layout(1, 512, "async", 20, 1e9)) == pytest.approx(0.42)
    # 4 workers, B/4 = 128: 0.11 + 0.0015 + 0.02 (+ 0.1 sync)
    assert per_update_seconds(parts, Layout(4, 512, "async", 20, 1e9)) == pytest.approx(0.1315)
    assert per_update_seconds(parts, Layout(4, 512, "sync", 20, 1e9)) == pytest.approx(0.2315)
    assert async_staleness(parts, Layout(1, 512, "async", 20, 1e9)) == 5  # ⌈2.0 / 0.42⌉
    with pytest.raises(KeyError, match="no measured gradient pass on 64 examples"):
        per_update_seconds(parts, Layout(8, 512, "async", 20, 1e9))


def test_labels_name_what_ran_from_the_resolved_runs(tmp_path: Path) -> None:
    resolved = {"training": {"batch_size": 64, "seed": 0}, "distribution": {"workers": 4},
                "model": {"batch_norm": True, "bn_chunk_size": 16}, "optimizer": {}}
    for seed in range(2):
        write_run(tmp_path, "googlenet-bs256", "sgd-bn-rbz128", f"r{seed}", [0.9, 0.5], seed=seed, method="sgd",
                  resolved={**resolved, "training": {"batch_size": 64, "seed": seed}})
    arms = seed_runs(tmp_path, "googlenet-bs256", "cpu")
    assert arm_label(arms["sgd-bn-rbz128"]) == "sgd-bn-rbz128 label: bs 64 rbz 16, 4 worker(s), 2 seed(s)"
    for run_dir in (r.directory for r in arms["sgd-bn-rbz128"]):  # an older label with the paper's sizes
        record = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**record, "label": "SGD+BN bz256 rbz128"}))
    arms = seed_runs(tmp_path, "googlenet-bs256", "cpu")
    assert arm_label(arms["sgd-bn-rbz128"]).startswith("SGD+BN: bs 64 rbz 16")
    drawn = draw(FIGURES[3], arms, "cpu")
    legend = [t.get_text() for t in drawn.legends[0].get_texts()]
    assert legend[0] == "SGD+BN: bs 64 rbz 16, 4 worker(s), 2 seed(s)"
    assert any("paper: ImageNet, batch 256" in t.get_text() for t in drawn.texts)


@pytest.mark.parametrize("number", sorted(FIGURES))
def test_every_figure_draws_each_arm_with_a_band_on_fitted_axes(tmp_path: Path, number: int) -> None:
    figure = FIGURES[number]
    for seed in range(3):
        write_run(tmp_path, figure.spec, "arm-a", f"a{seed}", [0.5, 0.4, 0.3, 0.2 + 0.01 * seed], seed=seed)
        write_run(tmp_path, figure.spec, "arm-b", f"b{seed}", [0.6, 0.5, 0.45, 0.4], seed=seed, batch=400)
    arms = seed_runs(tmp_path, figure.spec, "cpu")
    drawn = draw(figure, arms, "cpu")
    panels = drawn.axes
    assert len(panels) == 2 * len(figure.x_axes)
    assert "Fashion-MNIST" in drawn.get_suptitle() and "profile cpu" in drawn.get_suptitle()
    for index, panel in enumerate(panels):
        x, y = figure.x_axes[index % len(figure.x_axes)], ("loss", "error")[index // len(figure.x_axes)]
        lines = {line.get_label(): line for line in panel.get_lines()}
        assert set(lines) == {f"{arm} ({split})" for arm in ("arm-a", "arm-b") for split in figure.splits}
        curve = band(arms["arm-a"], "seconds" if x == "time" else x, f"{figure.splits[-1]}_{y}")  # no clock
        line = lines[f"arm-a ({figure.splits[-1]})"]
        assert list(line.get_ydata()) == pytest.approx(list(curve["mean"]))
        assert len(panel.collections) == 2 * len(figure.splits)  # one band per arm and split
        values = [v for line in panel.get_lines() for v in line.get_ydata()]
        low, high = panel.get_ylim()
        assert panel.get_yscale() == "log"
        assert min(values) / 2 <= low <= min(values) and max(values) <= high <= max(values) * 1.5  # bands and all
    assert drawn.legends and drawn.legends[0].get_bbox_to_anchor().x0 >= drawn.bbox.x1 - 1  # outside the panels


@pytest.mark.parametrize(("first", "clipped"), [(90.0, True), (1.5, False)])
def test_an_untrained_models_outlying_first_evaluation_does_not_flatten_the_loss_axes(
        tmp_path: Path, first: float, clipped: bool) -> None:
    for seed in range(3):  # validation loss 3 × error: 1.2, 0.9, 0.6 after step 0; training loss 2 × error below it
        run_dir = write_run(tmp_path, "resnet50-bs512", "kfac", f"r{seed}", [0.5, 0.4, 0.3, 0.2], seed=seed)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        metrics.loc[0, "val_loss"] = first + 0.01 * seed  # BN's initial moving statistics can put step 0 far above
        metrics.to_csv(run_dir / "metrics.csv", index=False)
    drawn = draw(FIGURES[5], seed_runs(tmp_path, "resnet50-bs512", "cpu"), "cpu")
    top = drawn.axes[0].get_ylim()[1]  # the loss panel over updates
    assert (1.2 < top < 1.3) if clipped else (top > first)
    note = "The untrained models' first evaluation (up to 90) lies above the axes, which are fitted to the later"
    assert any(note in t.get_text() for t in drawn.texts) is clipped


def test_the_time_axis_is_updates_times_each_arms_measured_cost_not_the_logged_seconds(tmp_path: Path) -> None:
    figure = FIGURES[4]
    for arm in ("kfac", "sgd"):
        write_run(tmp_path, figure.spec, arm, "r", [0.5, 0.4, 0.3], method=arm)  # logs 2 s per update
    arms = seed_runs(tmp_path, figure.spec, "cpu")
    path = tmp_path / figure.spec / "cpu" / FILE_NAME
    write_costs(path, figure.spec, "cpu", [Measurement("kfac", "update", 100, 0.6, 0.5, 0.7, "seconds", 3),
                                           Measurement("sgd", "update", 100, 0.3, 0.2, 0.4, "seconds", 3)], IDLE)
    clock = figure_clock(arms, read_costs(path), modelled=False)
    assert clock is not None and clock.seconds == {"kfac": 0.6, "sgd": 0.3}
    drawn = draw(figure, arms, "cpu", clock)
    time_panel = drawn.axes[1]
    assert "updates × s/update from bench arms" in time_panel.get_xlabel()
    lines = {line.get_label(): line for line in time_panel.get_lines()}
    assert list(lines["kfac (val)"].get_xdata()) == pytest.approx([0.0, 10 * 0.6 / 60, 20 * 0.6 / 60])
    assert list(lines["sgd (val)"].get_xdata()) == pytest.approx([0.0, 10 * 0.3 / 60, 20 * 0.3 / 60])
    write_costs(path, figure.spec, "cpu", [Measurement("kfac", "update", 100, 0.6, 0.5, 0.7, "seconds", 3)], IDLE)
    assert figure_clock(arms, read_costs(path), modelled=False) is None  # sgd has no cost: logged seconds
    assert "logged wall-clock" in draw(figure, arms, "cpu", None).axes[1].get_xlabel()


def test_the_cost_table_shows_the_gradient_pass_a_worker_computes(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path, "cifar10-async", "async-gpu4", f"r-seed{seed}", [0.5, 0.4], seed=seed, resolved={
            "training": {"batch_size": 100, "seed": seed}, "distribution": {"workers": 4},
            "optimizer": {"inversion": "async", "inverse_every": 20}})
    write_costs(tmp_path / "cifar10-async" / "cpu" / FILE_NAME, "cifar10-async", "cpu", [
        Measurement("async-gpu4", "update", 100, 0.3, 0.3, 0.3, "seconds", 3),
        Measurement("async-gpu4", "gradient_pass", 100, 0.2, 0.2, 0.2, "seconds", 3),
        Measurement("async-gpu4", "gradient_pass", 25, 0.06, 0.06, 0.06, "seconds", 3)], IDLE)
    row = next(line for line in report.report_text(tmp_path).splitlines() if line.startswith("| async-gpu4 | 0.3"))
    assert "| 200.0 ms (60.0 ms on B/4) |" in row and row.endswith("| 0.0600 |")  # modelled: the B/4 pass


def test_report_refuses_mixed_commits_unless_told_and_then_says_so(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path, "cifar10-async", "sync-gpu1", f"k{seed}", [0.9, 0.5, 0.3], seed=seed, commit="aaa")
        write_run(tmp_path, "cifar10-async", "sgd-bn", f"s{seed}", [0.9, 0.6, 0.4], seed=seed, commit="bbb+dirty",
                  method="sgd")
    out = tmp_path / "report.md"
    refused = CliRunner().invoke(cli.main, ["report", "--results", str(tmp_path), "--out", str(out)])
    assert refused.exit_code == 2 and "Fig. 2" in refused.output and "mixes commits" in refused.output
    assert not out.exists()
    allowed = CliRunner().invoke(cli.main, ["report", "--results", str(tmp_path), "--out", str(out), "--allow-mixed"])
    assert allowed.exit_code == 0, allowed.output
    text = out.read_text()
    assert "**mixes commits: aaa, bbb+dirty (+dirty: uncommitted changes)**" in text
    assert "| sync-gpu1 label | 0, 1, 2 | 20 |" in text and "t-interval of the mean per-seed log-ratio" in text
    assert "different BN momenta" not in text


@pytest.mark.parametrize("args", [["plot", "all", "--results", "NONE"], ["report", "--results", "NONE"]])
def test_plot_and_report_do_not_import_tensorflow(tmp_path: Path, args: list[str]) -> None:
    args = [a.replace("NONE", str(tmp_path)) for a in args] + (["--out", str(tmp_path / "r.md")]
                                                                if args[0] == "report" else [])
    probe = (f"import sys; from click.testing import CliRunner; import cli; r = CliRunner().invoke(cli.main, "
             f"{args!r}); assert 'tensorflow' not in sys.modules; print(r.exit_code)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_unusable_runs_are_skipped_with_a_warning_naming_them(tmp_path: Path) -> None:
    """Among good runs: an empty, a binary, a garbled and a cut metrics.csv (all marked complete), and an
    interrupted run; plot and report still work, name each one and say why it was left out."""
    write_run(tmp_path, "alexnet-bs2048", "sgd", "r1", [0.6, 0.5, 0.45, 0.4])
    good = write_run(tmp_path, "alexnet-bs2048", "kfac", "r1", [0.5, 0.4, 0.3, 0.2])
    empty = write_run(tmp_path, "alexnet-bs2048", "kfac", "r2", [0.5, 0.4, 0.3, 0.2])
    (empty / "metrics.csv").write_bytes(b"")
    binary = write_run(tmp_path, "alexnet-bs2048", "kfac", "r3", [0.5, 0.4, 0.3, 0.2])
    (binary / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    garbled = write_run(tmp_path, "alexnet-bs2048", "kfac", "r4", [0.5, 0.4, 0.3, 0.2])
    (garbled / "metrics.csv").write_text((garbled / "metrics.csv").read_text().replace("0.4", "x\x00y"))
    cut = write_run(tmp_path, "alexnet-bs2048", "kfac", "r5", [0.5, 0.4, 0.3, 0.2])
    text = (cut / "metrics.csv").read_text()
    (cut / "metrics.csv").write_text(text[: text.index("\n30,")])  # cut after the row of step 20 of 30
    interrupted = write_run(tmp_path, "alexnet-bs2048", "kfac", "r6", [0.5], status="interrupted")
    for read in (newest_complete_runs, lambda *where: {arm: runs[0] for arm, runs in seed_runs(*where).items()}):
        with pytest.warns(UserWarning) as caught:
            runs = read(tmp_path, "alexnet-bs2048", "cpu")
        assert runs["kfac"].directory == good
        messages = "\n".join(str(w.message) for w in caught)
        for run_dir, why in ((empty, "metrics.csv unreadable"), (binary, "metrics.csv"),
                             (garbled, "metrics.csv has non-numeric values in train_loss"),
                             (cut, "incomplete: metrics.csv ends at step 20 of 30 (cut short)"),
                             (interrupted, "incomplete (status interrupted)")):
            assert f"skipped run {run_dir}: {why}" in messages, messages
    result = CliRunner().invoke(cli.main, ["plot", "4", "--results", str(tmp_path), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert f"warning: skipped run {cut}: incomplete" in result.output
    reported = CliRunner().invoke(cli.main, ["report", "--results", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert reported.exit_code == 0, reported.output
    written = (tmp_path / "r.md").read_text()
    assert "## Runs left out\n\n- skipped run " in written and f"- skipped run {empty}: " in written
    assert f"- skipped run {cut}: incomplete" in written and f"`{good.parent}`" in written


def test_plot_refuses_a_profile_that_would_name_files_outside_out(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["plot", "4", "--results", str(tmp_path), "--out", str(tmp_path / "p"),
                                           "--profile", "../../escaped"])
    assert result.exit_code == 2 and "--profile: '../../escaped' cannot be a directory name" in result.output
    assert list(tmp_path.iterdir()) == []


def _damage(run_dir: Path, how: str) -> None:
    """Damage one record of a run written by write_run (steps 0..30)."""
    metrics = run_dir / "metrics.csv"
    text = metrics.read_text()
    if how == "environment not UTF-8":
        (run_dir / "environment.json").write_bytes(b'{"device": "\xff\xfe"}')
    elif how == "last step inf":
        metrics.write_text(text.replace("\n30,", "\ninf,"))
    elif how == "resolved section a list":
        (run_dir / "resolved.yaml").write_text("training: [1, 2]\n")
    elif how == "last row cut mid-number":
        metrics.write_text(text[: text.index("0.6,0.2,,,,0,", text.index("\n30,")) + 5])
    elif how == "last row without its line end":
        metrics.write_text(text.rstrip("\r\n"))
    elif how == "step repeated":
        metrics.write_text(text.replace("\n20,", "\n10,"))
    elif how == "steps out of order":
        metrics.write_text(text.replace("\n10,", "\n25,"))
    elif how == "seed a list":
        record = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**record, "seed": [1, 2]}))


DAMAGE = {"environment not UTF-8": "environment.json unreadable (UnicodeDecodeError)",
          "last step inf": "metrics.csv has a step that is not a whole number",
          "resolved section a list": "resolved.yaml section training is a list, not a mapping",
          "last row cut mid-number": f"metrics.csv line 5 has 7 cells, not {len(COLUMNS)}",
          "last row without its line end": "metrics.csv's last row is cut (no line end)",
          "step repeated": "metrics.csv's steps are not increasing",
          "steps out of order": "metrics.csv's steps are not increasing",
          "seed a list": "run.json seed is '[1, 2]', not an integer"}


def test_damaged_runs_are_skipped_naming_why_and_never_crash_plot_or_report(tmp_path: Path) -> None:
    """Each damaged run is newer than the good one; neither reader raises, each names the run and why, a seed that
    is a list is no seed of its own, and plot and report work from the good runs."""
    write_run(tmp_path, "alexnet-bs2048", "sgd", "r0", [0.6, 0.5, 0.45, 0.4])
    good = write_run(tmp_path, "alexnet-bs2048", "kfac", "r0", [0.5, 0.4, 0.3, 0.2])
    damaged = {}
    for number, how in enumerate(DAMAGE, start=1):
        damaged[how] = write_run(tmp_path, "alexnet-bs2048", "kfac", f"r{number}", [0.5, 0.4, 0.3, 0.2])
        _damage(damaged[how], how)
    for read in (newest_complete_runs, lambda *where: {arm: runs[0] for arm, runs in seed_runs(*where).items()}):
        with pytest.warns(SkippedRunWarning) as caught:
            runs = read(tmp_path, "alexnet-bs2048", "cpu")
        assert runs["kfac"].directory == good
        messages = "\n".join(str(w.message) for w in caught)
        for how, why in DAMAGE.items():
            assert f"skipped run {damaged[how]}: {why}" in messages, (how, messages)
    with pytest.warns(SkippedRunWarning):
        assert [run.seed for run in seed_runs(tmp_path, "alexnet-bs2048", "cpu")["kfac"]] == [0]
    plotted = CliRunner().invoke(cli.main, ["plot", "4", "--results", str(tmp_path), "--out", str(tmp_path / "p")])
    assert plotted.exit_code == 0, plotted.output
    reported = CliRunner().invoke(cli.main, ["report", "--results", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert reported.exit_code == 0, reported.output
    written = (tmp_path / "r.md").read_text()
    assert all(f"- skipped run {run_dir}: " in written for run_dir in damaged.values())


def test_nan_in_metrics_is_read_back_as_nan(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "s", "a", "r", [0.5, 0.4], status="diverged")
    log = MetricsLog(run_dir / "metrics.csv", resume_step=10)
    log.append({"step": 20, "examples": 2000, "seconds": 40.0, "train_loss": math.nan, "train_error": 0.9,
                "val_loss": 3.0, "val_error": 0.9})
    log.close()
    (run,) = seed_runs(tmp_path, "s", "cpu")["a"]
    assert run.last_step == 20 and math.isnan(run.metrics["train_loss"].iloc[-1])
    assert run.metrics["train_loss"].isna().sum() == 2  # the step-0 row has no training loss; the last one is NaN
    assert "\n20,2000,40,nan,0.9,3,0.9," in (run_dir / "metrics.csv").read_text().replace("\r\n", "\n")


@pytest.mark.parametrize("command", [["plot", "all", "--out", "FILE"], ["plot", "all", "--out", "FILE/below"],
                                     ["report", "--out", "FILE/report.md"], ["report", "--out", "DIR"]])
def test_an_out_that_cannot_be_written_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.replace("FILE", str(tmp_path / "file")).replace("DIR", str(tmp_path)) for a in command]
    result = CliRunner().invoke(cli.main, [*args, "--results", str(tmp_path / "none")])
    assert result.exit_code == 2 and "Invalid value for --out" in result.output, result.output
    assert "is not a directory" in result.output or "is not a regular file" in result.output
    assert (tmp_path / "file").read_text() == "x"


def test_log_axes_label_the_minor_ticks_at_two_three_and_five_only() -> None:
    from kfac_repro.plotting.figures import _minor_tick

    assert [_minor_tick(v, None) for v in (0.2, 0.3, 0.4, 0.5, 0.7, 3.0, 0.05)] == ["0.2", "0.3", "", "0.5", "", "3",
                                                                                    "0.05"]


@pytest.mark.parametrize("number", [6, 4])
def test_methods_are_told_apart_by_colour_family_and_batch_sizes_by_shade(tmp_path: Path, number: int) -> None:
    from matplotlib.colors import to_rgb

    figure = FIGURES[number]
    for method, arm, batch in (("kfac", "k-small", 100), ("kfac", "k-large", 400), ("sgd", "s-small", 100),
                               ("sgd", "s-large", 400)):
        write_run(tmp_path, figure.spec, arm, "r", [0.5, 0.4, 0.3], method=method, batch=batch)
    drawn = draw(figure, seed_runs(tmp_path, figure.spec, "cpu"), "cpu")
    colours = {line.get_label().split(" (")[0]: to_rgb(line.get_color()) for line in drawn.axes[0].get_lines()}
    assert all(colours[a][2] > colours[a][0] for a in ("k-small", "k-large"))  # K-FAC: cool (more blue than red)
    assert all(colours[a][0] > colours[a][2] for a in ("s-small", "s-large"))  # SGD: warm
    assert len(set(colours.values())) == 4 and not any(line.get_marker() not in ("None", None, "")
                                                       for line in drawn.axes[0].get_lines())
    if figure.colour_by == "batch_size":  # the larger batch in the darker shade of its family
        assert sum(colours["k-large"]) < sum(colours["k-small"]) and sum(colours["s-large"]) < sum(colours["s-small"])
