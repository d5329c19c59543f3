"""`kfac-repro bench keras`: the grids, the selection, targets and paired ratios on synthetic runs with a known
effect, the README table from a written CSV, and the command end to end at tiny scale, resumed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from kfac_repro.benchmarks.keras_suite.plan import (
    DEFAULT_OPTIMIZERS,
    GRID_SIZE,
    GRIDS,
    OPTIMIZERS,
    SCALES,
    TASK_NAMES,
    UNTUNED,
    grid,
    setting_text,
)
from kfac_repro.benchmarks.keras_suite.results import (
    RUN_FIELDS,
    SUITE_FIELDS,
    markdown_table,
    per_run,
    read_rows,
    select,
    summarise,
    write_rows,
)
from kfac_repro.results.targets import FRACTIONS

SEEDS = range(1, 6)
NOISE = (-0.08, 0.05, 0.0, 0.1, -0.04)  # per-seed log-noise on K-FAC's time scale


def test_every_optimizer_has_an_equally_large_grid_of_distinct_settings() -> None:
    tuned = [o for o in OPTIMIZERS if o not in UNTUNED]
    for optimizer in tuned:
        assert len(GRIDS[optimizer]) == GRID_SIZE, optimizer
        assert len({setting_text(s) for s in GRIDS[optimizer]}) == GRID_SIZE, optimizer
    for scale in SCALES.values():
        assert len({len(grid(o, scale)) for o in tuned}) == 1, scale.name
    assert all(GRIDS[o] == [{}] for o in UNTUNED)  # one setting: the defaults


def _run(phase: str, optimizer: str, seed: int, values: list[float], setting: str = "s=1") -> dict[str, str]:
    steps = range(len(values))
    return {"scale": "tiny", "phase": phase, "task": "mlp", "batch": "32", "optimizer": optimizer,
            "setting": setting, "seed": str(seed), "budget": str(len(values) - 1),
            "steps": " ".join(map(str, steps)), "selection": " ".join(map(str, values)),
            "target": " ".join(map(str, values)), "train_seconds": "1"}


def _line(span: float, length: int = 301) -> list[float]:
    """A target metric falling linearly from 1 to 0 over `span` steps, then flat."""
    return [max(0.0, 1.0 - step / span) for step in range(length)]


def _synthetic(kfac_ms: float, ekfac: bool = False) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """K-FAC's curves twice as fast as AdamW's (the fastest opponent; Muon 1.2×, SGD 1.5× slower than AdamW),
    up to per-seed noise; K-FAC's step costs `kfac_ms` against 10 ms for the others. With `ekfac`, EKFAC's curves
    too: 2.5× as fast as AdamW's (faster than K-FAC's) with the same noise, at 40 ms a step."""
    optimizers = (*DEFAULT_OPTIMIZERS, "ekfac") if ekfac else DEFAULT_OPTIMIZERS
    spans = {"adamw": 100.0, "muon": 120.0, "sgd": 150.0}
    runs = [_run("tune", o, 0, _line(100.0)) for o in optimizers]
    for seed, noise in zip(SEEDS, NOISE, strict=True):
        runs.append(_run("final", "kfac", seed, _line(50.0 * math.exp(noise))))
        runs += [_run("final", "ekfac", seed, _line(40.0 * math.exp(noise)))] if ekfac else []
        runs += [_run("final", o, seed, _line(span)) for o, span in spans.items()]
    ms = {"kfac": kfac_ms, "ekfac": 40.0}
    costs = [{"scale": "tiny", "task": "mlp", "batch": "32", "optimizer": o, "setting": "s=1",
              "ms_per_step": str(ms.get(o, 10.0))} for o in optimizers]
    return runs, costs


def test_paired_ratios_find_a_known_effect_against_the_best_opponent() -> None:
    runs, costs = _synthetic(kfac_ms=30.0)
    suite = [r for r in summarise(runs, costs) if r["optimizer"] == "kfac"]
    assert [float(r["fraction"]) for r in suite] == [0.8, 0.9, 0.95, 1.0]
    assert [float(r["target"]) for r in suite] == pytest.approx([0.2, 0.1, 0.05, 0.0])
    expected = math.exp(sum(NOISE) / len(NOISE)) / 2  # geometric mean of K-FAC's span over AdamW's
    for row in suite:
        assert row["steps_opponent"] == row["seconds_opponent"] == "adamw"
        assert float(row["steps_ratio"]) == pytest.approx(expected, rel=0.03)
        assert float(row["steps_high"]) < 1.0 < float(row["seconds_low"])  # steps: a win; wall-clock: 3× the cost
        assert float(row["seconds_ratio"]) == pytest.approx(3 * float(row["steps_ratio"]), rel=1e-3)
        assert row["censored"] == "0" and row["seeds"] == "5"


def test_ekfac_is_compared_with_the_same_opponents_and_gets_its_own_table() -> None:
    runs, costs = _synthetic(kfac_ms=30.0, ekfac=True)
    suite = summarise(runs, costs)
    without = summarise(*_synthetic(kfac_ms=30.0))
    assert [r for r in suite if r["optimizer"] != "ekfac"] == without  # EKFAC changes nothing of the others' rows
    ekfac = [r for r in suite if r["optimizer"] == "ekfac"]
    assert len(ekfac) == len(FRACTIONS)
    expected = math.exp(sum(NOISE) / len(NOISE)) * 0.4  # EKFAC's span over AdamW's, never K-FAC's
    for row in ekfac:
        assert row["steps_opponent"] == row["seconds_opponent"] == "adamw"
        assert float(row["steps_ratio"]) == pytest.approx(expected, rel=0.03)
        assert float(row["seconds_ratio"]) == pytest.approx(4 * float(row["steps_ratio"]), rel=1e-3)
    table = markdown_table(suite, "kfac-repro bench keras --ekfac")
    assert table.startswith(markdown_table(without, "kfac-repro bench keras --ekfac").rstrip("\n"))
    assert "| EKFAC setting | EKFAC steps | steps: opponent (median), EKFAC ÷ it |" in table
    assert len([line for line in table.splitlines() if line.startswith("| mlp |")]) == 2 * len(FRACTIONS)
    unfinished = [r for r in costs if r["optimizer"] != "ekfac"]  # EKFAC's cost not timed yet: no summary yet
    assert summarise(runs, unfinished) == []


def test_the_suite_runs_ekfac_only_when_asked(tmp_path: Path) -> None:
    from kfac_repro.benchmarks.keras_suite.run import Plan, _runs_of

    plans = {ekfac: Plan(["mlp"], [32], 2, SCALES["tiny"], tmp_path, "c",
                         (*DEFAULT_OPTIMIZERS, "ekfac") if ekfac else DEFAULT_OPTIMIZERS) for ekfac in (False, True)}
    assert plans[True].jobs() == plans[False].jobs() + 1 + 2
    assert {o for _, o, _, _ in _runs_of(plans[False], "mlp", 32, [])} == set(DEFAULT_OPTIMIZERS)
    assert {(p, o) for p, o, _, _ in _runs_of(plans[True], "mlp", 32, [])} >= {("tune", "ekfac"), ("final", "ekfac")}


def test_a_run_that_never_reaches_the_target_is_censored_at_its_budget() -> None:
    runs, costs = _synthetic(kfac_ms=10.0)
    stuck = next(r for r in runs if r["phase"] == "final" and r["optimizer"] == "sgd" and r["seed"] == "3")
    stuck.update({key: value for key, value in _run("final", "sgd", 3, [1.0] * 301).items()
                  if key in ("selection", "target")})
    sgd = [r for r in summarise(runs, costs) if r["optimizer"] == "sgd"]
    assert all(r["censored"] == "1" for r in sgd)


def test_selection_takes_the_lowest_mean_held_out_curve_and_ranks_nan_last() -> None:
    runs = [_run("tune", "adamw", 0, [1.0, 0.2, 0.2], "learning_rate=0.01"),  # mean 0.47
            _run("tune", "adamw", 0, [1.0, 0.5, 0.1], "learning_rate=0.001"),  # mean 0.53, best last value
            _run("tune", "adamw", 0, [1.0, 0.0, math.nan], "learning_rate=0.1")]
    assert select(runs, "mlp", 32, "adamw") == "learning_rate=0.01"
    assert select(runs, "mlp", 32, "muon") is None


def test_markdown_table_from_a_written_suite_csv(tmp_path: Path) -> None:
    runs, costs = _synthetic(kfac_ms=30.0)
    write_rows(tmp_path / "suite.csv", SUITE_FIELDS, summarise(runs, costs))
    table = markdown_table(read_rows(tmp_path / "suite.csv"), "kfac-repro bench keras --seeds 5")
    rows = [line for line in table.splitlines() if line.startswith("| mlp |")]
    assert len(rows) == 4
    cells = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    assert cells[:4] == ["mlp", "32", "0.2 (0.8)", "s=1"]
    # K-FAC at 0.8 of the way: steps ceil(0.8 · 50e^noise) = 37, 43, 40, 45, 39 against AdamW's 80
    assert cells[5].startswith("AdamW s=1 (80) 0.51× [") and cells[6].startswith("AdamW s=1 (0.8) 1.53× [")
    assert cells[8:] == ["5", "0 / 0"]
    assert "Data: Fashion-MNIST" in table
    assert "`kfac-repro bench keras --seeds 5`" in table


def test_results_of_another_scale_are_refused(tmp_path: Path) -> None:
    row = {**_run("tune", "kfac", 0, [1.0]), "scale": "full"}
    write_rows(tmp_path / "runs.csv", RUN_FIELDS, [row])
    result = CliRunner().invoke(cli.main, ["bench", "keras", "--tiny", "--only", "sequence", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "holds results of scale 'full', not 'tiny'" in result.output


def test_every_named_task_has_a_model_and_data() -> None:
    from kfac_repro.benchmarks.keras_suite.models import TASKS

    assert tuple(TASKS) == TASK_NAMES


def test_key_sequence_labels_follow_the_rule() -> None:
    from kfac_repro.benchmarks.keras_suite.models import KEYS, key_sequences

    x, y = key_sequences(7, 200)
    for tokens, label in zip(x.tolist(), y.tolist(), strict=True):
        bits = [any(tokens[i:i + 2] == list(key) for i in range(len(tokens) - 1)) for key in KEYS]
        assert label == 2 * bits[0] + bits[1]
    assert len(set(y.tolist())) == 4
    assert (key_sequences(7, 200)[0] == x).all()


@pytest.mark.slow  # 20-30 s; `make test-slow`
def test_bench_keras_tiny_end_to_end_and_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kfac_repro.benchmarks.keras_suite import models as keras_suite_models

    args = ["bench", "keras", "--tiny", "--only", "sequence", "--seeds", "2", "--out", str(tmp_path)]
    first = CliRunner().invoke(cli.main, args)
    assert first.exit_code == 0, first.output
    runs = read_rows(tmp_path / "runs.csv")
    assert sorted((r["phase"], r["optimizer"]) for r in runs) == sorted(
        [("tune", o) for o in DEFAULT_OPTIMIZERS] + [("final", o) for o in DEFAULT_OPTIMIZERS for _ in range(2)])
    for r in runs:  # the held-out curve only where it selects; the target curve everywhere
        assert len(r["target"].split()) == len(r["steps"].split()) > 2
        assert len(r["selection"].split()) == (len(r["steps"].split()) if r["phase"] == "tune" else 0)
    assert len(read_rows(tmp_path / "costs.csv")) == len(DEFAULT_OPTIMIZERS)
    assert len(read_rows(tmp_path / "suite.csv")) == 4 * len(DEFAULT_OPTIMIZERS)
    assert (tmp_path / "suite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_rows(tmp_path / "reached.csv")) == len(FRACTIONS) * len(DEFAULT_OPTIMIZERS) * 2
    assert "| sequence | 32 |" in (tmp_path / "suite.md").read_text()
    assert "[13/13] sequence b32 cost in turns" in first.output

    calls: list[tuple] = []
    real = keras_suite_models.train_run
    monkeypatch.setattr(keras_suite_models, "train_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(keras_suite_models, "time_steps", lambda *a, **k: pytest.fail("cost timed again"))
    again = CliRunner().invoke(cli.main, args)
    assert again.exit_code == 0, again.output
    assert calls == [] and "13 jobs (13 done" in again.output
    write_rows(tmp_path / "runs.csv", RUN_FIELDS, runs[:-1])  # as if stopped during the last run
    resumed = CliRunner().invoke(cli.main, args)
    assert resumed.exit_code == 0, resumed.output
    last = runs[-1]
    assert [(c[1], c[3]) for c in calls] == [(last["optimizer"], int(last["seed"]))]
    assert read_rows(tmp_path / "runs.csv")[:-1] == runs[:-1]
    assert read_rows(tmp_path / "runs.csv")[-1]["target"] == last["target"]  # the same seed, the same run


def test_eager_metric_equals_keras_evaluate() -> None:
    import keras
    import numpy as np

    from kfac_repro.benchmarks.keras_suite.models import _compiled, _metric, key_sequences

    x, y = key_sequences(3, 300)
    model = _compiled("sequence", "adamw", {"learning_rate": 1e-3}, 0, 0.25)
    found = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert _metric("sequence", model, (x, y), chunk=128) == pytest.approx(1 - found["accuracy"], abs=1e-6)
    pixels = np.random.default_rng(0).random((300, 784)).astype("float32")
    model = _compiled("autoencoder", "sgd", {"learning_rate": 0.1}, 0, 0.05)
    found = model.evaluate(pixels, pixels, batch_size=64, verbose=0, return_dict=True)
    assert _metric("autoencoder", model, (pixels, pixels), chunk=128) == pytest.approx(found["loss"], rel=1e-5)
    keras.backend.clear_session()


def test_a_batch_larger_than_the_data_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["bench", "keras", "--tiny", "--only", "sequence", "--batch", "512",
                                           "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "batch 512 is larger than the 256 training examples at scale 'tiny'" in result.output
    assert not (tmp_path / "runs.csv").exists()


def test_each_measured_run_is_reported_with_its_steps_and_seconds_to_each_target() -> None:
    runs, costs = _synthetic(kfac_ms=30.0)
    rows = per_run(runs, costs)
    assert len(rows) == len(FRACTIONS) * len(DEFAULT_OPTIMIZERS) * len(SEEDS)
    kfac = [r for r in rows if r["optimizer"] == "kfac" and r["fraction"] == "0.8"]
    assert [int(r["steps"]) for r in kfac] == [37, 43, 40, 45, 39]  # ceil(0.8 · 50e^noise)
    assert [float(r["seconds"]) for r in kfac] == pytest.approx([0.03 * s for s in (37, 43, 40, 45, 39)])
    assert {r["censored"] for r in rows} == {"0"}


@pytest.mark.fashion_mnist
def test_fashion_splits_hold_out_the_last_training_examples() -> None:
    from kfac_repro.benchmarks.keras_suite.models import TASKS
    from kfac_repro.data.fashion_mnist import load_fashion_mnist

    (x, y), (x_test, y_test) = load_fashion_mnist()
    train, val, target = TASKS["bn-cnn"].data(1, SCALES["tiny"])
    assert train[0].shape == (256, 28, 28, 1) and train[0].dtype == "float32"
    assert (train[0][5, :, :, 0] * 255 == x[5]).all() and (val[1] == y[-128:]).all()
    assert (target[0][:, :, :, 0] * 255 == x_test[:128]).all() and (target[1] == y_test[:128]).all()
    train, val, target = TASKS["autoencoder"].data(1, SCALES["tiny"])
    assert train[0].shape == (256, 784) and (train[1] == train[0]).all() and (val[1] == val[0]).all()
    assert (target[0] == train[0][:128]).all() and (val[0] * 255 == x[-128:].reshape(128, 784)).all()


@pytest.fixture
def fake_suite(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[list[str]]]:
    """The suite's training and cost timing replaced by stand-ins that record what they were asked: the optimizer
    of each run trained, and the optimizers of each cost timing."""
    from kfac_repro.benchmarks.keras_suite import models as keras_suite_models
    from kfac_repro.benchmarks.keras_suite.models import Curve

    trained: list[str] = []
    timed: list[list[str]] = []
    monkeypatch.setattr(keras_suite_models, "train_run", lambda task, optimizer, *rest, **kw: trained.append(optimizer)
                        or Curve([0, 1], [1.0, 0.5], [1.0, 0.5], 1, 0.0))
    monkeypatch.setattr(keras_suite_models, "time_steps", lambda task, settings, *rest, **kw: timed.append(
        sorted(settings)) or (dict.fromkeys(settings, 0.01), 10))
    return trained, timed


def test_a_suite_run_without_ekfac_adds_only_ekfac_s_runs_and_times_every_optimizer_again(
        tmp_path: Path, fake_suite: tuple[list[str], list[list[str]]]) -> None:
    trained, timed = fake_suite
    args = ["bench", "keras", "--tiny", "--only", "mlp", "--seeds", "1", "--out", str(tmp_path)]
    assert CliRunner().invoke(cli.main, args).exit_code == 0
    assert sorted(trained) == sorted(DEFAULT_OPTIMIZERS * 2) and timed == [sorted(DEFAULT_OPTIMIZERS)]
    trained.clear()
    result = CliRunner().invoke(cli.main, [*args, "--ekfac"])
    assert result.exit_code == 0, result.output
    assert trained == ["ekfac", "ekfac"] and timed[-1] == sorted((*DEFAULT_OPTIMIZERS, "ekfac"))
    assert sorted(r["optimizer"] for r in read_rows(tmp_path / "costs.csv")) == sorted((*DEFAULT_OPTIMIZERS, "ekfac"))
    assert {r["optimizer"] for r in read_rows(tmp_path / "suite.csv")} == {*DEFAULT_OPTIMIZERS, "ekfac"}


@pytest.mark.fashion_mnist
def test_the_cpu_scale_halves_only_the_convolutional_nets_and_trains_on_20000_examples() -> None:
    from kfac_repro.benchmarks.keras_suite.models import TASKS

    cpu, full = SCALES["cpu"], SCALES["full"]
    assert cpu.description.startswith("20000 training examples, 5 epochs, 20 evaluations per run, bn-cnn and resnet "
                                      "at width 0.5 (about 6 hours")  # --help's words, from the fields
    for task in TASK_NAMES:
        narrow, wide = (TASKS[task].build(s.width_of(task)).count_params() for s in (cpu, full))
        assert (narrow < wide / 3) if task in ("bn-cnn", "resnet") else (narrow == wide), task
    for task in ("mlp", "autoencoder", "sequence"):
        train, val, target = TASKS[task].data(0, cpu)
        assert len(train[0]) == 20_000 and len(val[0]) == len(target[0]) == 5000, task


def test_no_timing_trains_every_run_and_a_later_call_times_the_costs_without_training(
        tmp_path: Path, fake_suite: tuple[list[str], list[list[str]]]) -> None:
    trained, timed = fake_suite
    args = ["bench", "keras", "--tiny", "--only", "mlp", "--seeds", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli.main, [*args, "--no-timing"])
    assert result.exit_code == 0, result.output
    assert sorted(trained) == sorted(DEFAULT_OPTIMIZERS * 2) and timed == []
    assert "[8/8]" in result.output and not (tmp_path / "costs.csv").exists()
    assert read_rows(tmp_path / "suite.csv") == []
    trained.clear()
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert trained == [] and timed == [sorted(DEFAULT_OPTIMIZERS)]
    assert "9 jobs (8 done" in result.output
    assert {r["optimizer"] for r in read_rows(tmp_path / "suite.csv")} == set(DEFAULT_OPTIMIZERS)


def test_a_variant_that_never_gets_far_leaves_the_targets_and_the_others_rows_alone() -> None:
    runs, costs = _synthetic(kfac_ms=30.0)
    without = summarise(runs, costs)
    runs += [_run("tune", "kfac-amortised", 0, _line(100.0))]
    runs += [_run("final", "kfac-amortised", seed, [1.0] + [0.6] * 300) for seed in SEEDS]  # stuck at 0.6
    costs += [{**costs[0], "optimizer": "kfac-amortised", "ms_per_step": "11"}]
    suite = summarise(runs, costs)
    assert [r for r in suite if r["optimizer"] != "kfac-amortised"] == without
    amortised = [r for r in suite if r["optimizer"] == "kfac-amortised"]
    assert [r["censored"] for r in amortised] == ["5"] * len(FRACTIONS)  # censored at its budget, every seed
    assert "| K-FAC amortised setting |" in markdown_table(suite, "c")


@pytest.mark.parametrize(("flag", "variant", "settings"), [
    ("--ekfac", "ekfac", {"eigenvalue_correction": True}),
    ("--amortised", "kfac-amortised", {"stats_every": 10, "inverse_every": 50})])
def test_each_variant_is_k_fac_with_its_settings_on_k_fac_s_grid_and_runs_only_when_asked(
        tmp_path: Path, fake_suite: tuple[list[str], list[list[str]]], flag: str, variant: str,
        settings: dict[str, object]) -> None:
    import keras

    from kfac_repro.benchmarks.keras_suite.models import make_optimizer, readme_mlp

    assert GRIDS[variant] == GRIDS["kfac"]
    optimizer = make_optimizer(variant, {"damping": 1.0, "kl_clip": 0.001}, readme_mlp())
    assert {key: getattr(optimizer.config, key) for key in settings} == settings
    assert (optimizer.config.damping, optimizer.config.kl_clip) == (1.0, 0.001)
    plain = make_optimizer("kfac", {"damping": 1.0, "kl_clip": 0.001}, readme_mlp())
    assert {key: getattr(plain.config, key) for key in settings} != settings
    keras.backend.clear_session()
    trained, _ = fake_suite
    args = ["bench", "keras", "--tiny", "--only", "mlp", "--seeds", "1", "--out", str(tmp_path)]
    assert CliRunner().invoke(cli.main, [*args, flag]).exit_code == 0
    assert sorted(trained) == sorted([*DEFAULT_OPTIMIZERS, variant] * 2)


def test_evaluations_are_dense_early_and_even_later() -> None:
    from kfac_repro.benchmarks.keras_suite.plan import evaluation_steps

    for steps, evals in ((780, 20), (95, 20), (3900, 40), (16, 4)):
        found = evaluation_steps(steps, evals)
        assert found[0] == 1 and found[-1] == steps and len(found) <= evals
        assert found == sorted(set(found))
        late = [b - a for a, b in zip(found[-evals // 2:], found[-evals // 2 + 1:], strict=False)]
        assert max(late) - min(late) <= 1  # the later half evenly spaced
    early = evaluation_steps(780, 20)[:10]
    assert early == [1, 2, 3, 4, 7, 11, 18, 30, 48, 78]  # 1 to 78 = 780/10 in equal ratios, rounded


def test_selection_compares_time_averages_whatever_the_evaluation_steps() -> None:
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 100]
    falling = _run("tune", "adamw", 0, [1 - s / 100 for s in steps], "learning_rate=0.01")  # time-average 0.5
    flat = _run("tune", "adamw", 0, [0.6] * len(steps), "learning_rate=0.001")  # 0.6, below the other's mean 0.75
    for row in (falling, flat):
        row["steps"] = " ".join(map(str, steps))
    assert select([flat, falling], "mlp", 32, "adamw") == "learning_rate=0.01"


def test_cost_rounds_hold_whole_refresh_periods_of_every_k_fac_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds of 10 steps with inverses every 50 would leave the inversion out of most rounds' median."""
    from kfac_repro.benchmarks.keras_suite import models
    from kfac_repro.keras import KFAC

    fitted: list[int] = []

    class Compiled:  # what time_steps reads of a compiled model: its optimizer, and fit (here: the examples given)
        def __init__(self, optimizer: str, setting: dict) -> None:
            self.optimizer = KFAC(None, **models.KFAC_ARMS.get(optimizer, {}), **setting) if "kfac" in optimizer \
                else object()

        def fit(self, x: object, y: object, **_: object) -> None:
            fitted.append(len(x))  # type: ignore[arg-type]

    monkeypatch.setattr(models, "_compiled", lambda task, optimizer, setting, *rest: Compiled(optimizer, setting))
    monkeypatch.setattr(models, "_close", lambda model: None)
    seconds, steps = models.time_steps("mlp", {"kfac-amortised": GRIDS["kfac"][0], "adamw": GRIDS["adamw"][0]}, 32,
                                       SCALES["tiny"])
    assert steps == 50 and set(seconds) == {"kfac-amortised", "adamw"}
    assert set(fitted) == {32 * 50}  # every optimizer's every round: 50 steps of batch 32
    assert models.time_steps("mlp", {"adamw": GRIDS["adamw"][0]}, 32, SCALES["tiny"])[1] == SCALES["tiny"].cost_steps


