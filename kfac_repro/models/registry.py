"""Model registry: the paper's models by name, at paper scale or reduced scale.

Importing this module does not import TensorFlow or Keras (the CLI lists names instantly); `build_model` does.

| name        | family module | paper scale                    | family knobs (beyond the common ones)           |
|-------------|---------------|--------------------------------|--------------------------------------------------|
| cifar10_net | cifar10_net   | 32×32×3, 10 classes            | –                                                |
| alexnet     | alexnet       | 224×224×3, 1000 classes, 62.4 M | stem ("paper"/"reduced"/None), dropout (0.5)   |
| googlenet   | googlenet     | 224×224×3, 1000 classes, 7.0 M  | stem, aux_heads (False), dropout (0.4)         |
| resnet50    | resnet        | 224×224×3, 1000 classes, 25.6 M | stem                                           |
| resnet101   | resnet        | 224×224×3, 1000 classes, 44.6 M | stem                                           |
| standin     | standin       | 28×28, 10 classes (the cpu profile's stand-in for the ImageNet nets) | residual, fc6 |

Reduced scale: a small `input_shape` (e.g. (32, 32, 3) or (28, 28, 3)), `width_multiplier` (e.g. 0.25) and
`num_classes`; the "reduced" stem is chosen automatically below 112×112. All models are channels_last and output
logits.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

MODEL_NAMES = ("cifar10_net", "alexnet", "googlenet", "resnet50", "resnet101", "standin")

# name -> (module, builder function, fixed keyword arguments, family knobs accepted)
_FAMILIES: dict[str, tuple[str, str, dict[str, Any], tuple[str, ...]]] = {
    "cifar10_net": ("kfac_repro.models.cifar10_net", "cifar10_net", {}, ()),
    "alexnet": ("kfac_repro.models.alexnet", "alexnet", {}, ("stem", "dropout")),
    "googlenet": ("kfac_repro.models.googlenet", "googlenet", {}, ("stem", "aux_heads", "dropout")),
    "resnet50": ("kfac_repro.models.resnet", "resnet", {"depth": 50}, ("stem",)),
    "resnet101": ("kfac_repro.models.resnet", "resnet", {"depth": 101}, ("stem",)),
    "standin": ("kfac_repro.models.standin", "standin", {}, ("residual", "fc6")),
}


def family_knobs(name: str) -> tuple[str, ...]:
    """The family-specific keyword arguments `build_model` accepts for model `name`."""
    _check_name(name)
    return _FAMILIES[name][3]


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float = 1.0,
    batch_norm: bool = False,
    bn_chunk_size: int | None = None,
    bn_momentum: float = 0.99,
    **knobs: Any,
) -> keras.Model:
    """A fresh, built Keras model `name` mapping images [B, H, W, C] to logits [B, num_classes].

    bn_chunk_size: BN statistics over chunks of that many examples (the paper's rbz; None = whole batch); only with
    batch_norm=True. bn_momentum: decay of every BN layer's moving mean and variance (used for evaluation).
    Raises ValueError naming a bad model name, knob or value.
    """
    _check_name(name)
    module_name, function_name, fixed, accepted = _FAMILIES[name]
    unknown = sorted(set(knobs) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r}: unknown knob(s) {unknown}; accepted: "
                         f"{', '.join(accepted) if accepted else 'none beyond the common ones'}")
    _check_common(name, input_shape, num_classes, width_multiplier, batch_norm, bn_chunk_size)
    if not 0 < bn_momentum < 1:
        raise ValueError(f"model {name!r}: bn_momentum must be in (0, 1), got {bn_momentum!r}")
    builder = getattr(importlib.import_module(module_name), function_name)
    common: dict[str, Any] = {"input_shape": tuple(input_shape), "num_classes": num_classes,
                              "batch_norm": batch_norm, "bn_chunk_size": bn_chunk_size}
    if name == "cifar10_net":
        from kfac_repro.models.building_blocks import scaled

        common["filters"] = tuple(scaled(f, width_multiplier) for f in (32, 32, 64))
    else:
        common["width_multiplier"] = width_multiplier
    model: keras.Model = builder(**fixed, **common, **knobs)
    import keras

    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model


def _all_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    nested = getattr(layer, "layers", [])
    return [layer, *(inner for child in nested for inner in _all_layers(child))]


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")


def _check_common(
    name: str, input_shape: tuple[int, int, int], num_classes: int, width_multiplier: float, batch_norm: bool,
    bn_chunk_size: int | None,
) -> None:
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"model {name!r}: input_shape must be (height, width, channels) of positive ints, "
                         f"got {input_shape!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be an int ≥ 2, got {num_classes!r}")
    if not width_multiplier > 0:
        raise ValueError(f"model {name!r}: width_multiplier must be > 0, got {width_multiplier!r}")
    if bn_chunk_size is not None and not batch_norm:
        raise ValueError(f"model {name!r}: bn_chunk_size={bn_chunk_size} needs batch_norm=True")
