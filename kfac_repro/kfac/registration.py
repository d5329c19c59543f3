"""Assigning a Fisher block to every trainable layer of an unmodified Keras model (paper App. C).

`build_blocks` walks the model's leaf layers and gives each the block `block_table.BLOCKS` decides for it, with the
reason; `skipped_layers` lists those left unpreconditioned (variables owned by no layer also pass through), and
`summary` shows both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.block_table import BLOCKS
from kfac_repro.kfac.blocks.base import FisherBlock
from kfac_repro.kfac.blocks.eigenbasis import EigenbasisBlock
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


def build_blocks(model: keras.Model, config: KFACConfig) -> list[FisherBlock]:
    """One block per leaf layer with trainable variables that K-FAC preconditions, in model order; each block's
    `reason` says why it got that block. Layers given no block are listed by `skipped_layers`."""
    layers = _checked_layers(model, config)
    blocks = []
    for layer in layers:
        factory, reason = BLOCKS.decide(layer, config)
        if factory is not None:
            block = factory()
            block.reason = reason
            if config.eigenvalue_correction and not isinstance(block, EigenbasisBlock):
                block.reason += "; K-FAC's, not eigenvalue-corrected (EKFAC covers Dense and Conv2D A ⊗ G blocks)"
            if block.rounds_products:
                block.product_dtype = config.product_dtype
            blocks.append(block)
    return blocks


def skipped_layers(model: keras.Model, config: KFACConfig) -> list[tuple[keras.layers.Layer, str]]:
    """(layer, why) for every leaf layer with trainable variables that K-FAC leaves unpreconditioned."""
    return [(layer, reason) for layer in _checked_layers(model, config)
            for factory, reason in [BLOCKS.decide(layer, config)] if factory is None]


def _checked_layers(model: keras.Model, config: KFACConfig) -> list[keras.layers.Layer]:
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built: call it once or give it an Input before K-FAC")
    layers = list(leaf_layers(model))
    unknown = set(config.doubly_factored) - {layer.name for layer in layers}
    if unknown:
        raise ValueError(f"doubly_factored: no trainable layer named {sorted(unknown)} in model {model.name!r}")
    return layers


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
