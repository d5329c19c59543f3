"""Where data sets are looked for: the configured data directory, `$KFAC_REPRO_DATA`, system and Keras caches."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "KFAC_REPRO_DATA"


class DataNotFoundError(FileNotFoundError):
    """A data set is absent or unreadable; the message names every place looked at and what was expected."""


def data_root(data_dir: str | Path | None = None) -> Path:
    """The data directory: `data_dir` if given, else `$KFAC_REPRO_DATA`, else `~/.kfac_repro/data`."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path.home() / ".kfac_repro" / "data"


def candidate_dirs(name: str, data_dir: str | Path | None = None, extra: tuple[Path, ...] = ()) -> list[Path]:
    """Directories that may hold data set `name`, in search order: the data root, then `extra` (system/Keras)."""
    return [data_root(data_dir) / name, *extra]
