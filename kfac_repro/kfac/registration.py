"""Assigning a Fisher block to every trainable layer of an unmodified Keras model (paper App. C).

`decide` picks each leaf layer's block, and says why: Dense, Conv1D/2D/3D, EinsumDense (when its equation is a
Dense over positions) → Kronecker blocks, kernel and bias together (sequence positions by `sequence_factors`);
Dense/Conv2D named in `doubly_factored` (or large enough) → doubly-factored; Embedding → diag(frequencies) ⊗ G;
DepthwiseConv2D / SeparableConv2D → per-channel blocks; BatchNormalization and LayerNormalization → exact (or
diagonal) γ/β block; any other layer → generic per-example block. Left unpreconditioned, with the reason: layers
matching `skip_layers`, recurrent cells (their per-step tensors live inside the RNN's loop), quantized or LoRA
layers, and EinsumDense equations without Kronecker structure (TensorFlow's vectorized_map, which the generic
block needs, crashes on EinsumDense); variables owned by no layer also pass through.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.base import FisherBlock
from kfac_repro.kfac.blocks.depthwise import DepthwiseBlock, SeparableBlock, depthwise_supported
from kfac_repro.kfac.blocks.doubly_factored import DoublyFactoredBlock, spatial_input_shape
from kfac_repro.kfac.blocks.embedding import EmbeddingBlock
from kfac_repro.kfac.blocks.kronecker import KroneckerBlock
from kfac_repro.kfac.blocks.shared_weight import (
    Conv1DBlock,
    Conv3DBlock,
    EinsumDenseBlock,
    SequenceDenseBlock,
    conv1d_supported,
    conv3d_supported,
    einsum_support,
)
from kfac_repro.kfac.blocks.vector import GenericBlock, ScaleShiftBlock
from kfac_repro.kfac.config import KFACConfig


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


Decision = tuple[Callable[[], FisherBlock] | None, str]


def build_blocks(model: keras.Model, config: KFACConfig) -> list[FisherBlock]:
    """One block per leaf layer with trainable variables that K-FAC preconditions, in model order; each block's
    `reason` says why it got that block. Layers given no block are listed by `skipped_layers`."""
    layers = _checked_layers(model, config)
    blocks = []
    for layer in layers:
        factory, reason = decide(layer, config)
        if factory is not None:
            block = factory()
            block.reason = reason
            if block.rounds_products:
                block.product_dtype = config.product_dtype
            blocks.append(block)
    return blocks


def skipped_layers(model: keras.Model, config: KFACConfig) -> list[tuple[keras.layers.Layer, str]]:
    """(layer, why) for every leaf layer with trainable variables that K-FAC leaves unpreconditioned."""
    return [(layer, reason) for layer in _checked_layers(model, config)
            for factory, reason in [decide(layer, config)] if factory is None]


def _checked_layers(model: keras.Model, config: KFACConfig) -> list[keras.layers.Layer]:
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built: call it once or give it an Input before K-FAC")
    layers = list(leaf_layers(model))
    unknown = set(config.doubly_factored) - {layer.name for layer in layers}
    if unknown:
        raise ValueError(f"doubly_factored: no trainable layer named {sorted(unknown)} in model {model.name!r}")
    return layers


def decide(layer: keras.layers.Layer, config: KFACConfig) -> Decision:
    """(block factory, or None to leave the layer unpreconditioned; why), from the layer's class and settings."""
    names = (layer.name, getattr(layer, "path", layer.name))
    skip = next((p for p in config.skip_layers if any(fnmatch.fnmatchcase(n, p) for n in names)), None)
    if skip is not None:
        return None, f"skip_layers: matches {skip!r}"
    if getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False):
        return None, "quantized or LoRA layer: no Fisher block"
    if hasattr(layer, "state_size"):
        return None, "recurrent cell: called inside the RNN's loop, its per-step tensors are out of reach"
    if _has_kronecker_structure(layer) and _wants_doubly_factored(layer, config):
        spatial = spatial_input_shape(layer)
        if spatial is None:
            raise ValueError(f"layer {layer.name!r}: the doubly-factored block needs a Dense layer fed by "
                             "Flatten of an [H, W, C] map, or a Conv2D with a 1×1 output")
        return functools.partial(DoublyFactoredBlock, layer, spatial), "doubly-factored (paper §4)"
    if _keeps_call(layer, keras.layers.Dense):
        if config.sequence_factors == "reduce":
            return functools.partial(SequenceDenseBlock, layer, "reduce"), "Dense: A ⊗ G; positions (if any) reduced"
        return functools.partial(KroneckerBlock, layer), "Dense: A ⊗ G; positions (if any) expanded"
    if _keeps_call(layer, keras.layers.Conv2D):
        if layer.data_format != "channels_last" or layer.groups != 1:
            return _generic(layer, config, "Conv2D channels_first or grouped")
        return functools.partial(KroneckerBlock, layer, config.conv_factors), f"Conv2D: {config.conv_factors} factors"
    if _keeps_call(layer, keras.layers.Conv1D):
        why_not = conv1d_supported(layer)
        if why_not is None:
            return functools.partial(Conv1DBlock, layer, config.conv_factors), f"Conv1D: {config.conv_factors} factors"
        return _generic(layer, config, f"Conv1D with {why_not}")
    if _keeps_call(layer, keras.layers.Conv3D):
        why_not = conv3d_supported(layer)
        if why_not is None:
            return functools.partial(Conv3DBlock, layer, config.conv_factors), f"Conv3D: {config.conv_factors} factors"
        return _generic(layer, config, f"Conv3D with {why_not}")
    if _keeps_call(layer, keras.layers.EinsumDense):
        layout = einsum_support(layer)
        if not isinstance(layout, str):
            return (functools.partial(EinsumDenseBlock, layer, layout, config.sequence_factors),
                    f"EinsumDense: A ⊗ G; positions {config.sequence_factors}ed")
        return None, f"EinsumDense: {layout}; per-example gradients of EinsumDense crash tf.vectorized_map"
    if _keeps_call(layer, keras.layers.Embedding):
        return functools.partial(EmbeddingBlock, layer), "Embedding: diag(token frequencies) ⊗ G"
    if _keeps_call(layer, keras.layers.DepthwiseConv2D) and depthwise_supported(layer) is None:
        return (functools.partial(DepthwiseBlock, layer, config.conv_factors),
                f"DepthwiseConv2D: per-channel A_c ⊗ G_c, {config.conv_factors} factors")
    if _keeps_call(layer, keras.layers.SeparableConv2D) and depthwise_supported(layer) is None:
        return (functools.partial(SeparableBlock, layer, config.conv_factors),
                f"SeparableConv2D: per-channel depthwise and pointwise A ⊗ G, {config.conv_factors} factors")
    if isinstance(layer, keras.layers.BatchNormalization):
        return functools.partial(ScaleShiftBlock, layer, config.exact_block_max), "BatchNormalization γ, β"
    if _keeps_call(layer, keras.layers.LayerNormalization) and len(layer.axis) == 1:
        return functools.partial(ScaleShiftBlock, layer, config.exact_block_max), "LayerNormalization γ, β"
    return _generic(layer, config, f"{type(layer).__name__}: no Kronecker structure")


