"""The spec schema: one declarative table of every field (type, range, choices, default, meaning) that drives
validation and the generated reference docs/spec-format.md. Optimizer fields are those of the library's own
KFACConfig / SGDConfig, validated by constructing them, plus the epoch-based intervals below."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfac_repro.data.registry import DATASET_NAMES
from kfac_repro.kfac.config import KFACConfig, SGDConfig
from kfac_repro.models.registry import MODEL_NAMES, family_knobs
from kfac_repro.specs.errors import SpecError

REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One field: its type, constraints and documentation."""

    kind: type
    doc: str
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive
    below: float | None = None  # exclusive
    nullable: bool = False

    def expected(self) -> str:
        text = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                list: "a list of strings"}[self.kind]
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        bounds = [f">= {self.minimum:g}" if self.minimum is not None else "",
                  f"> {self.above:g}" if self.above is not None else "",
                  f"< {self.below:g}" if self.below is not None else ""]
        text += "".join(f" {b}" for b in bounds if b).replace("  ", " ")
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, source: str, path: str) -> None:
        if value is None:
            if not self.nullable:
                raise SpecError(source, path, f"expected {self.expected()}, found null")
            return
        ok = _is_kind(value, self.kind) and (self.choices is None or value in self.choices)
        if ok and self.kind in (int, float):
            ok = ((self.minimum is None or value >= self.minimum) and (self.above is None or value > self.above)
                  and (self.below is None or value < self.below) and math.isfinite(value))
        if not ok:
            raise SpecError(source, path, f"expected {self.expected()}, found {value!r}")


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind)


SECTIONS: dict[str, dict[str, Field]] = {
    "model": {
        "name": Field(str, "the network", choices=MODEL_NAMES),
        "input_size": Field(int, "input height and width in pixels (data are resized to it)", minimum=1),
        "num_classes": Field(int, "classes of the output layer (must match the data set)", minimum=2),
        "width_multiplier": Field(float, "channel width factor (reduced scale: e.g. 0.25)", 1.0, above=0),
        "batch_norm": Field(bool, "batch normalisation after each conv layer", False),
        "bn_chunk_size": Field(int, "BN statistics per chunk of this many examples (the paper's rbz)", None,
                               minimum=1, nullable=True),
        "stem": Field(str, "alexnet/googlenet/resnet: 'paper' or 'reduced' stem (null: by input size)", None,
                      choices=("paper", "reduced"), nullable=True),
        "dropout": Field(float, "alexnet/googlenet: dropout rate before the classifier", None, minimum=0, below=1,
                         nullable=True),
        "aux_heads": Field(bool, "googlenet: auxiliary classifier heads", None, nullable=True),
    },
    "data": {
        "name": Field(str, "the data set", choices=DATASET_NAMES),
        "data_dir": Field(str, "data directory (null: $KFAC_REPRO_DATA or ~/.kfac_repro/data)", None, nullable=True),
        "augment": Field(bool, "random resize-and-crop (null: on for ImageNet training only)", None, nullable=True),
    },
    "training": {
        "batch_size": Field(int, "global mini-batch size (split over the workers)", minimum=1),
        "steps": Field(int, "parameter updates", minimum=1),
        "log_every": Field(int, "steps between metrics rows", 10, minimum=1),
        "eval_every": Field(int, "steps between validation passes (a multiple of log_every)", 50, minimum=1),
        "eval_batches": Field(int, "validation batches per pass", 10, minimum=1),
        "checkpoint_every": Field(int, "steps between checkpoints", 200, minimum=1),
        "seed": Field(int, "random seed (weights, data order, sampled targets)", 0, minimum=0),
        "deterministic": Field(bool, "TensorFlow op determinism (bitwise-repeatable runs)", True),
    },
    "distribution": {
        "workers": Field(int, "gradient workers (replicas); the batch is split across them", 1, minimum=1),
    },
}
EPOCH_ALIASES = {"kfac": {"decay_every_epochs": "decay_every"}, "sgd": {"lr_decay_every_epochs": "lr_decay_every"}}
OPTIMIZER_TYPES: dict[str, type] = {"kfac": KFACConfig, "sgd": SGDConfig}
ARM_KEYS = ("label", *SECTIONS, "optimizer")
NUM_TRAIN = {"cifar10": 50_000, "imagenet": 1_281_167, "fashion_mnist": 60_000, "synthetic": 4096}


def optimizer_fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(OPTIMIZER_TYPES[name])} - {"seed"} | {"name"} | set(EPOCH_ALIASES[name])


