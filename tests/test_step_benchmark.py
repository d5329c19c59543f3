"""`bench step --model mlp`: K-FAC's update as it trains (float32 and bfloat16 products) against SGD's, every figure
printed as a ratio; `bench async`: asynchronous and synchronous refresh against never inverting."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import cli
from kfac_repro.benchmarks import step_time
from kfac_repro.kfac import KFAC


def test_update_times_split_the_steps_that_refresh_the_inverses(monkeypatch: pytest.MonkeyPatch) -> None:
    refreshed_at: list[int] = []
    real = KFAC._set_source

    def recording(self: KFAC, at: int) -> None:
        refreshed_at.append(at)
        real(self, at)

    monkeypatch.setattr(KFAC, "_set_source", recording)
    timings = step_time.measure_update_times(lambda: step_time.deep_mlp((6, 5, 4, 3)), (6,), 3, 8,
                                             inverse_every=3, repeats=4, warmup=1)
    rows = ["update without inversion", "update with inversion", "amortised (inverses every 3)"]
    assert [t.what for t in timings] == ["SGD update, momentum 0.9", *(f"K-FAC {row}" for row in rows),
                                         *(f"K-FAC, bfloat16 products, {row}" for row in rows)]
    assert timings[0].ratio == 1.0
    assert all(t.seconds > 0 and t.ratio == pytest.approx(t.seconds / timings[0].seconds) for t in timings)
    # per variant: the initial inversion and the warm-up refresh at 3; then two timed periods (steps 4–9), the
    # variants in turns, refreshing at 6 and 9
    assert refreshed_at == [0, 3, 0, 3, 6, 6, 9, 9]


@pytest.mark.slow  # the benchmark's printing: the default run stays under its 10 minutes
def test_bench_step_mlp_prints_the_ratios() -> None:
    result = CliRunner().invoke(cli.main, ["bench", "step", "--model", "mlp", "--batch-size", "8", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    assert "MLP 784-1000-500-250-30-10 tanh, batch 8" in result.output
    for label in ("K-FAC", "K-FAC, bfloat16 products,"):
        for row in ("update without inversion", "update with inversion", "amortised"):
            assert f"{label} {row}" in result.output
    assert "arithmetic (counted): SGD 0.03 G multiply-adds" in result.output  # 27.7 M at batch 8
    assert "floor of K-FAC's update without inversion at those rates:" in result.output


@pytest.mark.slow  # the benchmark's printing: the default run stays under its 10 minutes
def test_bench_async_prints_each_arm_against_never_inverting() -> None:
    result = CliRunner().invoke(cli.main, ["bench", "async", "--batch-size", "8", "--steps", "4"])
    assert result.exit_code == 0, result.output
    ratios = {}
    for line in result.output.splitlines():
        for arm in ("never inverting", "asynchronous inversion (free-running)", "synchronous inversion every 20"):
            if line.startswith(f"K-FAC, {arm}"):
                seconds, ratio = (float(v) for v in line[52:].split()[:2])
                assert seconds > 0
                ratios[arm] = ratio
    assert ratios["never inverting"] == 1.0 and len(ratios) == 3, result.output
    assert "async refresh interval achieved" in result.output and "(goal ≤ 1.05)" in result.output


def test_each_workers_share_of_the_divided_inversion_is_timed_alone() -> None:
    from kfac_repro.benchmarks.divided_inversion import shares_alone

    shares = shares_alone((1, 2, 4), repeats=1)
    assert {count: len(seconds) for count, seconds in shares.items()} == {1: 1, 2: 2, 4: 4}
    assert all(value > 0 for seconds in shares.values() for value in seconds)


@pytest.mark.fashion_mnist
def test_bench_fit_prints_kfac_against_adam_at_each_batch_size_from_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from kfac_repro.benchmarks import fit_time
    from kfac_repro.benchmarks.keras_suite.models import TASKS

    for name, task in TASKS.items():  # one definition of each model: the Keras suite's
        assert fit_time.MODELS[name].build.func is task.build and fit_time.MODELS[name].loss is task.loss
    timed: list[list[str]] = []
    real = fit_time.in_turns

    def recording(runs: dict, repeats: int, warmup: int) -> dict:
        timed.append(list(runs))
        return real(runs, repeats, warmup)

    monkeypatch.setattr(fit_time, "in_turns", recording)
    result = CliRunner().invoke(cli.main, ["bench", "fit", "--model", "mlp", "--batch-size", "16", "--batch-size", "4",
                                           "--steps", "2", "--epochs", "1", "--kfac", "stats_every=2 damping=1"])
    assert result.exit_code == 0, result.output
    assert timed == [[f"{arm}, batch {b}" for b in (4, 16)
                      for arm in ("K-FAC (defaults)", "K-FAC stats_every=2 damping=1", "Adam (1e-3)")]]  # same turns
    rows = [line.split() for line in result.output.splitlines() if line.startswith("mlp ")]
    assert [(row[1], row[2], row[3]) for row in rows] == [(b, *arm) for b in ("4", "16") for arm in (
        ("K-FAC", "(defaults)"), ("K-FAC", "stats_every=2"), ("Adam", "(1e-3)"))]
    assert all(float(row[-4]) > 0 for row in rows)  # ms per step
    assert all(float(low) <= float(row[-4]) <= float(high) for row in rows for low, high in [row[-3].split("-")])
    assert [row[-2] for row in rows if row[2] == "Adam"] == ["1.00", "1.00"]  # × Adam at the same batch size
    # the variant's losses differ from the defaults' (its settings reach the optimizer)
    losses = {(row[1], row[3]): float(row[-1]) for row in rows}
    assert losses["4", "stats_every=2"] != losses["4", "(defaults)"]


def test_bench_fit_cycles_a_training_split_shorter_than_its_epochs() -> None:
    """50 steps of batch 1024 need 51 200 examples; the sequence task generates 20 000 (it once refused to run)."""
    import numpy as np

    from kfac_repro.benchmarks import fit_time

    x, y = fit_time.MODELS["sequence"].data(20_005)
    assert len(x) == len(y) == 20_005
    np.testing.assert_array_equal(x[20_000:], x[:5])
    np.testing.assert_array_equal(y[20_000:], y[:5])
    assert len({row.tobytes() for row in x[:20_000]}) > 19_000  # the split itself, not a repetition of a few rows


@pytest.mark.parametrize(("text", "named"), [("stats_every", "KEY=VALUE"), ("stats_evry=2", "stats_evry"),
                                              ("stats_every=0", "stats_every"), ("max_step_size=1", "max_step_size")])
def test_bench_fit_refuses_a_bad_kfac_variant_before_training(text: str, named: str) -> None:
    result = CliRunner().invoke(cli.main, ["bench", "fit", "--model", "mlp", "--kfac", text])
    assert result.exit_code == 2
    assert "--kfac" in result.output and named in result.output
    assert "fitting" not in result.output


@pytest.mark.parametrize(("arms", "named"), [
    (["stats_every=2 damping=1", "damping=1 stats_every=2"], "another --kfac"),
    (["damping=1", "stats_every=2", "damping=1.0"], "another --kfac"),
    (["damping=1 stats_every=2 damping=0.1"], "damping given more than once")])
def test_bench_fit_refuses_two_arms_with_the_same_settings(arms: list[str], named: str) -> None:
    """Two arms with one label (or one settings dict) would leave one of them out of the table without a word."""
    options = [text for arm in arms for text in ("--kfac", arm)]
    result = CliRunner().invoke(cli.main, ["bench", "fit", "--model", "mlp", *options])
    assert result.exit_code == 2
    assert named in result.output
    assert "fitting" not in result.output


def test_whole_periods_rounds_up_to_a_common_multiple() -> None:
    assert [step_time.whole_periods(steps, (10, 4)) for steps in (1, 20, 21, 40, 41)] == [20, 20, 40, 40, 60]
    assert step_time.whole_periods(40, ()) == 40  # no periodic refresh: as asked


def test_bench_fit_times_whole_refresh_periods_of_every_k_fac_arm() -> None:
    from kfac_repro.benchmarks.fit_time import epoch_steps
    from kfac_repro.keras import KFAC

    assert KFAC(None, stats_every=4, inverse_every=6).refresh_period == 12
    assert epoch_steps(40, [{"inverse_every": 10, "stats_every": 1}, {"stats_every": 10, "inverse_every": 50}]) == 50
    assert epoch_steps(40, [{"inverse_every": 10, "stats_every": 1}]) == 40
    assert epoch_steps(40, [{}]) == 50  # the defaults: statistics every 10 steps, inverses every 50