def test_k_fac_defaults_is_the_untuned_keras_optimizer_against_the_tuned_opponents(
        tmp_path: Path, fake_suite: tuple[list[str], list[list[str]]]) -> None:
    import keras

    from kfac_repro.benchmarks.keras_suite.models import make_optimizer, readme_mlp
    from kfac_repro.keras import KFAC

    made = make_optimizer("kfac-defaults", {}, readme_mlp())
    assert made.config == KFAC(None).config  # KERAS_DEFAULTS, nothing else
    keras.backend.clear_session()
    # the suite's other K-FAC arms keep the periods they ran with, whatever the Keras defaults become
    every_step = make_optimizer("kfac", {"damping": 1.0, "kl_clip": 0.01}, readme_mlp()).config
    assert (every_step.stats_every, every_step.inverse_every, every_step.damping) == (1, 10, 1.0)
    keras.backend.clear_session()
    ekfac = make_optimizer("ekfac", {"damping": 1.0, "kl_clip": 0.01}, readme_mlp()).config
    assert (ekfac.eigenvalue_correction, ekfac.stats_every, ekfac.inverse_every) == (True, 10, 50)
    assert every_step.kl_clip_batch is None and ekfac.kl_clip_batch is None  # the grid's c at every batch
    keras.backend.clear_session()
    trained, _ = fake_suite
    args = ["bench", "keras", "--tiny", "--only", "mlp", "--seeds", "1", "--out", str(tmp_path), "--defaults"]
    assert CliRunner().invoke(cli.main, args).exit_code == 0
    assert trained.count("kfac-defaults") == 2  # its one setting on seed 0, then seed 1
    rows = read_rows(tmp_path / "runs.csv")
    assert {r["setting"] for r in rows if r["optimizer"] == "kfac-defaults"} == {""}
    table = (tmp_path / "suite.md").read_text()
    assert "| K-FAC defaults setting |" in table and "| mlp | 32 |" in table and "| defaults |" in table


