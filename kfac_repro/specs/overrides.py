"""`--set SECTION.FIELD=VALUE` overrides (and grid axes, which use the same paths): parsed, the value read as a
YAML scalar, and checked against the schema like a field written in a spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfac_repro.specs import schema
from kfac_repro.specs.errors import SpecError
from kfac_repro.specs.validation import check_section_layer, join, unknown_key_error
from kfac_repro.specs.yaml_source import parse_scalar

SOURCE = "--set"


@dataclass(frozen=True)
class Override:
    """One override: `section.field` set to `value` in every selected arm (an optimizer field: in the arms whose
    optimizer has it)."""

    section: str
    field: str
    value: Any

    @property
    def key(self) -> str:
        return f"{self.section}.{self.field}"

    def as_layer(self) -> dict[str, Any]:
        return {self.section: {self.field: self.value}}


def parse_override(text: str) -> Override:
    """'training.steps=100' → Override('training', 'steps', 100); SpecError (file '--set') if malformed."""
    key, separator, value = text.partition("=")
    if not separator:
        raise SpecError(SOURCE, key.strip(), "expected SECTION.FIELD=VALUE, e.g. training.steps=100")
    return parse_assignment(key.strip(), parse_scalar(value), SOURCE)


def parse_assignment(key: str, value: Any, path: Path | str, prefix: str = "") -> Override:
    """`key` ('section.field') set to `value`, checked; errors name `path` and the field under `prefix`."""
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise SpecError(path, join(prefix, key), "expected SECTION.FIELD=VALUE, e.g. training.steps=100")
    section, name = parts
    if section not in schema.ARM_SECTIONS:
        raise unknown_key_error(path, prefix, section, schema.ARM_SECTIONS)
    check_section_layer(section, {name: value}, path, join(prefix, section))
    return Override(section, name, value)
