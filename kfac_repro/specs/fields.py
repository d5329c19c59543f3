"""One field of the spec schema, declared by its type, range, choices, default and meaning; it checks a value
and describes what it expects (the same words in error messages and in docs/spec-format.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfac_repro.kfac.config import Bounds, Setting
from kfac_repro.specs.errors import SpecError

REQUIRED: Any = object()  # the default of a field that must be given
_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list of strings"}


@dataclass(frozen=True)
class Field:
    """A field: `kind` (int, float, bool, str or list of str), `doc`, `default` (REQUIRED if it must be given),
    `choices`, bounds (`minimum`/`maximum` inclusive, `above`/`below` exclusive), `nullable` (null is a value);
    `epochs_of`: this field gives field `epochs_of` in epochs, converted to steps when an arm is resolved."""

    kind: type
    doc: str
    default: Any = REQUIRED
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    nullable: bool = False
    epochs_of: str | None = None

    def __post_init__(self) -> None:
        if self.nullable and self.default is not None:
            raise ValueError("a nullable field defaults to null (null resets a field to its default)")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def expected(self) -> str:
        """What the field accepts, in words: 'a number in [0, 1)', 'one of kfac, sgd or null'."""
        text = "one of " + ", ".join(self.choices) if self.choices else _KINDS[self.kind] + self._range()
        return text + (" or null" if self.nullable else "")

    def _range(self) -> str:
        return Bounds(self.minimum, self.maximum, self.above, self.below).describe()

    def check(self, value: Any, path: Path | str, field: str) -> None:
        """SpecError naming `path` and `field` unless `value` fits (null always fits: it means the default)."""
        if value is None or self.accepts(value):
            return
        raise SpecError(path, field, f"expected {self.expected()}, found {value!r}")

    def accepts(self, value: Any) -> bool:
        if self.kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, self.kind)
        if not ok or (self.choices is not None and value not in self.choices):
            return False
        if self.kind in (int, float):
            return Bounds(self.minimum, self.maximum, self.above, self.below).admits(value)
        return True

    @classmethod
    def of_setting(cls, declared: Setting) -> Field:
        """The spec field of a library setting: the same default, bounds and meaning (a tuple of names is a
        YAML list)."""
        bounds = declared.bounds
        return cls(list if declared.kind is tuple else declared.kind, declared.doc, declared.default,
                   declared.choices, bounds.minimum, bounds.maximum, bounds.above, bounds.below, declared.nullable)
