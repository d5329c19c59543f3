"""From a spec file to resolved arms: `extends` (deep merge over the base spec), then for one profile each arm is
defaults ← profile defaults ← the arm ← the profile's arm overrides ← --set overrides, checked against the schema.

Merging is deep for mappings; lists and scalars replace. An optimizer section whose `name` differs from the one it
would merge into replaces it whole (K-FAC settings do not leak into an SGD arm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfac_repro.specs import schema
from kfac_repro.specs.catalogue import spec_path
from kfac_repro.specs.errors import SpecError
from kfac_repro.specs.yaml_source import parse_scalar, read_yaml

TOP_KEYS = ("name", "description", "figure", "extends", "defaults", "arms", "profiles", "grid")
PROFILE_KEYS = ("description", "defaults", "arms")
DEFAULT_PROFILE = "paper"


@dataclass(frozen=True)
class ArmConfig:
    """One resolved arm: every section complete and checked."""

    name: str
    label: str
    model: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    optimizer: dict[str, Any]
    distribution: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "model": self.model, "data": self.data, "training": self.training,
                "optimizer": self.optimizer, "distribution": self.distribution}


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec resolved for one profile."""

    name: str
    description: str
    figure: str
    profile: str
    profiles: tuple[str, ...]
    source: Path
    arms: dict[str, ArmConfig]
    grid: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "figure": self.figure, "profile": self.profile,
                "arms": {name: arm.to_dict() for name, arm in self.arms.items()}}


def load_spec(
    name_or_path: str, profile: str = DEFAULT_PROFILE, overrides: Sequence[str] = (), arms: Sequence[str] = ()
) -> ResolvedSpec:
    """Resolve a spec (by experiment name or file path) for `profile`, with `section.field=value` overrides
    applied to the selected `arms` (default: every arm; only the selected arms are resolved)."""
    path = spec_path(name_or_path)
    document = load_document(path)
    return resolve(document, path, profile, overrides, arms)


