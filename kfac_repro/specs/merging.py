"""Deep merge of spec layers: mappings merge key by key; lists and scalars replace. An optimizer section naming
another optimizer replaces the inherited one whole, so K-FAC settings never leak into an SGD arm."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, recursively; neither is modified."""
    result = dict(base)
    for key, value in top.items():
        old = result.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping) and not _other_optimizer(key, old, value):
            result[key] = merge(old, value)
        else:
            result[key] = value
    return result


def _other_optimizer(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return key == "optimizer" and new.get("name") not in (None, old.get("name"))
