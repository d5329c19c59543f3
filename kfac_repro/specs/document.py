"""A spec document: its YAML read strictly, its structure checked where it is written, and its `extends` chain
(a base spec, path relative to the file) merged in underneath it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfac_repro.specs import names, schema
from kfac_repro.specs.catalogue import spec_tree
from kfac_repro.specs.errors import SpecError
from kfac_repro.specs.merging import merge
from kfac_repro.specs.overrides import parse_assignment
from kfac_repro.specs.validation import check_arm_layer, check_mapping, check_string, unknown_key_error
from kfac_repro.specs.yaml_source import read_yaml


def load_document(path: Path, chain: tuple[Path, ...] = (), tree: Path | None = None) -> dict[str, Any]:
    """The document of the spec at `path` with its bases merged in (base first); every file's own content is
    checked. `chain` holds the files that extend this one (to report a cycle); `tree` is the directory the spec and
    its bases must resolve into (catalogue.spec_tree: a symlink out of it, or a base outside it, is refused unread)."""
    tree = spec_tree(path) if tree is None else tree
    resolved = path.resolve()
    if not resolved.is_relative_to(tree):
        raise SpecError(path, "extends" if chain else "", f"resolves to {resolved}, outside {tree}: a spec and its "
                        "bases must be inside the experiments tree (a symlink out of it is not followed)")
    if resolved in chain:
        cycle = " → ".join(str(p) for p in (*chain, resolved))
        raise SpecError(path, "extends", f"cycle: {cycle}")
    document = read_yaml(path)
    check_document(document, path)
    base_name = document.pop("extends", None)
    if base_name is None:
        return document
    base_path = path.parent / base_name
    if base_path.suffix not in (".yaml", ".yml"):
        raise SpecError(path, "extends", f"expected a .yaml spec file, found {base_name!r}")
    if not base_path.is_file():
        raise SpecError(path, "extends", f"base spec {base_name!r} not found (looked for {base_path})")
    return merge(load_document(base_path, (*chain, resolved), tree), document)


def check_document(document: Mapping[str, Any], path: Path) -> None:
    """Unknown keys, types and ranges of one file, where they are written (a base spec may be partial;
    completeness is checked for each resolved arm)."""
    if not any(key in schema.TOP_KEYS for key in document):  # its keys are not quoted: it may be any file
        raise SpecError(path, "", f"not a spec file: none of its top-level keys is one of {', '.join(schema.TOP_KEYS)}")
    for key in document:
        if key not in schema.TOP_KEYS:
            raise unknown_key_error(path, "", key, schema.TOP_KEYS)
    for key in ("name", "description", "figure", "extends"):
        if key in document:
            check_string(document[key], path, key)
    if "name" in document:
        _check_dir_name(document["name"], path, "name")
    check_arm_layer(document.get("defaults"), path, "defaults", allow_label=False)
    arms = document.get("arms")
    if arms is not None:
        if not isinstance(arms, Mapping) or not arms:
            raise SpecError(path, "arms", f"expected a non-empty mapping of arm names to settings, found {arms!r}")
        for name, arm in arms.items():
            _check_dir_name(name, path, f"arms.{name}")
            if str(name).startswith(names.GRID_PREFIX):
                raise SpecError(path, f"arms.{name}", f"an arm name may not start with {names.GRID_PREFIX!r} "
                                "(reserved for grid searches in the results layout)")
            check_arm_layer(arm, path, f"arms.{name}", allow_label=True)
    profiles = check_mapping(document.get("profiles") or {}, path, "profiles")
    for name, profile in profiles.items():
        _check_dir_name(name, path, f"profiles.{name}")
        _check_profile(profile, arms, path, f"profiles.{name}")
    tuned = document.get("tuned") or []
    entries = list(tuned.items()) if isinstance(tuned, Mapping) else tuned if isinstance(tuned, list) else None
    if entries is None or not all(isinstance(e, str) or (isinstance(e, tuple) and all(isinstance(p, str) for p in e))
                                  for e in entries):
        raise SpecError(path, "tuned", f"expected a list of arm names or a mapping of arms to the arm whose grid "
                        f"they take, found {tuned!r}")
    grid = check_mapping(document.get("grid") or {}, path, "grid")
    for key, values in grid.items():
        if "." not in str(key) and isinstance(values, Mapping):  # one arm's own grid
            if arms is None or key not in arms:
                raise SpecError(path, f"grid.{key}", f"no arm named {key!r} for its grid")
            _check_axes(check_mapping(values, path, f"grid.{key}"), path, f"grid.{key}")
        else:
            _check_axes({key: values}, path, "grid")


def _check_axes(axes: Mapping[str, Any], path: Path, field: str) -> None:
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SpecError(path, f"{field}.{key}", f"expected a non-empty list of values, found {values!r}")
        for value in values:
            parse_assignment(str(key), value, path, field)
            _check_dir_name(f"{str(key).split('.')[-1]}={value}", path, f"{field}.{key}")


def _check_dir_name(name: object, path: Path, field: str) -> None:
    """Names that become directories of the results layout (spec, arms, profiles, grid combinations)."""
    problem = names.name_problem(name)
    if problem:
        raise SpecError(path, field, problem)


def _check_profile(value: Any, arms: Mapping[str, Any] | None, path: Path, field: str) -> None:
    profile = check_mapping(value or {}, path, field)
    for key in profile:
        if key not in schema.PROFILE_KEYS:
            raise unknown_key_error(path, field, key, schema.PROFILE_KEYS)
    if "description" in profile:
        check_string(profile["description"], path, f"{field}.description")
    check_arm_layer(profile.get("defaults"), path, f"{field}.defaults", allow_label=False)
    for arm_name, arm in check_mapping(profile.get("arms") or {}, path, f"{field}.arms").items():
        if arms is not None and arm_name not in arms:
            raise SpecError(path, f"{field}.arms.{arm_name}", f"no arm named {arm_name!r}; arms: {', '.join(arms)}")
        check_arm_layer(arm, path, f"{field}.arms.{arm_name}", allow_label=True)
