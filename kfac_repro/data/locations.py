"""Where data sets are looked for. A data directory chosen explicitly (a spec's `data_dir`, `--data-dir`, or
`$KFAC_REPRO_DATA`) is the only place looked at: data missing there is an error naming it, never a silent
fallback to another copy. Without one, ~/.kfac_repro/data is searched, then the system and Keras copies."""

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


def explicit_root(data_dir: str | Path | None = None) -> bool:
    """Whether the data root was chosen (`data_dir` or $KFAC_REPRO_DATA) rather than defaulted."""
    return data_dir is not None or bool(os.environ.get(ENV_VAR))


def candidate_dirs(name: str, data_dir: str | Path | None = None, extra: tuple[Path, ...] = ()) -> list[Path]:
    """Directories that may hold data set `name`, in search order: the data root, then `extra` (system/Keras
    copies) unless the root was chosen explicitly."""
    return [data_root(data_dir) / name, *(() if explicit_root(data_dir) else extra)]