def load_document(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The spec's document with its `extends` chain merged in (base first), its own parts checked."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " → ".join(str(p) for p in (*chain, resolved))
        raise SpecError(path, "extends", f"cycle: {cycle}")
    document = read_yaml(path)
    _check_document(document, str(path))
    base_name = document.get("extends")
    if base_name is None:
        return document
    base_path = (path.parent / base_name) if not Path(base_name).is_absolute() else Path(base_name)
    if not base_path.is_file():
        raise SpecError(path, "extends", f"base spec {base_name!r} not found (looked for {base_path})")
    base = load_document(base_path, (*chain, resolved))
    merged = merge(base, {k: v for k, v in document.items() if k != "extends"})
    merged.pop("extends", None)
    return merged


def resolve(
    document: dict[str, Any], path: Path, profile: str, overrides: Sequence[str], selected: Sequence[str] = ()
) -> ResolvedSpec:
    source = str(path)
    for key in ("name", "arms"):
        if key not in document:
            raise SpecError(source, key, "required field missing")
    unknown = [a for a in selected if a not in document["arms"]]
    if unknown:
        raise SpecError(source, "arms", f"no arm named {', '.join(unknown)}; arms: {', '.join(document['arms'])}")
    profiles = dict(document.get("profiles") or {})
    profiles.setdefault(DEFAULT_PROFILE, {})
    if profile not in profiles:
        raise SpecError(source, "profiles", f"no profile {profile!r}; profiles: {', '.join(profiles)}")
    chosen = profiles[profile] or {}
    parsed = [_parse_override(text) for text in overrides]
    for (section, key), value in parsed:
        schema.check_partial_section(section, {key: value}, "--set", section)
    arms = {}
    used: set[tuple[str, str]] = set()
    for arm_name, arm in document["arms"].items():
        if selected and arm_name not in selected:
            continue
        layers = [document.get("defaults") or {}, chosen.get("defaults") or {}, arm or {},
                  (chosen.get("arms") or {}).get(arm_name) or {}]
        combined: dict[str, Any] = {}
        for layer in layers:
            combined = merge(combined, layer)
        for (section, key), value in parsed:
            optimizer_name = (combined.get("optimizer") or {}).get("name")
            if section == "optimizer" and optimizer_name in schema.OPTIMIZER_TYPES and key not in (
                    schema.optimizer_fields(optimizer_name)):
                continue  # e.g. optimizer.damping=… applies to the K-FAC arms only
            used.add((section, key))
            combined = merge(combined, {section: {key: value}})
        where = f"arms.{arm_name}" + (f" (profile {profile})" if profile != DEFAULT_PROFILE else "")
        complete = schema.check_arm(combined, source, where)
        arms[arm_name] = ArmConfig(name=arm_name, label=complete["label"] or arm_name,
                                   **{s: complete[s] for s in (*schema.SECTIONS, "optimizer")})
    for (section, key), _ in parsed:
        if (section, key) not in used:
            raise SpecError("--set", f"{section}.{key}", "no arm's optimizer has this field")
    return ResolvedSpec(name=document["name"], description=document.get("description", ""),
                        figure=document.get("figure", ""), profile=profile, profiles=tuple(profiles), source=path,
                        arms=arms, grid=dict(document.get("grid") or {}))


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in `top` replaces."""
    result = dict(base)
    for key, value in top.items():
        old = result.get(key)
        if key == "optimizer" and isinstance(old, Mapping) and isinstance(value, Mapping) and (
                value.get("name") not in (None, old.get("name"))):
            result[key] = dict(value)
        elif isinstance(old, Mapping) and isinstance(value, Mapping):
            result[key] = merge(old, value)
        else:
            result[key] = value
    return result


def _parse_override(text: str) -> tuple[tuple[str, str], Any]:
    key, separator, value = text.partition("=")
    parts = key.strip().split(".")
    if not separator or len(parts) != 2 or not all(parts):
        raise SpecError("--set", key.strip(), "expected SECTION.FIELD=VALUE, e.g. training.steps=100")
    section, name = parts
    if section not in (*schema.SECTIONS, "optimizer"):
        raise schema.unknown_key_error("--set", "", section, (*schema.SECTIONS, "optimizer"))
    return (section, name), parse_scalar(value)


def _check_document(document: dict[str, Any], source: str) -> None:
    """Unknown keys, types and ranges where they are written (completeness is checked per resolved arm)."""
    for key in document:
        if key not in TOP_KEYS:
            raise schema.unknown_key_error(source, "", key, TOP_KEYS)
    for key in ("name", "description", "figure", "extends"):
        if key in document and not isinstance(document[key], str):
            raise SpecError(source, key, f"expected a string, found {document[key]!r}")
    _check_arm_layer(document.get("defaults"), source, "defaults", allow_label=False)
    arms = document.get("arms")
    if arms is not None:
        if not isinstance(arms, Mapping) or not arms:
            raise SpecError(source, "arms", f"expected a non-empty mapping of arm names to settings, found {arms!r}")
        for name, arm in arms.items():
            _check_arm_layer(arm, source, f"arms.{name}", allow_label=True)
    profiles = schema.check_mapping(document.get("profiles") or {}, source, "profiles")
    for name, profile in profiles.items():
        profile = schema.check_mapping(profile or {}, source, f"profiles.{name}")
        for key in profile:
            if key not in PROFILE_KEYS:
                raise schema.unknown_key_error(source, f"profiles.{name}", key, PROFILE_KEYS)
        _check_arm_layer(profile.get("defaults"), source, f"profiles.{name}.defaults", allow_label=False)
        profile_arms = schema.check_mapping(profile.get("arms") or {}, source, f"profiles.{name}.arms")
        for arm_name, arm in profile_arms.items():
            if arms is not None and arm_name not in arms:
                raise SpecError(source, f"profiles.{name}.arms.{arm_name}",
                                f"no arm named {arm_name!r}; arms: {', '.join(arms)}")
            _check_arm_layer(arm, source, f"profiles.{name}.arms.{arm_name}", allow_label=True)
    if "grid" in document:
        grid = schema.check_mapping(document["grid"], source, "grid")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SpecError(source, f"grid.{key}", f"expected a non-empty list of values, found {values!r}")


def _check_arm_layer(value: Any, source: str, path: str, allow_label: bool) -> None:
    if value is None:
        return
    layer = schema.check_mapping(value, source, path)
    known = schema.ARM_KEYS if allow_label else schema.ARM_KEYS[1:]
    for key, item in layer.items():
        if key not in known:
            raise schema.unknown_key_error(source, path, key, known)
        if key == "label":
            if not isinstance(item, str):
                raise SpecError(source, f"{path}.label", f"expected a string, found {item!r}")
            continue
        schema.check_partial_section(key, item, source, f"{path}.{key}")
