"""One field of the spec schema: a library `Setting` (kfac_repro/kfac/config.py: type, range, choices, default,
meaning; the one declaration of a value) worded for YAML (null, a list of strings), which may be required and may
give another field in epochs. It checks a value and describes what it expects (the same words in error messages
and in docs/spec-format.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kfac_repro.kfac.config import Setting
from kfac_repro.specs.errors import SpecError

REQUIRED: Any = object()  # the default of a field that must be given


@dataclass(frozen=True)
class Field(Setting):
    """A spec field: a `Setting` whose `default` may be REQUIRED; `epochs_of`: this field gives field `epochs_of`
    in epochs, converted to steps when an arm is resolved."""

    default: Any = REQUIRED
    epochs_of: str | None = None

    NULL: ClassVar[str] = "null"
    KINDS: ClassVar[dict[type, str]] = {**Setting.KINDS, tuple: "a list of strings"}

    def __post_init__(self) -> None:
        if self.nullable and self.default is not None:
            raise ValueError("a nullable field defaults to null (null resets a field to its default)")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def choices_text(self) -> str:
        return "one of " + ", ".join(self.choices or ())

    def check(self, value: Any, path: Path | str, field: str) -> None:
        """SpecError naming `path` and `field` unless `value` fits (null always fits: it means the default)."""
        if value is None or self.admits(value):
            return
        raise SpecError(path, field, f"expected {self.expected()}, found {value!r}")

    @classmethod
    def of_setting(cls, declared: Setting) -> Field:
        """The spec field of a library setting: the same declaration, in YAML's words."""
        return cls(**{item.name: getattr(declared, item.name) for item in dataclasses.fields(Setting)})
