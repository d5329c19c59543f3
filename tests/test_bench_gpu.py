"""`kfac-repro bench gpu`: its table (written atomically, read back), its ratios, its time budget, and the command
end to end at tiny scale on the CPU (the device run itself needs a GPU)."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from kfac_repro.benchmarks.budget import Budget, BudgetSpent, run_measurements
from kfac_repro.benchmarks.gpu import table as gt

MODEL_QUANTITIES = (gt.SGD, gt.EVERY_STEP, gt.EVERY_STEP_BF16, gt.AMORTISED, gt.HOST_INVERSION,
                    gt.DEVICE_INVERSION, gt.PEAK_MEMORY)


def row(model: str, quantity: str, value: float | None, batch: int = 64) -> gt.Row:
    return gt.Row(model, batch, quantity, value, value, value, "seconds", 3)


def test_ratios_pair_quantities_of_one_model_and_batch_with_their_targets() -> None:
    rows = [row("resnet50", gt.SGD, 0.2), row("resnet50", gt.AMORTISED, 0.25), row("resnet50", gt.EVERY_STEP, 0.3),
            row("resnet50", gt.EVERY_STEP_BF16, 0.36), row("resnet50", gt.HOST_INVERSION, 4.0),
            row("resnet50", gt.DEVICE_INVERSION, 1.0), row("alexnet", gt.SGD, 0.1, batch=256),
            row("alexnet", gt.AMORTISED, 0.2, batch=256), row("alexnet", gt.AMORTISED, 0.5, batch=512),
            row("alexnet", gt.HOST_INVERSION, 2.0, batch=256), row("alexnet", gt.DEVICE_INVERSION, None, batch=256),
            gt.Row("product", 8192, gt.PRODUCT_F32, 4e14, None, None, "multiply-adds/s", 3),
            gt.Row("product", 8192, gt.PRODUCT_BF16, 8e14, None, None, "multiply-adds/s", 3)]
    found = {(r.model, r.batch_size, r.what): r for r in gt.ratios(rows)}
    assert set(found) == {("resnet50", 64, "K-FAC amortised / SGD"), ("resnet50", 64, "K-FAC stats every step / SGD"),
                          ("resnet50", 64, "device inversion / host inversion"),
                          ("resnet50", 64, "bfloat16 / float32 (K-FAC every step)"),
                          ("alexnet", 256, "K-FAC amortised / SGD"),
                          ("product", 8192, "bfloat16 / float32 (product time)")}
    amortised = found["resnet50", 64, "K-FAC amortised / SGD"]
    assert amortised.value == pytest.approx(1.25) and amortised.target == 1.3 and amortised.met
    assert found["alexnet", 256, "K-FAC amortised / SGD"].target is None  # the 1.3 target is ResNet-50's
    assert found["resnet50", 64, "device inversion / host inversion"].value == pytest.approx(0.25)
    bf16 = found["resnet50", 64, "bfloat16 / float32 (K-FAC every step)"]
    assert bf16.value == pytest.approx(1.2) and bf16.met is False and "not met" in bf16.text()
    assert found["product", 8192, "bfloat16 / float32 (product time)"].value == pytest.approx(0.5)  # rates inverted


def test_table_is_written_through_a_temporary_file_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "gpu" / "profile.csv"
    rows = [row("resnet50", gt.SGD, 0.125), gt.Row("resnet50", 64, gt.PEAK_MEMORY, None, None, None, "bytes", 1),
            gt.Row("alexnet", 256, gt.EVERY_STEP_BF16, None, None, None, "seconds", 0, "failed: not PD")]
    context = {"device": "NVIDIA H100", "driver": "550.1", "build": "TensorFlow 2.21.0; cuda_version=12",
               "scale": "full"}
    gt.write_rows(path, rows, context)
    assert [p.name for p in path.parent.iterdir()] == ["profile.csv"]
    with path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert tuple(records[0]) == gt.COLUMNS and records[1]["value"] == "n/a" and records[0]["device"] == "NVIDIA H100"
    table = gt.read_table(path)
    assert table.rows == rows and table.context["driver"] == "550.1" and table.context["scale"] == "full"
    assert table.get("resnet50", 64, gt.SGD) == rows[0] and table.get("resnet50", 32, gt.SGD) is None
    path.write_text(path.read_text().replace("0.125", "fast"))
    with pytest.raises(ValueError, match=r"profile\.csv, line 2: not a row of `bench gpu`"):
        gt.read_table(path)


def test_a_budget_reads_its_clock() -> None:
    now = [100.0]
    budget = Budget(10, clock=lambda: now[0])
    assert budget.left() == 10
    now[0] = 107.5
    assert budget.left() == 2.5
    now[0] = 120
    assert budget.left() == 0
    assert Budget(None).left() == float("inf")


def test_a_spent_budget_skips_the_measurements_left_and_keeps_those_done() -> None:
    now = [0.0]
    kept = []

    def measure(name: str, seconds: float) -> str:
        now[0] += seconds
        return name

    steps = [(n, lambda n=n, s=s: measure(n, s)) for n, s in (("a", 4), ("b", 7), ("c", 1), ("d", 1))]
    outcome = run_measurements(steps, Budget(10, clock=lambda: now[0]), lambda n, r: kept.append((n, r)))
    assert kept == [("a", "a"), ("b", "b")]  # b ends past the budget on this clock (no alarm rings on it)
    assert (outcome.measured, outcome.interrupted, outcome.skipped) == (["a", "b"], None, ["c", "d"])


def test_the_alarm_stops_a_measurement_when_the_budget_runs_out_and_restores_an_earlier_alarm() -> None:
    kept = []
    rang = []
    previous = signal.signal(signal.SIGALRM, lambda *_: rang.append(True))
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        start = time.monotonic()
        outcome = run_measurements([("quick", lambda: 1), ("slow", lambda: time.sleep(20)), ("never", lambda: 3)],
                                   Budget(0.5), lambda n, r: kept.append((n, r)))
        elapsed = time.monotonic() - start
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        handler = signal.getsignal(signal.SIGALRM)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert elapsed < 5 and kept == [("quick", 1)]
    assert (outcome.measured, outcome.interrupted, outcome.skipped) == (["quick"], "slow", ["never"])
    assert 25 < left <= 30 and handler is not None and not rang  # the earlier alarm re-armed, not rung
    with pytest.raises(BudgetSpent), Budget(0.0).enforced():
        pass


def test_an_error_raised_after_the_alarm_rang_is_the_budget_running_out() -> None:
    """Extension code that the alarm interrupts may hand back another error than BudgetSpent (seen: a SystemError
    from list internals when a measurement in TensorFlow was stopped); that measurement is interrupted, not failed.
    An error raised before any alarm stays itself."""

    def mangled() -> None:
        try:
            time.sleep(20)
        except BudgetSpent as spent:  # as C code that saw the exception and raised its own
            raise SystemError("bad argument to internal function") from spent

    outcome = run_measurements([("mangled", mangled), ("never", lambda: 1)], Budget(0.3), lambda n, r: None)
    assert (outcome.measured, outcome.interrupted, outcome.skipped) == ([], "mangled", ["never"])
    with pytest.raises(ValueError, match="its own"), Budget(30).enforced():
        raise ValueError("its own")


def test_bench_gpu_help_imports_no_tensorflow() -> None:
    probe = ("import sys; from click.testing import CliRunner; import cli; "
             "r = CliRunner().invoke(cli.main, ['bench', 'gpu', '--help']); print(r.output); "
             "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(r.exit_code)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--budget-s" in result.stdout and "--scale" in result.stdout


@pytest.mark.parametrize(("fitting", "expected", "tried"), [
    ({32, 64}, 64, [32, 64, 128]), ({32, 64, 128}, 128, [32, 64, 128]), (set(), None, [32]), ({64}, None, [32])])
def test_the_largest_batch_is_found_by_doubling_until_one_does_not_fit(fitting: set[int], expected: int | None,
                                                                      tried: list[int]) -> None:
    from kfac_repro.benchmarks.gpu.profile import largest_fitting

    calls = []

    def fits(batch: int) -> bool:
        calls.append(batch)
        return batch in fitting

    assert largest_fitting(16, 128, fits) == expected and calls == tried


@pytest.mark.slow  # 15 s; the default run keeps its table, ratio and budget tests, under its 10 minutes
def test_bench_gpu_runs_end_to_end_at_tiny_scale(tmp_path: Path) -> None:
    out = tmp_path / "gpu.csv"
    result = CliRunner().invoke(cli.main, ["bench", "gpu", "--scale", "tiny", "--model", "alexnet", "--repeats", "1",
                                           "--largest-batch", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = gt.read_table(out)
    assert table.context["device"].startswith("CPU (") and table.context["driver"] == "n/a"
    assert table.context["scale"] == "tiny" and "TensorFlow 2." in table.context["build"]
    assert "is_cuda_build=" in table.context["build"] and "tensor_float_32=True" in table.context["build"]
    found = {(r.model, r.batch_size, r.quantity): r for r in table.rows}
    assert set(found) == {("alexnet", 16, q) for q in MODEL_QUANTITIES} | {
        ("product", 256, gt.PRODUCT_F32), ("product", 256, gt.PRODUCT_BF16), ("bn-cnn", 16, gt.FIT_KFAC),
        ("bn-cnn", 16, gt.FIT_ADAM), ("alexnet", 32, gt.SGD), ("alexnet", 32, gt.AMORTISED),
        ("alexnet", 32, gt.PEAK_MEMORY)}  # tiny scale tries twice the batch at most, and a CPU fits it
    assert found["alexnet", 16, gt.PEAK_MEMORY].value is None  # n/a on a CPU
    for r in table.rows:  # measured, or failed with the reason in its note
        if r.note:
            assert r.note.startswith("failed: ") and r.value is None, r
        elif r.quantity != gt.PEAK_MEMORY:
            assert r.value is not None and r.value > 0, r
            assert r.low is None or r.high is None or r.low <= r.value <= r.high, r
    for r in (found["alexnet", 16, q] for q in (gt.SGD, gt.AMORTISED, gt.HOST_INVERSION, gt.DEVICE_INVERSION)):
        assert r.value is not None and r.value > 0 and r.repeats == 1
    assert result.stderr.count("] ") == 6 and "[2/6] bn-cnn fit" in result.stderr  # a progress line per measurement
    for what in ("K-FAC amortised / SGD", "device inversion / host inversion", "fit K-FAC / Adam",
                 "bfloat16 / float32 (product time)"):
        assert f"  {what}" in result.stdout
    amortised = [r for r in gt.ratios(table.rows) if r.what == "K-FAC amortised / SGD"]
    assert [r.batch_size for r in amortised] == [16, 32] and all(r.text() in result.stdout for r in amortised)
    assert f"wrote {out} ({len(table.rows)} rows)" in result.stdout and "ran out" not in result.stdout


def test_bench_gpu_stops_cleanly_when_its_budget_runs_out(tmp_path: Path) -> None:
    import kfac_repro.benchmarks.gpu.profile  # noqa: F401  (imported before the budget starts)

    out = tmp_path / "gpu.csv"
    result = CliRunner().invoke(cli.main, ["bench", "gpu", "--scale", "tiny", "--model", "alexnet", "--repeats", "1",
                                           "--budget-s", "2.5", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exc_info)
    table = gt.read_table(out)
    quantities = {r.quantity for r in table.rows}
    assert gt.PRODUCT_F32 in quantities and gt.PEAK_MEMORY not in quantities  # the first kept, the last not reached
    assert "the budget of 2.5 s ran out" in result.stdout and "alexnet, batch 16: peak device memory" in result.stdout
    assert f"wrote {out} ({len(table.rows)} rows)" in result.stdout
    assert not list(tmp_path.glob("*.tmp"))


def test_the_report_shows_full_scale_gpu_tables_and_names_unusable_ones(tmp_path: Path) -> None:
    from kfac_repro.plotting.report import report_text

    assert "on a GPU" not in report_text(tmp_path)
    context = {"time_utc": "2026-12-08T10:00:00+00:00", "commit": "abc123", "device": "NVIDIA H100 80GB HBM3",
               "driver": "550.54", "tensorflow": "2.21.0", "build": "TensorFlow 2.21.0; cuda_version=12.5.1"}
    rows = [row("resnet50", gt.SGD, 0.1), row("resnet50", gt.AMORTISED, 0.14),
            gt.Row("resnet50", 64, gt.EVERY_STEP_BF16, None, None, None, "seconds", 0, "failed: not PD"),
            gt.Row("resnet50", 64, gt.PEAK_MEMORY, 2.5e10, 2.5e10, 2.5e10, "bytes", 1)]
    gt.write_rows(tmp_path / "gpu" / "20261208T100000Z-full.csv", rows, {**context, "scale": "full"})
    gt.write_rows(tmp_path / "gpu" / "20261208T090000Z-tiny.csv", [row("alexnet", gt.SGD, 0.5, batch=16)],
                  {**context, "scale": "tiny"})
    (tmp_path / "gpu" / "broken.csv").write_text("model,batch_size\nresnet50,many\n")
    text = report_text(tmp_path)
    section = text[text.index("## The paper profile on a GPU"):]
    assert "`20261208T100000Z-full.csv`: NVIDIA H100 80GB HBM3, driver 550.54, commit abc123" in section
    assert "cuda_version=12.5.1" in section
    assert "| resnet50 | 64 | sgd_update | 0.1 [0.1, 0.1] | seconds | 3 |" in section
    assert f"| resnet50 | 64 | {gt.EVERY_STEP_BF16} (failed: not PD) | n/a | seconds | 0 |" in section
    assert "| resnet50 | 64 | K-FAC amortised / SGD | 1.400 | ≤ 1.3: not met |" in section
    assert "`broken.csv` left out: " in section and "line 2" in section
    assert "tiny" not in section and "alexnet" not in section  # tests' tables are not the paper profile's


def test_bench_gpu_refuses_an_out_it_cannot_write_before_measuring(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "gpu.csv"  # a directory that is a file
    result = CliRunner().invoke(cli.main, ["bench", "gpu", "--scale", "tiny", "--out", str(out)])
    assert result.exit_code == 1 and f"--out {out}: cannot write there" in result.output
    assert "[1/" not in result.output  # nothing measured
