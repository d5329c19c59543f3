"""Reading a spec file: UTF-8 YAML of plain mappings, lists and scalars, read strictly. Refused with a SpecError
naming the file: bytes that are not UTF-8 (Latin-1, UTF-16, binary), a file over 1 MiB, duplicate keys, keys that
are not scalars (`? [a, b]`), nesting deeper than 32 levels, and anchors/aliases (`&a`, `*a`: an alias bomb
expands exponentially); syntax errors are reported with line and column. Numbers in exponent form without a dot
(`1e-3`) are floats, as in YAML 1.2."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kfac_repro.specs.errors import SpecError

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.+=,-]{1,64}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases, deep nesting, and (below) duplicate and non-scalar keys."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed in "
                                              "a spec: write the values out (or use `extends`)", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain name or number, not a list or mapping", key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:  # a key is quoted only when it looks like a field name: the file may be no spec at all
            shown = repr(key) if _FIELD_NAME.fullmatch(str(key)) else "(not quoted)"
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 floats: 1e-3 and 1E5 are numbers (YAML 1.1, PyYAML's default, reads them as strings without a dot)
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
                                    list("-+0123456789."))


def read_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; SpecError for an unreadable file, bad YAML or a non-mapping document."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise SpecError(path, "", f"cannot read the spec file ({error.strerror})") from error
    if len(raw) > MAX_BYTES:
        raise SpecError(path, "", f"larger than {MAX_BYTES >> 20} MiB: not a spec file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(path, "", f"not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); "
                        "save the spec as UTF-8") from error
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
    """A --set value, read as a spec's values are ('0.1' → 0.1, '1e-3' → 0.001, 'null' → None, '[a, b]' → list);
    text that is not YAML stays text."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError:
        return text


def _kind(value: object) -> str:
    return "nothing (an empty file)" if value is None else f"a {type(value).__name__}"
