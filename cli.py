"""The `kfac-repro` command line: the entry point. The sub-commands and their table live in `kfac_repro.commands`
(`commands.table`), each imported only when invoked."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

from kfac_repro.distribute import interrupts

if sys.argv[1:2] == ["worker"]:  # before numpy or TensorFlow start threads, which inherit the blocked signals
    interrupts.hold()  # a cluster worker's stop signals stay pending until it trains: distribute/rendezvous.py

import click

from kfac_repro.commands.table import LazyGroup

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's info lines drown the progress output


def _package_version() -> str:
    try:
        return version("kfac-repro")
    except PackageNotFoundError:
        return "unknown (not installed)"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_package_version(), "--version", prog_name="kfac-repro")
def main() -> None:
    """Distributed K-FAC for TensorFlow 2 / Keras 3, and the reproduction of Ba, Grosse & Martens (ICLR 2017)."""
    interrupts.follow_parent()  # a child of `run` or `grid` ends with its parent


if __name__ == "__main__":
    main()
