"""The command table of `kfac-repro`: each sub-command's module, attribute and one-line help, and the click group
that imports a sub-command's module only when it is invoked, so that `--help`, `list`, `show` and `validate`
answer at once without importing TensorFlow."""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line help shown by `kfac-repro --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("kfac_repro.commands.bench", "bench", "Benchmarks: arm costs, K-FAC's speed, Keras fit and suite."),
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


class LazyGroup(click.Group):
    """A click group whose sub-commands (`COMMANDS`) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
