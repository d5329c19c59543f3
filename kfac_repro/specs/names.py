"""Names in a spec that become directories of the results layout (spec, profile, arm, run ID, grid combination):
one safe character set, so that nothing is ever written outside the results root, and the prefix reserved for
grid searches."""

from __future__ import annotations

import re

GRID_PREFIX = "grid-"  # OUT/<spec>/<profile>/grid-<arm>/ holds a grid search of an arm: no arm name starts with it
MAX_NAME = 128
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,-]*")
SAFE_NAME_RULE = ("letters, digits and . _ - + = , only, starting with a letter, digit or _, no '..', "
                  f"at most {MAX_NAME} characters")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a directory name of the layout (None if it can)."""
    if not isinstance(name, str):
        return f"expected a string, found {type(name).__name__}"
    if not name or len(name) > MAX_NAME or not _SAFE.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 40 else name[:40] + "…"
        return f"{shown!r} cannot be a directory name: use {SAFE_NAME_RULE}"
    return None
