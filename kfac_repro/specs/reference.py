"""docs/spec-format.md, generated from the schema tables, whose optimizer tables derive from the library's config
dataclasses (a test checks the committed file is current)."""

from __future__ import annotations

from pathlib import Path

from kfac_repro.specs import schema
from kfac_repro.specs.fields import Field

HEADER = """# Experiment spec format

Generated from `kfac_repro/specs/schema.py`, whose optimizer fields derive from the settings declared in
`kfac_repro/kfac/config.py`, by `kfac-repro validate --write-reference`; do not edit by hand.

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
grid: {ARM: {section.field: [v1, ...]}}  # optional: what `kfac-repro grid --arm ARM` searches (or one shared
                                       # grid for every arm: {section.field: [v1, ...]})
tuned: [ARM, ...]                # optional: arms trained with their grid's best settings (`run --tuned`), or
                                 # {ARM: GRID_ARM, ...}: ARM trains with GRID_ARM's grid's best (for arms that
                                 # differ only outside that grid, e.g. the same K-FAC on 1 and 4 workers)
```

`kfac-repro reproduce --profile P` derives its plan from these fields: for each spec, the grid of every arm that
has one (one seed per setting), then every arm once per seed (`training.seeds` seeds from `training.seed`), the
arms named in `tuned` with the best settings of their grid (or of the arm `tuned` maps them to), which must exist.

An arm resolves as defaults ← profile defaults ← arm ← profile arm overrides ← `--set section.field=value`
(`kfac-repro show NAME --profile P` prints the result). Mappings merge key by key; lists and scalars replace; an
optimizer section naming another optimizer replaces the inherited one whole; `null` resets a field to its default
(to switch from an inherited `steps` to `epochs`, say). The resolved arm is complete: every field below with its
value, intervals in steps (an `…epochs` field is converted with the data set's training size and the batch size:
CIFAR-10 50,000, ImageNet 1,281,167, Fashion-MNIST 60,000, synthetic 4,096 examples).

Validation runs before any work (`kfac-repro validate` checks every arm in every profile) and names the file, the
field, what was expected and what was found. Unknown keys are errors, with a "did you mean" suggestion; so are
duplicate keys, an `extends` cycle or a missing base. A spec and its `extends` bases must be `.yaml` files inside
the experiments tree (`experiments/`, or for a spec given by path, that file's directory) once symlinks are
resolved: a base outside it, or a symlink pointing out of it, is refused unread, and a file whose top-level keys are
no spec fields is refused without quoting it. Cross-field rules: `training.batch_size` a multiple of
`distribution.workers`, `eval_every` a multiple of `log_every`, `bn_chunk_size` only with `batch_norm`, `stem`,
`dropout`, `aux_heads` only for the models that have them.
"""


def _default(spec: Field) -> str:
    if spec.required:
        return "required"
    value = spec.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{list(value)}`" if isinstance(value, tuple) else f"`{value}`"


def _table(fields: dict[str, Field]) -> list[str]:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, spec in fields.items():
        meaning = spec.doc + (f"; converted to `{spec.epochs_of}` (steps) on resolution" if spec.epochs_of else "")
        rows.append(f"| `{name}` | {spec.expected()} | {_default(spec)} | {meaning} |")
    return [*rows, ""]


def reference_text() -> str:
    """The Markdown reference of the spec format, generated from the schema tables."""
    lines = [HEADER]
    for section, fields in schema.SECTIONS.items():
        lines += [f"## `{section}`", "", *_table(fields)]
    lines += ["## `optimizer`", "", f"`name` ({schema.OPTIMIZER_NAME.expected()}, required) selects the fields "
              "below; `training.seed` seeds the optimizer too.", ""]
    for name, fields in schema.OPTIMIZERS.items():
        lines += [f"### `optimizer` with `name: {name}`", "", *_table(fields)]
    return "\n".join(lines).rstrip() + "\n"


def reference_path() -> Path:
    """docs/spec-format.md in the repository."""
    return Path(__file__).resolve().parents[2] / "docs" / "spec-format.md"
