"""Resolving a spec for one profile into complete, checked arms.

Each arm is defaults ← profile defaults ← the arm ← the profile's overrides of that arm ← `--set` overrides,
merged deeply (merging.py) and then completed and checked against the schema (validation.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kfac_repro.specs import schema
from kfac_repro.specs.catalogue import spec_path
from kfac_repro.specs.document import load_document
from kfac_repro.specs.errors import SpecError
from kfac_repro.specs.merging import merge
from kfac_repro.specs.overrides import Override, parse_override
from kfac_repro.specs.validation import complete_arm

Section = Mapping[str, Any]


@dataclass(frozen=True)
class ArmConfig:
    """One resolved arm: `label` for the plot legend and its complete sections (read-only mappings, lists as
    tuples): model, data, training (with `steps`), optimizer (with `name`), distribution."""

    name: str
    label: str
    model: Section
    data: Section
    training: Section
    optimizer: Section
    distribution: Section

    def to_dict(self) -> dict[str, Any]:
        """{'label': …, 'model': {…}, …} as plain dicts and lists (what `show` prints and resolved.yaml records)."""
        return {"label": self.label, **{s: _plain(getattr(self, s)) for s in schema.ARM_SECTIONS}}


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec resolved for one profile: the experiment's identity, its source file and its arms."""

    name: str
    description: str
    figure: str
    profile: str
    profiles: tuple[str, ...]
    source: Path
    arms: dict[str, ArmConfig]
    grid: Mapping[str, Any] = field(default_factory=dict)  # {section.field: values} or {arm: {section.field: …}}
    tuned: Mapping[str, str] = field(default_factory=dict)  # arm → the arm whose grid's best it trains with
    # (`run --tuned`, by `kfac-repro reproduce`): itself, or another arm that differs only outside that grid

    def grid_for(self, arm: str) -> dict[str, list[Any]]:
        """The axes `kfac-repro grid` searches for the arm: its own grid (grid: {ARM: {...}}), else the shared one."""
        if any(isinstance(values, Mapping) for values in self.grid.values()):
            own: Mapping[str, Any] = self.grid.get(arm) or {}
            return {key: list(values) for key, values in own.items()}
        return {key: list(values) for key, values in self.grid.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "figure": self.figure, "description": self.description, "profile": self.profile,
                "source": str(self.source), "arms": {name: arm.to_dict() for name, arm in self.arms.items()}}


def load_spec(
    name_or_path: str, profile: str = schema.DEFAULT_PROFILE, overrides: Sequence[str] = (), arms: Sequence[str] = ()
) -> ResolvedSpec:
    """Resolve a spec (an experiment name from experiments/, or a file path) for `profile`, with
    'section.field=value' `overrides` applied to the selected `arms` (default: all; only those are resolved)."""
    path = spec_path(name_or_path)
    return resolve(load_document(path), path, profile, [parse_override(text) for text in overrides], arms)


def profile_names(document: Mapping[str, Any]) -> tuple[str, ...]:
    """The profiles of a (merged) document: 'paper' first, then the spec's own."""
    return tuple(dict.fromkeys((schema.DEFAULT_PROFILE, *(document.get("profiles") or {}))))


def resolve(
    document: Mapping[str, Any], path: Path, profile: str, overrides: Sequence[Override] = (),
    arms: Sequence[str] = (),
) -> ResolvedSpec:
    """The merged `document` of the spec at `path` resolved for `profile` (see the module docstring)."""
    for key in ("name", "arms"):
        if document.get(key) is None:
            raise SpecError(path, key, "required field missing")
    profiles = profile_names(document)
    if profile not in profiles:
        raise SpecError(path, "profiles", f"no profile {profile!r}; profiles: {', '.join(profiles)}")
    chosen = (document.get("profiles") or {}).get(profile) or {}
    known = ", ".join(document["arms"])
    for arm_name in chosen.get("arms") or {}:
        if arm_name not in document["arms"]:
            raise SpecError(path, f"profiles.{profile}.arms.{arm_name}", f"no arm named {arm_name!r}; arms: {known}")
    unknown = [a for a in arms if a not in document["arms"]]
    if unknown:
        raise SpecError(path, "arms", f"no arm named {', '.join(unknown)}; arms: {known}")
    used: set[str] = set()
    resolved = {name: _resolve_arm(document, name, profile, overrides, used, path)
                for name in document["arms"] if not arms or name in arms}
    for override in overrides:
        if override.key not in used:
            raise SpecError("--set", override.key, "no selected arm's optimizer has this field")
    spec = ResolvedSpec(name=document["name"], description=document.get("description", ""),
                        figure=document.get("figure", ""), profile=profile, profiles=profiles, source=path,
                        arms=resolved, grid=MappingProxyType(dict(document.get("grid") or {})),
                        tuned=MappingProxyType(_tuned(document.get("tuned") or ())))
    for arm_name, grid_arm in spec.tuned.items():
        for name in (arm_name, grid_arm):
            if name not in document["arms"]:
                raise SpecError(path, "tuned", f"no arm named {name!r}; arms: {known}")
        if not spec.grid_for(grid_arm):
            raise SpecError(path, "tuned", f"arm {grid_arm!r} has no grid to take its best settings from")
    return spec


def _tuned(tuned: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """`tuned` as arm → grid arm: a list names arms that take their own grid's best."""
    return dict(tuned) if isinstance(tuned, Mapping) else {arm: arm for arm in tuned}


def _resolve_arm(document: Mapping[str, Any], name: str, profile: str, overrides: Sequence[Override],
                 used: set[str], path: Path) -> ArmConfig:
    """One arm's layers merged and completed; adds the keys of the overrides that applied to `used`."""
    chosen = (document.get("profiles") or {}).get(profile) or {}
    layers = [document.get("defaults"), chosen.get("defaults"), document["arms"][name],
              (chosen.get("arms") or {}).get(name)]
    combined: dict[str, Any] = {}
    for layer in layers:
        combined = merge(combined, layer or {})
    for override in overrides:
        if _applies(override, combined):
            used.add(override.key)
            combined = merge(combined, override.as_layer())
    where = f"arms.{name}" + (f" (profile {profile})" if profile != schema.DEFAULT_PROFILE else "")
    complete = complete_arm(combined, path, where)
    return ArmConfig(name=name, label=complete["label"] or name,
                     **{s: _frozen(complete[s]) for s in schema.ARM_SECTIONS})


def _applies(override: Override, arm: Mapping[str, Any]) -> bool:
    """An optimizer field applies to the arms whose optimizer has it (optimizer.damping: the K-FAC arms)."""
    name = (arm.get("optimizer") or {}).get("name")
    if override.section != "optimizer" or name not in schema.OPTIMIZERS:
        return True
    return override.field in schema.section_fields("optimizer", name)


def _frozen(section: Mapping[str, Any]) -> Section:
    return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in section.items()})


def _plain(section: Section) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
