"""Reading a spec file: YAML with duplicate keys rejected, and syntax errors reported with line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kfac_repro.specs.errors import SpecError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; SpecError for an unreadable file, bad YAML or a non-mapping document."""
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(path, "", f"cannot read the spec file ({error.strerror})") from error
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(path, "", f"invalid YAML: {where}{error.problem or error.context}") from error
    except yaml.YAMLError as error:
        raise SpecError(path, "", f"invalid YAML: {error}") from error
    if not isinstance(value, dict):
        raise SpecError(path, "", f"expected a mapping at the top level, found {_kind(value)}")
    return value


def parse_scalar(text: str) -> Any:
    """A --set value, read as a YAML scalar or flow collection ('0.1' → 0.1, 'null' → None, '[a, b]' → list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _kind(value: object) -> str:
    return "nothing (an empty file)" if value is None else f"a {type(value).__name__}"
