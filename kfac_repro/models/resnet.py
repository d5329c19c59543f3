"""ResNet-50 and ResNet-101 (He et al. 2016) with bottleneck blocks; ResNet-50 is the paper's Fig. 5 model.

Paper stem (default for inputs of at least 112×112): conv1 64 7×7/2 → BN → ReLU → max-pool 3/2; then four stages
of bottleneck blocks (1×1 f → 3×3 f → 1×1 4f, f = 64, 128, 256, 512; 3, 4, 6, 3 blocks for ResNet-50 and
3, 4, 23, 3 for ResNet-101), the first block of stages 2–4 striding by 2 on its 3×3 conv ("v1.5"; He et al. stride
the first 1×1, with the same parameter count); a 1×1 projection shortcut (with BN) where the shape changes;
global average pool → logits. At 224×224 and 1000 classes: 25.6 M and 44.6 M parameters (incl. BN moving statistics).
Reduced stem (default for smaller inputs): conv1 3×3/1 and no max-pool, so a 32×32 input gives maps 32, 16, 8, 4.

`batch_norm=False` gives the same net without BN (convs with biases); so that it starts as a chain of identity
blocks rather than blowing up, the last conv of every residual branch is then zero-initialised (as in Fixup,
Zhang et al. 2019). The paper does not say whether its K-FAC ResNet kept BN.
"""

from __future__ import annotations

from typing import Any

import keras

from kfac_repro.models.building_blocks import (
    batch_norm_layer,
    conv_unit,
    imagenet_stem,
    logits_layer,
    resolve_stem,
    scaled,
)

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


def resnet(
    depth: int,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    batch_norm: bool = True,
    bn_chunk_size: int | None = None,
    stem: str | None = None,
) -> keras.Model:
    """Keras functional ResNet-`depth` (50 or 101); logits [batch, num_classes]."""
    if depth not in BLOCKS:
        raise ValueError(f"resnet depth must be one of {sorted(BLOCKS)}, got {depth}")
    paper_stem = resolve_stem(stem, input_shape) == "paper"
    bn: dict[str, Any] = {"batch_norm": batch_norm, "bn_chunk_size": bn_chunk_size}
    inputs = keras.Input(shape=input_shape, name="image")
    x = imagenet_stem(inputs, scaled(64, width_multiplier), paper_stem, **bn)
    for stage, (width, blocks) in enumerate(zip(STAGE_WIDTHS, BLOCKS[depth], strict=True), start=2):
        for block in range(1, blocks + 1):
            strides = 2 if block == 1 and stage > 2 else 1
            x = bottleneck(x, scaled(width, width_multiplier), strides, name=f"stage{stage}_block{block}", **bn)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = logits_layer(x, num_classes)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def bottleneck(
    x: keras.KerasTensor, width: int, strides: int, *, name: str, batch_norm: bool, bn_chunk_size: int | None
) -> keras.KerasTensor:
    """1×1 width → 3×3 width (stride) → 1×1 4·width, added to the (projected) shortcut, then ReLU."""
    bn: dict[str, Any] = {"batch_norm": batch_norm, "bn_chunk_size": bn_chunk_size}
    out_channels = EXPANSION * width
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = keras.layers.Conv2D(out_channels, 1, strides=strides, use_bias=not batch_norm,
                                       kernel_initializer="he_normal", name=f"{name}_shortcut")(x)
        if batch_norm:
            shortcut = batch_norm_layer(f"{name}_shortcut_bn", bn_chunk_size)(shortcut)
    branch = conv_unit(x, width, 1, name=f"{name}_conv1", **bn)
    branch = conv_unit(branch, width, 3, strides=strides, name=f"{name}_conv2", **bn)
    branch = conv_unit(branch, out_channels, 1, name=f"{name}_conv3", relu=False,
                       kernel_initializer="he_normal" if batch_norm else "zeros", **bn)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, branch])
    return keras.layers.ReLU(name=f"{name}_out")(x)

