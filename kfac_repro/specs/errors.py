"""The one error type of spec handling: it names the file, the field path, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path

MAX_MESSAGE = 300


class SpecError(ValueError):
    """A spec (or a --set override) is invalid.

    `path` is the spec file (or "--set" for an override), `field` the dotted field path ("" for the whole file),
    `message` what was expected and what was found; str(error) is 'PATH: FIELD: MESSAGE'.
    """

    def __init__(self, path: Path | str, field: str, message: str):
        if len(message) > MAX_MESSAGE:  # a value quoted from a huge file stays short
            message = message[:MAX_MESSAGE] + f"… ({len(message) - MAX_MESSAGE} more characters)"
        field = field if len(field) <= MAX_MESSAGE else field[:MAX_MESSAGE] + "…"
        self.path, self.field, self.message = str(path), field, message
        super().__init__(f"{self.path}: {field}: {message}" if field else f"{self.path}: {message}")
