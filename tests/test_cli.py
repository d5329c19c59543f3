"""The CLI's entry point: --help and --version answer at once, without importing TensorFlow."""

import subprocess
import sys

PROBE = (
    "import sys; from click.testing import CliRunner; import cli; "
    "r = CliRunner().invoke(cli.main, {args!r}); print(r.output); "
    "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(r.exit_code)"
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))], capture_output=True, text=True,
                          timeout=60)


def test_help_lists_commands_without_importing_tensorflow() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "bench" in result.stdout and "Usage" in result.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert "kfac-repro, version 0.1.0" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "No such command" in result.stdout


def test_the_command_table_beside_the_commands_names_each_click_command() -> None:
    """Each entry of kfac_repro/commands/table.py resolves to the click command of that name, and --help lists it
    with its line."""
    import importlib

    import click

    from kfac_repro.commands.table import COMMANDS

    help_text = run_cli("--help").stdout
    for name, (module, attribute, line) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command) and command.name == name, name
        assert f"{name} " in help_text and line.split()[0] in help_text, name


def test_bench_keras_help_without_importing_tensorflow() -> None:
    result = run_cli("bench", "keras", "--help")
    assert result.returncode == 0, result.stderr
    assert "--only [mlp|bn-cnn|resnet|autoencoder|sequence]" in result.stdout