def _generic(layer: keras.layers.Layer, config: KFACConfig, why: str) -> Decision:
    return functools.partial(GenericBlock, layer, config.exact_block_max), f"{why}; per-example gradients"


def _keeps_call(layer: keras.layers.Layer, base: type[keras.layers.Layer]) -> bool:
    """An instance of `base`, or of a subclass keeping its call (so that the statistics' reading is valid)."""
    return isinstance(layer, base) and type(layer).call is base.call


def _wants_doubly_factored(layer: keras.layers.Layer, config: KFACConfig) -> bool:
    if layer.name in config.doubly_factored:
        return True
    threshold = config.doubly_factored_min_inputs
    if threshold is None or int(np.prod(layer.kernel.shape[:-1])) < threshold:
        return False
    return spatial_input_shape(layer) is not None


def _has_kronecker_structure(layer: keras.layers.Layer) -> bool:
    """A Dense/Conv2D, or a subclass keeping the parent's call (so that the pre-activation tap is valid)."""
    return _keeps_call(layer, keras.layers.Dense) or _keeps_call(layer, keras.layers.Conv2D)


def uncovered_variables(model: keras.Model, blocks: list[FisherBlock]) -> list[tf.Variable]:
    """Trainable variables of the model that no block preconditions."""
    covered = {id(v) for block in blocks for v in block.variables}
    return [v for v in model.trainable_variables if id(v) not in covered]


def summary(model: keras.Model, blocks: list[FisherBlock],
            skipped: Sequence[tuple[keras.layers.Layer, str]] = ()) -> str:
    """A table: layer, layer class, block type, factor shapes, parameter count, inverse path, precision of its
    per-step products, and why the layer got that block."""
    rows = [("layer", "class", "block", "factors", "params", "inverse", "products", "why")]
    for block in blocks:
        shapes = ", ".join(f"{name} {'×'.join(map(str, shape))}" for name, shape in block.factor_shapes.items())
        params = sum(int(np.prod(v.shape)) for v in block.variables)
        rows.append((block.name, type(block.layer).__name__, block.kind, shapes, str(params), block.inverse_path,
                     block.product_dtype, block.reason))
    for layer, why in skipped:
        params = sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
        rows.append((layer.name, type(layer).__name__, "none (unpreconditioned)", "-", str(params), "-", "-", why))
    in_skipped = {id(v) for layer, _ in skipped for v in layer.trainable_variables}
    for variable in uncovered_variables(model, blocks):
        if id(variable) not in in_skipped:
            rows.append((variable.path, "-", "none (unpreconditioned)", "-", str(int(np.prod(variable.shape))), "-",
                         "-", "owned by no layer"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
