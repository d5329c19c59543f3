"""Where experiment specs live: experiments/ at the repository root, or $KFAC_REPRO_EXPERIMENTS."""

from __future__ import annotations

import os
from pathlib import Path

from kfac_repro.specs.errors import SpecError

ENV_VAR = "KFAC_REPRO_EXPERIMENTS"


def experiments_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path(__file__).resolve().parents[2] / "experiments"


def spec_names() -> list[str]:
    """Names of the experiment specs (experiments/*.yaml; base specs live in subfolders)."""
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


def spec_tree(path: Path) -> Path:
    """The directory that a spec file and its `extends` chain must lie in once symlinks are resolved: the
    experiments directory for a spec in it, else the spec file's own directory."""
    experiments, parent = experiments_dir().resolve(), path.absolute().parent.resolve()
    return experiments if parent.is_relative_to(experiments) else parent


def spec_path(name_or_path: str) -> Path:
    """A spec file given by name (experiments/NAME.yaml) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise SpecError(candidate, "", "no such spec file")
        return candidate
    path = experiments_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(spec_names()) or "none"
        raise SpecError(name_or_path, "", f"unknown experiment; known experiments: {known}")
    return path