def unknown_key_error(source: str, path: str, key: str, known: set[str] | tuple[str, ...]) -> SpecError:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SpecError(source, f"{path}.{key}" if path else str(key),
                     f"unknown key{hint}; expected one of {', '.join(sorted(known))}")


def check_mapping(value: Any, source: str, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(source, path, f"expected a mapping, found {type(value).__name__} {value!r}")
    return value


def check_partial_section(section: str, value: Any, source: str, path: str) -> None:
    """Types, ranges and unknown keys of a (possibly partial) section where it is written."""
    mapping = check_mapping(value, source, path)
    if section == "optimizer":
        name = mapping.get("name")
        if name is not None and name not in OPTIMIZER_TYPES:
            raise SpecError(source, f"{path}.name", f"expected one of kfac, sgd, found {name!r}")
        known = optimizer_fields(name) if name else optimizer_fields("kfac") | optimizer_fields("sgd")
        for key in mapping:
            if key not in known:
                raise unknown_key_error(source, path, key, known)
        return
    fields = SECTIONS[section]
    for key, item in mapping.items():
        if key not in fields:
            raise unknown_key_error(source, path, key, tuple(fields))
        fields[key].check(item, source, f"{path}.{key}")


def check_arm(arm: dict[str, Any], source: str, path: str) -> dict[str, Any]:
    """Complete an arm with defaults and check every field and cross-field rule; the optimizer by constructing
    its config. Returns the arm with defaults filled in."""
    complete: dict[str, Any] = {"label": arm.get("label")}
    for section, fields in SECTIONS.items():
        given = dict(check_mapping(arm.get(section, {}), source, f"{path}.{section}"))
        check_partial_section(section, given, source, f"{path}.{section}")
        for key, spec_field in fields.items():
            if key not in given:
                if spec_field.default is REQUIRED:
                    raise SpecError(source, f"{path}.{section}.{key}", f"required field missing ({spec_field.doc})")
                given[key] = spec_field.default
        complete[section] = {k: v for k, v in given.items() if v is not None or fields[k].default is not None}
    complete["optimizer"] = _check_optimizer(dict(arm.get("optimizer", {})), complete, source, f"{path}.optimizer")
    _cross_checks(complete, source, path)
    return complete


def _check_optimizer(section: dict[str, Any], arm: dict[str, Any], source: str, path: str) -> dict[str, Any]:
    check_partial_section("optimizer", section, source, path)
    section = {k: v for k, v in section.items() if v is not None}  # null: unset (the library default applies)
    name = section.get("name")
    if name is None:
        raise SpecError(source, f"{path}.name", "required field missing (kfac or sgd)")
    for alias, target in EPOCH_ALIASES[name].items():
        if alias in section:
            if target in section:
                raise SpecError(source, f"{path}.{alias}", f"give either {alias} or {target}, not both")
            epochs = section.pop(alias)
            Field(float, "", above=0).check(epochs, source, f"{path}.{alias}")
            steps_per_epoch = NUM_TRAIN[arm["data"]["name"]] / arm["training"]["batch_size"]
            section[target] = max(1, round(epochs * steps_per_epoch))
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items() if k != "name"}
    try:
        OPTIMIZER_TYPES[name](**values)
    except ValueError as error:
        field_name, _, message = str(error).partition(": ")
        raise SpecError(source, f"{path}.{field_name}", message) from error
    except TypeError as error:
        raise SpecError(source, path, str(error)) from error
    return section


def _cross_checks(arm: dict[str, Any], source: str, path: str) -> None:
    model, training = arm["model"], arm["training"]
    if training["eval_every"] % training["log_every"]:
        raise SpecError(source, f"{path}.training.eval_every",
                        f"expected a multiple of log_every ({training['log_every']}), found {training['eval_every']}")
    workers = arm["distribution"]["workers"]
    if training["batch_size"] % workers:
        raise SpecError(source, f"{path}.training.batch_size",
                        f"expected a multiple of distribution.workers ({workers}), found {training['batch_size']}")
    if model.get("bn_chunk_size") is not None and not model["batch_norm"]:
        raise SpecError(source, f"{path}.model.bn_chunk_size", "needs model.batch_norm: true")
    accepted = family_knobs(model["name"])
    for knob in ("stem", "dropout", "aux_heads"):
        if model.get(knob) is not None and knob not in accepted:
            raise SpecError(source, f"{path}.model.{knob}", f"not a setting of {model['name']} "
                            f"(its own settings: {', '.join(accepted) or 'none'})")
