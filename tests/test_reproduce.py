"""`kfac-repro reproduce`: its plan derived from the specs (grids, then every arm × seed, tuned arms with their grid's
best), states read from the results layout (done kept, partial resumed), the ETA arithmetic, the dry-run table
without TensorFlow, the child commands it starts, a stop, and a tiny real run."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from kfac_repro.distribute import interrupts
from kfac_repro.runner import layout, plan
from kfac_repro.runner.grid import combination_id, combinations
from kfac_repro.specs import ENV_VAR, SpecError, load_spec, spec_names

ROOT = Path(__file__).resolve().parents[1]


def fake_run(run_dir: Path, status: str, steps: int, logged: int) -> None:
    """A run directory as a run leaves it: run.json and metrics.csv rows up to step `logged`."""
    run_dir.mkdir(parents=True)
    layout.write_run_record(run_dir, {"status": status, "steps": steps})
    rows = "".join(f"{step},{step * 8},{step * 0.1}\n" for step in sorted({*range(0, logged, 2), logged}))
    (run_dir / layout.METRICS).write_text("step,examples,seconds\n" + rows)


def test_the_plan_has_every_spec_arm_and_seed_and_each_grid_before_its_tuned_arm(tmp_path: Path) -> None:
    jobs = plan.build(spec_names(), "cpu", tmp_path, "r")
    for name in spec_names():
        spec = load_spec(name, "cpu")
        own = [job for job in jobs if job.spec == name]
        grids = [job.arm for job in own if job.is_grid]
        assert grids == [arm for arm in spec.arms if spec.grid_for(arm)]
        for arm, config in spec.arms.items():
            seeds = [job.seed for job in own if job.arm == arm and not job.is_grid]
            assert seeds == list(range(config.training["seed"], config.training["seed"] + config.training["seeds"]))
            assert config.training["seeds"] >= 5  # every arm behind a verdict runs with 5 paired seeds
        for index, job in enumerate(own):
            assert job.tuned == (not job.is_grid and job.arm in spec.tuned)
            if job.tuned:  # its grid (its own, or the arm's it takes its best from) comes before it
                assert any(j.is_grid and j.arm == spec.tuned[job.arm] for j in own[:index])
    assert all(job.state == plan.TODO and job.left == job.updates * job.settings for job in jobs)
    fig2 = [job.describe() for job in jobs if job.spec == "cifar10-async"]
    assert fig2[:2] == ["cifar10-async grid-sync-gpu1 (6 settings)", "cifar10-async grid-sgd-bn (6 settings)"]
    assert "cifar10-async sgd-bn seed 2 (tuned)" in fig2 and "cifar10-async async-gpu4 seed 4 (tuned)" in fig2


def test_states_come_from_the_results_layout(tmp_path: Path) -> None:
    spec = load_spec("cifar10-async", "smoke")
    steps = spec.arms["sgd-bn"].training["steps"]
    fake_run(layout.run_dir(tmp_path, spec.name, "smoke", "async-gpu1", "r", 0), "complete", steps, steps)
    fake_run(layout.run_dir(tmp_path, spec.name, "smoke", "sync-gpu1", "r", 0), "interrupted", steps, 2)
    fake_run(layout.run_dir(tmp_path, spec.name, "smoke", "sync-gpu4", "r", 0), "diverged", steps, 2)
    fake_run(layout.run_dir(tmp_path, spec.name, "smoke", "async-gpu4", "r", 0), "complete", steps - 1, steps - 1)
    grid = layout.grid_dir(tmp_path, spec.name, "smoke", "sgd-bn")
    for combo in combinations(spec.grid_for("sgd-bn")):
        fake_run(layout.combination_run_dir(grid, combination_id(combo), spec.name, "smoke", "sgd-bn"), "complete",
                 steps, steps)
    (grid / layout.GRID_BEST).write_text(json.dumps({"params": {"optimizer.learning_rate": 0.1}}))
    costs = {spec.name: {arm: {"seconds_per_update": 1.0, "startup_seconds": 10.0} for arm in spec.arms}}
    states = {(job.arm, job.is_grid): (job.state, job.left, job.estimate)
              for job in plan.spec_jobs(spec, tmp_path, "r", costs)}
    assert states[("async-gpu1", False)] == (plan.DONE, 0, 0.0)
    assert states[("sync-gpu1", False)] == (plan.PARTIAL, steps - 2, 10.0 + steps - 2)
    assert states[("sync-gpu4", False)] == (plan.DIVERGED, 0, 0.0)  # a result: not trained again
    assert states[("async-gpu4", False)] == (plan.PARTIAL, 1, 11.0)  # complete at fewer updates: continued
    assert states[("sgd-bn", True)] == (plan.DONE, 0, 0.0)
    assert states[("sync-gpu1", True)] == (plan.TODO, 6 * steps, 6 * (10.0 + steps))
    assert states[("sgd-bn", False)] == (plan.TODO, steps, 10.0 + steps)


def test_eta_scales_the_estimates_by_the_measured_jobs() -> None:
    def job(left: int, estimate: float | None) -> plan.Job:
        return plan.Job("s", "a", 0, left, left, plan.TODO, estimate=estimate)

    remaining = [job(100, 50.0), job(200, 150.0)]
    assert plan.eta(remaining, []) == 200.0  # before any job finished: the plan's estimates
    assert plan.eta(remaining, [(job(10, 20.0), 30.0)]) == pytest.approx(300.0)  # jobs took 1.5× their estimates
    assert plan.eta([job(100, None)], [(job(10, 20.0), 30.0)]) == pytest.approx(300.0)  # 3 s per update measured
    assert plan.eta([job(100, None)], []) is None
    assert plan.clock(3725.4) == "1:02:05" and plan.clock(None) == "?"


def test_the_cost_table_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert plan.load_costs("cpu") == {}
    (tmp_path / "costs").mkdir()
    (tmp_path / "costs" / "cpu.yaml").write_text("spec: {arm: {seconds_per_update: 0.5}}\n")
    with pytest.raises(ValueError, match=r"spec\.arm: expected \{seconds_per_update: s, startup_seconds: t\}"):
        plan.load_costs("cpu")


def test_every_cpu_arm_has_a_measured_cost() -> None:
    costs = plan.load_costs("cpu")
    for name in spec_names():
        assert set(costs[name]) == set(load_spec(name, "cpu").arms), name


def test_tuned_names_arms_that_have_a_grid(tmp_path: Path) -> None:
    def spec(extra: str) -> Path:
        path = tmp_path / "t.yaml"
        path.write_text(textwrap.dedent("""\
            name: t
            defaults:
              model: {name: cifar10_net, input_size: 16, num_classes: 10}
              data: {name: synthetic}
              training: {batch_size: 8, steps: 2}
              optimizer: {name: sgd}
            arms: {a: {}, b: {}}
            grid: {a: {optimizer.learning_rate: [0.1, 0.2]}}
            """) + extra)
        return path

    assert load_spec(str(spec("tuned: [a]\n"))).tuned == {"a": "a"}
    assert load_spec(str(spec("tuned: {a: a, b: a}\n"))).tuned == {"a": "a", "b": "a"}  # b takes a's best
    for extra, message in [("tuned: [b]\n", "arm 'b' has no grid"), ("tuned: [c]\n", "no arm named 'c'"),
                           ("tuned: {a: b}\n", "arm 'b' has no grid"), ("tuned: {c: a}\n", "no arm named 'c'"),
                           ("tuned: a\n", "expected a list of arm names or a mapping"),
                           ("tuned: {a: [b]}\n", "expected a list of arm names or a mapping")]:
        with pytest.raises(SpecError, match=message):
            load_spec(str(spec(extra)))


def test_dry_run_prints_the_plan_without_importing_tensorflow(tmp_path: Path) -> None:
    probe = ("import sys; from click.testing import CliRunner; import cli; "
             f"r = CliRunner().invoke(cli.main, ['reproduce', '--dry-run', '--out', {str(tmp_path)!r}]); "
             "print(r.output); assert 'tensorflow' not in sys.modules, 'TensorFlow imported'; sys.exit(r.exit_code)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "| spec | arm | seeds | updates | state | minutes |" in result.stdout
    assert "| cifar10-async | grid-sgd-bn | 6 settings × 1 |" in result.stdout
    assert "| cifar10-async | sgd-bn (tuned) | 0,1,2,3,4 |" in result.stdout
    total = len(plan.build(spec_names(), "cpu", tmp_path, "reproduce"))
    assert f"{total} jobs ({total} todo); estimated " in result.stdout and " h) on this machine" in result.stdout
    assert not tmp_path.joinpath("cifar10-async").exists()  # nothing written


def test_the_makefile_derives_its_targets_from_the_specs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "$(KFAC_REPRO) reproduce --profile cpu --out $(RESULTS)" in makefile
    assert "$(KFAC_REPRO) reproduce --profile cpu --only cifar10-async --out $(RESULTS)" in makefile
    assert "for arm in" not in makefile and "--tuned" not in makefile


def started_commands(monkeypatch: pytest.MonkeyPatch, codes: list[int]) -> list[list[str]]:
    """Replace the child processes by a record of their command lines, each exiting with the next code."""
    started: list[list[str]] = []
    monkeypatch.setattr(interrupts, "start_child", lambda command, **_: started.append(list(command)) or command)
    monkeypatch.setattr(interrupts, "wait_child", lambda child, grace: codes.pop(0))
    monkeypatch.setattr(interrupts, "install", lambda: None)
    return started


def test_done_jobs_are_kept_partial_ones_resumed_and_tuned_arms_tuned(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec("cifar10-async", "smoke")
    steps = spec.arms["sgd-bn"].training["steps"]
    fake_run(layout.run_dir(tmp_path, spec.name, "smoke", "async-gpu1", "r", 0), "complete", steps, steps)
    fake_run(layout.run_dir(tmp_path, spec.name, "smoke", "sync-gpu1", "r", 0), "interrupted", steps, 2)
    started = started_commands(monkeypatch, [0] * 6)
    result = CliRunner().invoke(cli.main, ["reproduce", "--profile", "smoke", "--only", "cifar10-async", "--out",
                                           str(tmp_path), "--run-id", "r"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(command[2:]) for command in started]
    assert len(lines) == 6  # 2 grids and 4 runs; async-gpu1 is complete
    assert lines[0].startswith("cli grid cifar10-async --arm sync-gpu1 --profile smoke --set training.seeds=1 "
                               "--parallel 2")
    assert not any("--arm async-gpu1" in line for line in lines)
    resumed = [line for line in lines if "--resume" in line]
    assert len(resumed) == 1 and "--arm sync-gpu1" in resumed[0] and "--seeds 0" in resumed[0]
    runs = [line for line in lines if line.startswith("cli run")]
    assert [line for line in lines if "--tuned" in line] == runs  # every arm: its own grid's best or sync-gpu1's
    assert "[3/7] cifar10-async async-gpu1 seed 0 (tuned): done, 0 updates left; elapsed" in result.output
    assert "[5/7] cifar10-async sync-gpu1 seed 0 (tuned): partial" in result.output
    assert "reproduce: 7 jobs, wall 0:00:0" in result.output and "(user+sys of this process and its children)" \
        in result.output


def test_a_stop_ends_after_the_interrupted_job_and_a_failure_is_reported(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    started = started_commands(monkeypatch, [])

    def stopped(child: object, grace: float) -> int:
        raise interrupts.Interrupted(15)

    monkeypatch.setattr(interrupts, "wait_child", stopped)
    args = ["reproduce", "--profile", "smoke", "--only", "googlenet-kl-decay", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 143 and len(started) == 1
    assert "interrupted (its state is saved); run the same command again to resume" in result.output
    assert "reproduce: 0 jobs, wall" in result.output
    started = started_commands(monkeypatch, [1, 0, 0, 0])
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 1 and len(started) == 4  # two grids, then each arm's seed 0
    assert "error: failed: googlenet-kl-decay grid-decay-kl (6 settings) (exit 1)" in result.output
    entries = [json.loads(line) for line in (tmp_path / layout.REPRODUCE_LOG).read_text().splitlines()]
    assert [(e["outcome"], e["jobs"], e["profile"], e["run_id"]) for e in entries] == [
        ("stopped", 0, "smoke", "reproduce"), *(("running", n, "smoke", "reproduce") for n in range(1, 5)),
        ("failed", 4, "smoke", "reproduce")]  # a line after every job
    assert len({e["invocation"] for e in entries[1:]}) == 1 and entries[0]["invocation"] != entries[1]["invocation"]
    assert f"all 2 invocation(s) into {tmp_path} (profile smoke, run id reproduce): wall 0:00:0" in result.output
    with (tmp_path / layout.REPRODUCE_LOG).open("a") as log:  # a line cut short by a crash, and another run id
        log.write('{"profile": "smo\n' + json.dumps({**entries[0], "run_id": "other", "cpu_seconds": 3600}) + "\n")
    started_commands(monkeypatch, [0] * 4)
    result = CliRunner().invoke(cli.main, args)
    assert f"all 3 invocation(s) into {tmp_path} (profile smoke, run id reproduce)" in result.output
    assert "CPU time 1:00:0" not in result.output  # the other run id's hour is not counted
    with (tmp_path / layout.REPRODUCE_LOG).open("a") as log:  # an invocation killed outright after its first job
        log.write(json.dumps({**entries[1], "invocation": "killed", "cpu_seconds": 7200, "wall_seconds": 7200}) + "\n")
    started_commands(monkeypatch, [0] * 4)
    result = CliRunner().invoke(cli.main, args)
    assert f"all 5 invocation(s) into {tmp_path} (profile smoke, run id reproduce): wall 2:00:" in result.output
    assert "CPU time 2:00:" in result.output.split("all 5 invocation(s)")[1]


def test_unknown_only_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli.main, ["reproduce", "--only", "nope", "--dry-run"])
    assert result.exit_code == 2 and "--only: unknown spec nope" in result.output


@pytest.mark.slow
def test_a_tiny_reproduction_runs_and_a_rerun_keeps_it(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cli", "reproduce", "--profile", "smoke", "--only", "googlenet-kfc-vs-cheap",
               "--out", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=ROOT)  # a grid of 6, 2 arms
    assert first.returncode == 0, first.stdout + first.stderr
    for arm in ("kfc", "cheap"):
        assert layout.run_status(layout.run_dir(tmp_path, "googlenet-kfc-vs-cheap", "smoke", arm, "reproduce", 0)
                                 ) == "complete"
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 0 and again.stdout.count(": done, 0 updates left") == 3  # the grid and both arms
    assert "reproduce: 3 jobs, wall 0:00:0" in again.stdout
