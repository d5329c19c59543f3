"""Checking spec content against the schema: a partial layer where it is written (types, ranges, unknown keys),
and a complete arm after merging (required fields, defaults, epochs → steps, cross-field rules)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfac_repro.models.registry import MODEL_NAMES, family_knobs
from kfac_repro.specs import schema
from kfac_repro.specs.errors import SpecError
from kfac_repro.specs.fields import Field

Where = Path | str
FAMILY_KNOBS = tuple(dict.fromkeys(k for name in MODEL_NAMES for k in family_knobs(name)))  # some families only


def join(prefix: str, key: object) -> str:
    """A dotted field path: join('arms.a', 'model') == 'arms.a.model'."""
    return f"{prefix}.{key}" if prefix else str(key)


def unknown_key_error(path: Where, prefix: str, key: object, known: tuple[str, ...],
                      known_as: str = "expected one of") -> SpecError:
    """'unknown key (did you mean …?); expected one of …' for `key` under `prefix`."""
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SpecError(path, join(prefix, key), f"unknown key{hint}; {known_as} {', '.join(known)}")


def check_mapping(value: Any, path: Where, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, field, f"expected a mapping, found {type(value).__name__} {value!r}")
    return value


def check_string(value: Any, path: Where, field: str) -> None:
    if not isinstance(value, str):
        raise SpecError(path, field, f"expected a string, found {value!r}")


def check_section_layer(section: str, value: Any, path: Where, field: str) -> None:
    """A (possibly partial) section as written: a mapping of known fields with valid values. An optimizer layer
    without `name` may hold the fields of any optimizer (the complete arm is checked against its own)."""
    layer = check_mapping(value, path, field)
    optimizer = layer.get("name") if section == "optimizer" else None
    if optimizer is not None:
        schema.OPTIMIZER_NAME.check(optimizer, path, join(field, "name"))
    fields = schema.section_fields(section, optimizer)
    for key, item in layer.items():
        if key not in fields:
            known_as = f"the fields of optimizer {optimizer} are" if optimizer else "expected one of"
            raise unknown_key_error(path, field, key, tuple(fields), known_as)
        fields[key].check(item, path, join(field, key))


def check_arm_layer(value: Any, path: Where, field: str, allow_label: bool) -> None:
    """An arm, the defaults, or a profile's override of either, as written (null: nothing)."""
    if value is None:
        return
    layer = check_mapping(value, path, field)
    known = schema.ARM_KEYS if allow_label else schema.ARM_SECTIONS
    for key, item in layer.items():
        if key not in known:
            raise unknown_key_error(path, field, key, known)
        if key == "label":
            check_string(item, path, join(field, key))
        elif item is not None:
            check_section_layer(key, item, path, join(field, key))


def complete_arm(arm: Mapping[str, Any], path: Where, field: str) -> dict[str, Any]:
    """The merged arm with every section complete and checked: `null` resets a field to its default, defaults
    are filled in, epochs are converted to steps (the data set's training size / batch size), and the model's
    family settings left null are omitted (the model's own defaults apply)."""
    check_arm_layer(arm, path, field, allow_label=True)
    layers = {s: {k: v for k, v in (arm.get(s) or {}).items() if v is not None} for s in schema.ARM_SECTIONS}
    done: dict[str, Any] = {"label": arm.get("label")}
    for section in ("model", "data", "distribution", "training"):
        fields = schema.SECTIONS[section]
        if section == "training":
            batch_size = _value(layers[section], "batch_size", fields, path, join(field, section))
            _convert_epochs(fields, layers[section], path, join(field, section),
                            schema.NUM_TRAIN[done["data"]["name"]] / batch_size)
        done[section] = _complete(fields, layers[section], path, join(field, section))
    done["model"] = {k: v for k, v in done["model"].items() if v is not None or k not in FAMILY_KNOBS}
    optimizer = layers["optimizer"]
    if "name" not in optimizer:
        raise SpecError(path, join(field, "optimizer.name"),
                        f"required field missing ({schema.OPTIMIZER_NAME.expected()})")
    check_section_layer("optimizer", optimizer, path, join(field, "optimizer"))
    fields = schema.section_fields("optimizer", optimizer["name"])
    _convert_epochs(fields, optimizer, path, join(field, "optimizer"),
                    schema.NUM_TRAIN[done["data"]["name"]] / done["training"]["batch_size"])
    done["optimizer"] = _complete(fields, optimizer, path, join(field, "optimizer"))
    _cross_checks(done, path, field)
    return done


def _convert_epochs(fields: dict[str, Field], given: dict[str, Any], path: Where, field: str,
                    steps_per_epoch: float) -> None:
    """Replace each `…_epochs` value in `given` by its steps field (rounded, at least 1)."""
    for alias, spec in fields.items():
        if spec.epochs_of is not None and alias in given:
            if spec.epochs_of in given:
                raise SpecError(path, join(field, alias), f"give either {alias} or {spec.epochs_of}, not both "
                                "(null unsets an inherited one)")
            given[spec.epochs_of] = max(1, round(given.pop(alias) * steps_per_epoch))


def _complete(fields: dict[str, Field], given: Mapping[str, Any], path: Where, field: str) -> dict[str, Any]:
    return {key: _value(given, key, fields, path, field) for key, spec in fields.items() if spec.epochs_of is None}


def _value(given: Mapping[str, Any], key: str, fields: dict[str, Field], path: Where, field: str) -> Any:
    if key in given:
        return given[key]
    spec = fields[key]
    if spec.required:
        raise SpecError(path, join(field, key), f"required field missing ({spec.doc})")
    return spec.default


def _cross_checks(arm: dict[str, Any], path: Where, field: str) -> None:
    model, training = arm["model"], arm["training"]
    if training["eval_every"] % training["log_every"]:
        raise SpecError(path, join(field, "training.eval_every"),
                        f"expected a multiple of log_every ({training['log_every']}), found {training['eval_every']}")
    workers = arm["distribution"]["workers"]
    if training["batch_size"] % workers:
        raise SpecError(path, join(field, "training.batch_size"),
                        f"expected a multiple of distribution.workers ({workers}), found {training['batch_size']}")
    if model["bn_chunk_size"] is not None and not model["batch_norm"]:
        raise SpecError(path, join(field, "model.bn_chunk_size"), "needs model.batch_norm: true")
    accepted = family_knobs(model["name"])
    for knob in FAMILY_KNOBS:
        if model.get(knob) is not None and knob not in accepted:
            raise SpecError(path, join(field, f"model.{knob}"), f"not a setting of {model['name']} "
                            f"(its own settings: {', '.join(accepted) or 'none'})")
