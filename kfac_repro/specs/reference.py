"""docs/spec-format.md, generated from the schema table (a test checks the committed file is current)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kfac_repro.specs import schema

HEADER = """# Experiment spec format

Generated from `kfac_repro/specs/schema.py` by `kfac-repro validate --write-reference`; do not edit by hand.

A spec is a YAML file in `experiments/` (base specs in subfolders):

```yaml
name: cifar10-async              # required
figure: Fig. 2                   # the paper figure it reproduces
description: ...
extends: base/imagenet.yaml      # optional: deep-merged under this file (path relative to this file)
defaults: {model: ..., data: ..., training: ..., optimizer: ..., distribution: ...}
arms:                            # required, at least one: the curves of the figure
  ARM: {label: legend text, model: ..., optimizer: ..., ...}   # overrides of the defaults
profiles:                        # paper (default), cpu, smoke, or your own
  PROFILE: {description: ..., defaults: {...}, arms: {ARM: {...}}}
grid: {section.field: [v1, v2, ...]}   # optional: what `kfac-repro grid` searches
```

An arm resolves as defaults ← profile defaults ← arm ← profile arm overrides ← `--set section.field=value`.
Mappings merge key by key; lists and scalars replace; an optimizer section naming another optimizer replaces the
inherited one whole; `null` unsets an optimizer field. Unknown keys are errors. Every arm is checked in every
profile by `kfac-repro validate`.
"""


def _default(value: object) -> str:
    if value is schema.REQUIRED:
        return "required"
    return "null" if value is None else f"`{value}`"


def reference_text() -> str:
    lines = [HEADER]
    for section, fields in schema.SECTIONS.items():
        lines += [f"## `{section}`", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {f.expected()} | {_default(f.default)} | {f.doc} |" for name, f in fields.items()]
        lines.append("")
    for name, config_type in schema.OPTIMIZER_TYPES.items():
        lines += [f"## `optimizer` with `name: {name}`", "",
                  f"The fields of `{config_type.__name__}` (see the README's Library API), validated by it; "
                  "`seed` comes from `training.seed`.", "", "| field | default |", "|---|---|"]
        config_fields = [f for f in dataclasses.fields(config_type) if f.name != "seed"]
        lines += [f"| `{f.name}` | {_default(f.default)} |" for f in config_fields]
        lines += [f"| `{alias}` | null — in epochs instead of steps (converted with the data set's size) |"
                  for alias in schema.EPOCH_ALIASES[name]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def reference_path() -> Path:
    return Path(__file__).resolve().parents[2] / "docs" / "spec-format.md"
