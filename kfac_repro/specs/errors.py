"""The one error type of spec handling: it names the file, the field path, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path


class SpecError(ValueError):
    """A spec (or a --set override) is invalid. str(error) is 'FILE: FIELD: MESSAGE'."""

    def __init__(self, source: Path | str, field: str, message: str):
        self.source, self.field, self.message = str(source), field, message
        super().__init__(f"{self.source}: {field}: {message}" if field else f"{self.source}: {message}")
