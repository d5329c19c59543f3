"""Figures and report from small synthetic result trees: run selection, axes, files written, claims whose answer
is known, and no TensorFlow import."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from kfac_repro.plotting import claims
from kfac_repro.plotting.figures import FIGURES, draw
from kfac_repro.plotting.results import newest_complete_runs, series
from kfac_repro.runner.metrics_log import MetricsLog


def write_run(results: Path, spec: str, profile: str, arm: str, run_id: str, seconds_per_step: float,
              errors: list[float], status: str = "complete", batch: int = 100) -> Path:
    run_dir = results / spec / profile / arm / run_id
    run_dir.mkdir(parents=True)
    log = MetricsLog(run_dir / "metrics.csv")
    for i, error in enumerate(errors, start=1):
        step = 10 * i
        log.append({"step": step, "examples": step * batch, "seconds": 1.0 + seconds_per_step * (step - 10),
                    "train_loss": 2 * error, "train_error": error, "val_loss": 3 * error if i % 2 == 0 else None,
                    "val_error": error if i % 2 == 0 else None})
    log.close()
    (run_dir / "run.json").write_text(json.dumps({"status": status, "label": f"{arm} label", "data": "fashion_mnist",
                                                  "method": "kfac", "steps": 10 * len(errors)}))
    (run_dir / "environment.json").write_text(json.dumps({"device": "CPU (test)"}))
    return run_dir


def test_newest_complete_run_per_arm_is_chosen_and_grid_runs_are_not_arms(tmp_path: Path) -> None:
    old = write_run(tmp_path, "cifar10-async", "cpu", "sync-gpu1", "20260101T000000", 1.0, [0.5, 0.4])
    write_run(tmp_path, "cifar10-async", "cpu", "sync-gpu1", "20260102T000000", 1.0, [0.5], status="failed")
    write_run(tmp_path, "cifar10-async", "cpu", "sync-gpu1", "20260103T000000", 1.0, [0.5], status="running")
    write_run(tmp_path, "cifar10-async", "cpu", "grid-sgd-bn", "lr=0.1", 1.0, [0.5, 0.4])
    runs = newest_complete_runs(tmp_path, "cifar10-async", "cpu")
    assert list(runs) == ["sync-gpu1"] and runs["sync-gpu1"].directory == old
    xs, ys = series(runs["sync-gpu1"], "step", "error", "val")
    assert list(xs) == [20] and list(ys) == [0.4]  # validation only where it was logged
    xs, ys = series(runs["sync-gpu1"], "examples", "loss", "train")
    assert list(xs) == [1000, 2000] and list(ys) == [1.0, 0.8]


def test_plot_writes_figures_with_data_and_reports_missing_ones(tmp_path: Path) -> None:
    write_run(tmp_path, "alexnet-bs2048", "cpu", "kfac", "r1", 1.0, [0.5, 0.4, 0.3, 0.2])
    write_run(tmp_path, "alexnet-bs2048", "cpu", "sgd", "r1", 0.5, [0.6, 0.5, 0.45, 0.4])
    out = tmp_path / "plots"
    result = CliRunner().invoke(cli.main, ["plot", "all", "--results", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "fig4-cpu.png").stat().st_size > 10_000 and (out / "fig4-cpu.pdf").exists()
    assert "fig 2: no complete runs under" in result.output and "kfac-repro run cifar10-async" in result.output
    nothing = CliRunner().invoke(cli.main, ["plot", "3", "--results", str(tmp_path), "--out", str(out)])
    assert nothing.exit_code == 1


@pytest.mark.parametrize("number", sorted(FIGURES))
def test_every_figure_draws_each_run_on_its_axes(tmp_path: Path, number: int) -> None:
    figure = FIGURES[number]
    write_run(tmp_path, figure.spec, "cpu", "arm-a", "r1", 2.0, [0.5, 0.4, 0.3, 0.2])
    write_run(tmp_path, figure.spec, "cpu", "arm-b", "r1", 1.0, [0.6, 0.5, 0.45, 0.4], batch=400)
    write_run(tmp_path, "other-spec", "cpu", "arm-c", "r1", 1.0, [0.9, 0.9])  # another figure's run
    runs = newest_complete_runs(tmp_path, figure.spec, "cpu")
    drawn = draw(figure, runs, "cpu")
    panels = drawn.axes
    assert len(panels) == 2 * len(figure.x_axes)
    assert "Fashion-MNIST" in drawn.get_suptitle() and "profile cpu" in drawn.get_suptitle()
    for index, panel in enumerate(panels):
        x, y = figure.x_axes[index % len(figure.x_axes)], ("loss", "error")[index // len(figure.x_axes)]
        assert panel.get_xlabel().startswith({"step": "updates", "seconds": "wall-clock", "examples": "examples"}[x])
        lines = {line.get_label(): line for line in panel.get_lines()}
        assert set(lines) == {f"{arm} label ({split})" for arm in ("arm-a", "arm-b") for split in figure.splits}
        for arm in ("arm-a", "arm-b"):
            for split in figure.splits:
                line = lines[f"{arm} label ({split})"]
                xs, ys = series(runs[arm], x, y, split)
                assert list(line.get_xdata()) == list(xs / 60.0 if x == "seconds" else xs)
                assert list(line.get_ydata()) == list(ys)
                assert line.get_linestyle() == ("--" if split == "train" else "-")


def test_claims_on_constructed_runs_with_known_answers(tmp_path: Path) -> None:
    write_run(tmp_path, "cifar10-async", "cpu", "sync-gpu1", "r", 0.3, [0.5, 0.4, 0.3, 0.2])
    write_run(tmp_path, "cifar10-async", "cpu", "async-gpu1", "r", 0.15, [0.5, 0.4, 0.3, 0.2])
    write_run(tmp_path, "googlenet-bs256", "cpu", "kfac", "r", 1.0, [0.5, 0.3, 0.3, 0.2])  # error 0.2 at 31 s
    write_run(tmp_path, "googlenet-bs256", "cpu", "sgd-bn-rbz128", "r", 0.5, [0.6, 0.5, 0.5, 0.45, 0.3, 0.2, 0.2, 0.2])
    async_claims = claims.async_speedup(newest_complete_runs(tmp_path, "cifar10-async", "cpu"))
    assert async_claims[0].verdict == claims.REPRODUCED and "2.00×" in async_claims[0].measured
    assert async_claims[1].verdict == claims.NO_DATA
    figure2 = claims.CLAIMS[2](newest_complete_runs(tmp_path, "cifar10-async", "cpu"))
    assert len(figure2) == 3 and figure2[2].verdict == claims.NO_DATA and "sgd-bn" in figure2[2].measured
    runs = newest_complete_runs(tmp_path, "googlenet-bs256", "cpu")
    claim = claims.time_to_target(3, runs, "kfac", "sgd-bn-rbz128", 2.0, "test")
    # target 0.2: K-FAC first at step 40 (31 s), SGD+BN at step 60 (26 s) → 0.84×
    assert "0.84×" in claim.measured and claim.verdict == claims.NOT_REPRODUCED
    assert "(in updates: 60 vs 40)" in claim.measured
    assert claims.bn_generalisation(runs).verdict == claims.NO_DATA
    write_run(tmp_path, "googlenet-bs256", "cpu", "kfac-bn", "r", 1.0, [0.5, 0.3, 0.3, 0.1])
    with_bn = claims.bn_generalisation(newest_complete_runs(tmp_path, "googlenet-bs256", "cpu"))
    assert with_bn.verdict == claims.REPRODUCED and "K-FAC 0.200, K-FAC+BN 0.100" in with_bn.measured
    kl = write_run(tmp_path, "googlenet-kl-decay", "cpu", "decay-kl", "r", 1.0, [0.5, 0.3, 0.3, 0.2])
    lr = write_run(tmp_path, "googlenet-kl-decay", "cpu", "decay-lr", "r", 1.0, [0.5, 0.4, 0.4, 0.3])
    for run_dir, step_size in ((kl, 0.05), (lr, 0.05)):
        metrics = pd.read_csv(run_dir / "metrics.csv").assign(step_size=step_size, learning_rate=1.0)
        metrics.to_csv(run_dir / "metrics.csv", index=False)
    decay = claims.kl_decay(newest_complete_runs(tmp_path, "googlenet-kl-decay", "cpu"))
    assert decay.verdict == claims.INCONCLUSIVE and "never bound" in decay.measured  # cap 1.0, steps 0.05
    pd.read_csv(lr / "metrics.csv").assign(learning_rate=0.05).to_csv(lr / "metrics.csv", index=False)
    decay = claims.kl_decay(newest_complete_runs(tmp_path, "googlenet-kl-decay", "cpu"))
    assert decay.verdict == claims.REPRODUCED and "decayKL 0.6000, decayLR 0.9000" in decay.measured
    assert claims.ratio_verdict(1.2, 2.0) == claims.PARTLY and claims.ratio_verdict(1.6, 2.0) == claims.REPRODUCED


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
    write_run(tmp_path, "alexnet-bs2048", "cpu", "sgd", "r1", 0.5, [0.6, 0.5, 0.45, 0.4])
    good = write_run(tmp_path, "alexnet-bs2048", "cpu", "kfac", "r1", 1.0, [0.5, 0.4, 0.3, 0.2])
    empty = write_run(tmp_path, "alexnet-bs2048", "cpu", "kfac", "r2", 1.0, [0.5, 0.4, 0.3, 0.2])
    (empty / "metrics.csv").write_bytes(b"")
    binary = write_run(tmp_path, "alexnet-bs2048", "cpu", "kfac", "r3", 1.0, [0.5, 0.4, 0.3, 0.2])
    (binary / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    garbled = write_run(tmp_path, "alexnet-bs2048", "cpu", "kfac", "r4", 1.0, [0.5, 0.4, 0.3, 0.2])
    (garbled / "metrics.csv").write_text((garbled / "metrics.csv").read_text().replace("0.4", "x\x00y"))
    cut = write_run(tmp_path, "alexnet-bs2048", "cpu", "kfac", "r5", 1.0, [0.5, 0.4, 0.3, 0.2])
    text = (cut / "metrics.csv").read_text()
    (cut / "metrics.csv").write_text(text[: text.index("\n30,")])  # cut after the row of step 20 of 40
    interrupted = write_run(tmp_path, "alexnet-bs2048", "cpu", "kfac", "r6", 1.0, [0.5], status="interrupted")
    with pytest.warns(UserWarning) as caught:
        runs = newest_complete_runs(tmp_path, "alexnet-bs2048", "cpu")
    assert runs["kfac"].directory == good
    messages = "\n".join(str(w.message) for w in caught)
    for run_dir, why in ((empty, "metrics.csv unreadable"), (binary, "metrics.csv"),
                         (garbled, "metrics.csv has non-numeric values in train_loss"),
                         (cut, "incomplete: metrics.csv ends at step 20 of 40 (cut short)"),
                         (interrupted, "incomplete (status interrupted)")):
        assert f"skipped run {run_dir}: {why}" in messages, messages
    result = CliRunner().invoke(cli.main, ["plot", "4", "--results", str(tmp_path), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert f"warning: skipped run {cut}: incomplete" in result.output
    report = CliRunner().invoke(cli.main, ["report", "--results", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert report.exit_code == 0, report.output
    written = (tmp_path / "r.md").read_text()
    assert "## Runs left out\n\n- skipped run " in written and f"- skipped run {empty}: " in written
    assert f"- skipped run {cut}: incomplete" in written and f"`{good}`" in written


def test_plot_refuses_a_profile_that_would_name_files_outside_out(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["plot", "4", "--results", str(tmp_path), "--out", str(tmp_path / "p"),
                                           "--profile", "../../escaped"])
    assert result.exit_code == 2 and "--profile: '../../escaped' cannot be a directory name" in result.output
    assert list(tmp_path.iterdir()) == []
