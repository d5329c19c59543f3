"""The `kfac-repro` command line.

Sub-commands live in `kfac_repro.commands.*` and are imported only when invoked, so that `--help`, `list`, `show`
and `validate` answer at once without importing TensorFlow.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's info lines drown the progress output

# name -> (module, attribute, one-line help shown by `kfac-repro --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("kfac_repro.commands.bench", "bench", "Benchmarks: step time against SGD, inversion time."),
    "list": ("kfac_repro.commands.specs", "list_specs",
             "Experiments, arms, profiles, and whether their data is present."),
    "show": ("kfac_repro.commands.specs", "show", "Show a resolved experiment spec."),
    "validate": ("kfac_repro.commands.specs", "validate", "Validate experiment spec files."),
    "run": ("kfac_repro.commands.run", "run", "Train the arms of an experiment."),
    "worker": ("kfac_repro.commands.run", "worker", "One worker process of a multi-worker run (TF_CONFIG)."),
    "grid": ("kfac_repro.commands.grid", "grid", "Grid-search an arm's settings and rank them."),
    "reproduce": ("kfac_repro.commands.reproduce", "reproduce",
                  "Every spec's grids and seeded runs in one profile, resumably, with progress and ETA."),
    "plot": ("kfac_repro.commands.plotting", "plot", "Regenerate the paper's figures from results/."),
    "report": ("kfac_repro.commands.plotting", "report", "Write the Markdown reproduction report."),
    "data": ("kfac_repro.commands.data", "data", "Data sets: list, verify, download, benchmark the input pipeline."),
}


def _package_version() -> str:
    try:
        return version("kfac-repro")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module_name, attribute, _ = _COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_package_version(), "--version", prog_name="kfac-repro")
def main() -> None:
    """Distributed K-FAC for TensorFlow 2 / Keras 3, and the reproduction of Ba, Grosse & Martens (ICLR 2017)."""
    from kfac_repro.distribute.interrupts import follow_parent

    follow_parent()  # a child of `run` or `grid` ends with its parent


if __name__ == "__main__":
    main()