def test_the_eta_takes_each_task_and_batch_at_its_own_jobs_mean() -> None:
    from kfac_repro.benchmarks.keras_suite.run import _Progress

    lines: list[str] = []
    progress = _Progress({("mlp", "128"): 2, ("bn-cnn", "128"): 3}, 4, lines.append)
    progress.finish("a", 10.0, ("mlp", "128"))
    assert lines[-1] == "[5/9] a: 10 s; ETA 40 s (tasks not run yet taken at this session's mean job)"
    progress.finish("b", 100.0, ("bn-cnn", "128"))
    assert lines[-1] == "[6/9] b: 100 s; ETA 4 min"  # 1 × 10 s + 2 × 100 s = 210 s


def test_bn_statistics_recomputed_before_every_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    from kfac_repro.benchmarks.keras_suite import models as keras_suite_models

    seen: list[tuple[int, list[int]]] = []
    real = keras_suite_models.recompute_batch_norm_statistics

    def recompute(model, batches):  # type: ignore[no-untyped-def]
        layers = real(model, batches)
        seen.append((layers, [len(b) for b in batches]))
        return layers

    monkeypatch.setattr(keras_suite_models, "recompute_batch_norm_statistics", recompute)
    curve = keras_suite_models.train_run("bn-cnn", "sgd", {"learning_rate": 0.01}, 1, 32, SCALES["tiny"])
    size = keras_suite_models.PRECISE_BN_SIZE
    assert seen == [(4, [size, size, 112])] * len(curve.steps)  # 4 BN layers; 2 tiny epochs: 512 examples


