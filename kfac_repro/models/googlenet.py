"""GoogLeNet / Inception v1 (Szegedy et al. 2015), the paper's main ImageNet model (Figs. 3, 6, 7, 8).

Paper stem (default for inputs of at least 112×112): conv1 64 7×7/2 → max-pool 3/2 → conv2 64 1×1 →
conv3 192 3×3 → pool → inception 3a, 3b → pool → 4a–4e → pool → 5a, 5b → global average pool → dropout 0.4 →
logits; at 224×224 the maps are 112, 56, 28, 14, 7, and the model has 7.0 M parameters (6.8 M weights + biases of
Szegedy et al.'s table; about 6.6–7.0 M in the usual re-implementations). Each inception module concatenates
four branches: 1×1; 1×1 → 3×3; 1×1 → 5×5; 3×3/1 max-pool → 1×1 (pool projection). Local response normalisation
is left out. Reduced stem (default for smaller inputs): conv1 is 3×3/1 and the two stem poolings are dropped, so a
32×32 input gives 32, 16, 8.

Auxiliary heads (`aux_heads=True`, off by default, the paper does not say): after 4a and 4d, 5×5/3 average pool →
128 1×1 conv → fc 1024 → dropout 0.7 → logits; the model then returns [logits, aux1_logits, aux2_logits]
(Szegedy et al. weight the auxiliary losses by 0.3).
"""

from __future__ import annotations

from typing import Any

import keras

from kfac_repro.models.building_blocks import conv_unit, dense_unit, imagenet_stem, logits_layer, resolve_stem, scaled

# name: (1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool projection)
INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
POOL_BEFORE = ("4a", "5a")
AUX_AFTER = ("4a", "4d")


def googlenet(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    batch_norm: bool = False,
    bn_chunk_size: int | None = None,
    stem: str | None = None,
    aux_heads: bool = False,
    dropout: float = 0.4,
) -> keras.Model:
    """Keras functional Inception v1; logits [batch, num_classes] (a list of three with `aux_heads`)."""
    paper_stem = resolve_stem(stem, input_shape) == "paper"
    bn: dict[str, Any] = {"batch_norm": batch_norm, "bn_chunk_size": bn_chunk_size}
    inputs = keras.Input(shape=input_shape, name="image")
    x = imagenet_stem(inputs, scaled(64, width_multiplier), paper_stem, **bn)
    x = conv_unit(x, scaled(64, width_multiplier), 1, name="conv2", **bn)
    x = conv_unit(x, scaled(192, width_multiplier), 3, name="conv3", **bn)
    if paper_stem:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    aux_outputs: list[keras.KerasTensor] = []
    for name, widths in INCEPTION_WIDTHS.items():
        if name in POOL_BEFORE:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool_before_{name}")(x)
        x = inception_module(x, tuple(scaled(w, width_multiplier) for w in widths), name=f"inception_{name}", **bn)
        if aux_heads and name in AUX_AFTER:
            aux_outputs.append(_aux_head(x, num_classes, width_multiplier, f"aux{len(aux_outputs) + 1}", **bn))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = logits_layer(x, num_classes)
    return keras.Model(inputs, [outputs, *aux_outputs] if aux_heads else outputs, name="googlenet")


def inception_module(
    x: keras.KerasTensor, widths: tuple[int, ...], *, name: str, batch_norm: bool, bn_chunk_size: int | None
) -> keras.KerasTensor:
    """The four-branch module; output channels = 1×1 + 3×3 + 5×5 + pool projection widths."""
    n1, n3_reduce, n3, n5_reduce, n5, pool_proj = widths
    bn: dict[str, Any] = {"batch_norm": batch_norm, "bn_chunk_size": bn_chunk_size}
    branch1 = conv_unit(x, n1, 1, name=f"{name}_1x1", **bn)
    branch3 = conv_unit(x, n3_reduce, 1, name=f"{name}_3x3_reduce", **bn)
    branch3 = conv_unit(branch3, n3, 3, name=f"{name}_3x3", **bn)
    branch5 = conv_unit(x, n5_reduce, 1, name=f"{name}_5x5_reduce", **bn)
    branch5 = conv_unit(branch5, n5, 5, name=f"{name}_5x5", **bn)
    pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    pooled = conv_unit(pooled, pool_proj, 1, name=f"{name}_pool_proj", **bn)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch3, branch5, pooled])


def _aux_head(
    x: keras.KerasTensor, num_classes: int, width_multiplier: float, name: str, *, batch_norm: bool,
    bn_chunk_size: int | None,
) -> keras.KerasTensor:
    size = min(5, *x.shape[1:3])
    x = keras.layers.AveragePooling2D(size, strides=min(3, size), name=f"{name}_pool")(x)
    x = conv_unit(x, scaled(128, width_multiplier), 1, name=f"{name}_conv", batch_norm=batch_norm,
                  bn_chunk_size=bn_chunk_size)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = dense_unit(x, scaled(1024, width_multiplier), name=f"{name}_fc", batch_norm=batch_norm,
                   bn_chunk_size=bn_chunk_size, dropout=0.7)
    return logits_layer(x, num_classes, name=f"{name}_logits")
