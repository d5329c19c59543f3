"""The command line of a child process, `python -m cli COMMAND ...`, built from the click command's own
parameters: a flag added to `run` or `worker` reaches the processes they start without another edit."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click


def child_command(command: click.Command, params: Mapping[str, Any]) -> list[str]:
    """The argv that runs `command` with `params` (its parameters by name, as click passes them). Parameters
    absent, None, False or empty are left out (the child's defaults apply); flags appear bare, repeatable options
    once per value."""
    line = [sys.executable, "-m", "cli", str(command.name)]
    for param in command.params:
        value = params.get(str(param.name))
        if value is None or value is False or value == ():
            continue
        if isinstance(param, click.Argument):
            line.append(str(value))
            continue
        flag = max(param.opts, key=len)
        if isinstance(param, click.Option) and param.is_flag:
            line.append(flag)
        elif param.multiple:
            line += [part for item in value for part in (flag, str(item))]
        else:
            line += [flag, str(value)]
    return line
