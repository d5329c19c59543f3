"""Assigning a Fisher block to every trainable layer of an unmodified Keras model (paper App. C).

Dense and Conv2D → Kronecker block (kernel and bias together), or the doubly-factored block for the layers named
in `doubly_factored` and for those over a spatial map with at least `doubly_factored_min_inputs` inputs;
BatchNormalization → exact (or diagonal) block
over γ and β; any other layer with trainable weights → generic per-example block; variables owned by no layer
(weights added on the model itself) → no block: their gradient passes through unpreconditioned.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks import FisherBlock
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.doubly_factored import DoublyFactoredBlock, spatial_input_shape
from kfac_repro.kfac.kronecker_blocks import KroneckerBlock
from kfac_repro.kfac.vector_blocks import GenericBlock, ScaleShiftBlock


def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer that owns trainable variables directly, depth first, each once."""
    seen: set[int] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        children = [child for child in getattr(layer, "_layers", []) if isinstance(child, keras.layers.Layer)]
        stack.extend(reversed(children))
        own = _own_trainable_variables(layer, children)
        if own and id(layer) not in seen and layer is not model:
            seen.add(id(layer))
            yield layer


def _own_trainable_variables(layer: keras.layers.Layer, children: list) -> list[tf.Variable]:
    if not layer.trainable:
        return []
    child_ids = {id(v) for child in children for v in child.trainable_variables}
    return [v for v in layer.trainable_variables if id(v) not in child_ids]


def _check_supported(layer: keras.layers.Layer) -> None:
    if getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False):
        raise ValueError(f"layer {layer.name!r}: quantized or LoRA layers are not supported by K-FAC")


def build_blocks(model: keras.Model, config: KFACConfig) -> list[FisherBlock]:
    """One block per leaf layer with trainable variables, in model order."""
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built: call it once or give it an Input before K-FAC")
    blocks: list[FisherBlock] = []
    layers = list(leaf_layers(model))
    unknown = set(config.doubly_factored) - {layer.name for layer in layers}
    if unknown:
        raise ValueError(f"doubly_factored: no trainable layer named {sorted(unknown)} in model {model.name!r}")
    for layer in layers:
        _check_supported(layer)
        if _has_kronecker_structure(layer) and _wants_doubly_factored(layer, config):
            spatial = spatial_input_shape(layer)
            if spatial is None:
                raise ValueError(f"layer {layer.name!r}: the doubly-factored block needs a Dense layer fed by "
                                 "Flatten of an [H, W, C] map, or a Conv2D with a 1×1 output")
            blocks.append(DoublyFactoredBlock(layer, spatial))
        elif _has_kronecker_structure(layer):
            blocks.append(KroneckerBlock(layer, config.conv_factors))
        elif isinstance(layer, keras.layers.BatchNormalization):
            blocks.append(ScaleShiftBlock(layer, config.exact_block_max))
        else:
            blocks.append(GenericBlock(layer, config.exact_block_max))
    return blocks


def _wants_doubly_factored(layer: keras.layers.Layer, config: KFACConfig) -> bool:
    if layer.name in config.doubly_factored:
        return True
    threshold = config.doubly_factored_min_inputs
    if threshold is None or int(np.prod(layer.kernel.shape[:-1])) < threshold:
        return False
    return spatial_input_shape(layer) is not None


def _has_kronecker_structure(layer: keras.layers.Layer) -> bool:
    """A Dense/Conv2D, or a subclass keeping the parent's call (so that the pre-activation tap is valid)."""
    for base in (keras.layers.Dense, keras.layers.Conv2D):
        if isinstance(layer, base) and type(layer).call is base.call:
            return True
    return False


def uncovered_variables(model: keras.Model, blocks: list[FisherBlock]) -> list[tf.Variable]:
    """Trainable variables of the model that no block preconditions."""
    covered = {id(v) for block in blocks for v in block.variables}
    return [v for v in model.trainable_variables if id(v) not in covered]


def summary(model: keras.Model, blocks: list[FisherBlock]) -> str:
    """A table: layer, layer class, block type, factor shapes, parameter count, inverse path."""
    rows = [("layer", "class", "block", "factors", "params", "inverse")]
    for block in blocks:
        shapes = ", ".join(f"{name} {'×'.join(map(str, shape))}" for name, shape in block.factor_shapes.items())
        params = sum(int(np.prod(v.shape)) for v in block.variables)
        rows.append((block.name, type(block.layer).__name__, block.kind, shapes, str(params), block.inverse_path))
    for variable in uncovered_variables(model, blocks):
        rows.append((variable.path, "-", "none (unpreconditioned)", "-", str(int(np.prod(variable.shape))), "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