def test_a_setting_at_its_grids_edge_is_marked() -> None:
    from kfac_repro.benchmarks.keras_suite.results import grid_edge

    adamw = [_run("tune", "adamw", 0, [1.0, 0.1 * k], f"learning_rate={lr}") for k, lr in enumerate((1e-3, 1e-2, 0.1))]
    kfac = [_run("tune", "kfac", 0, [1.0, 0.1], f"damping={d} kl_clip={c}") for d in (0.1, 1.0) for c in (0.01, 0.001)]
    runs = adamw + kfac
    assert grid_edge(runs, "mlp", 32, "adamw", "learning_rate=0.001") == "learning_rate lowest"
    assert grid_edge(runs, "mlp", 32, "adamw", "learning_rate=0.01") == ""
    assert grid_edge(runs, "mlp", 32, "adamw", "learning_rate=0.1") == "learning_rate highest"
    assert grid_edge(runs, "mlp", 32, "kfac", "damping=1 kl_clip=0.01") == "damping highest, kl_clip highest"
    assert grid_edge(runs, "mlp", 32, "sgd", "") == ""  # no grid, no setting
    synthetic, costs = _synthetic(kfac_ms=30.0)
    row = next(r for r in summarise(synthetic, costs) if r["optimizer"] == "kfac")
    assert row["grid_edge"] == ""  # one tuning run per optimizer: a grid of one value
    table = markdown_table([{**row, "setting": "learning_rate=0.1 s=1", "grid_edge": "learning_rate highest"}]
                           + [r for r in summarise(synthetic, costs) if r["optimizer"] != "kfac"], "x")
    assert "| lr=0.1‡ s=1 |" in table and "marked ‡ is its grid's lowest or highest" in table
