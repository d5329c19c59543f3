"""AlexNet (Krizhevsky et al. 2012), single tower, as in the paper's Fig. 4 (with K-FAC's doubly-factored fc6).

Paper scale (224×224×3, 1000 classes, width 1): conv1 96 11×11/4 → max-pool 3/2 → conv2 256 5×5 → pool →
conv3 384 3×3 → conv4 384 3×3 → conv5 256 3×3 → pool → flatten of the 6×6×256 map → fc6 4096 → fc7 4096 →
fc8 (logits); 62.4 M parameters. fc6 is a Dense layer over the flattened spatial map, the layer the
doubly-factored Fisher block is meant for. Convolutions use "same" padding (224 → 56 → 27 → 13 → 6).
Local response normalisation is left out (not a built-in Keras layer; BN is the paper's normaliser).
Dropout 0.5 after fc6 and fc7 as in the original (the paper does not say; `dropout=0` turns it off).

Reduced stem (default below 112×112 inputs): conv1 is 5×5 with stride 1, so a 32×32 input ends in a 3×3 map and
a 28×28 one in 2×2: fc6 still reads a spatial map. Inputs whose final map would be smaller than 2×2 are refused.
"""

from __future__ import annotations

from typing import Any

import keras

from kfac_repro.models.building_blocks import conv_unit, dense_unit, logits_layer, resolve_stem, scaled

CONV_WIDTHS = (96, 256, 384, 384, 256)
CONV_KERNELS = (11, 5, 3, 3, 3)
FC_WIDTH = 4096
MIN_FC6_MAP = 2


def alexnet(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    batch_norm: bool = False,
    bn_chunk_size: int | None = None,
    stem: str | None = None,
    dropout: float = 0.5,
) -> keras.Model:
    """Keras functional AlexNet; logits [batch, num_classes]. `stem`: "paper", "reduced" or None (by input size)."""
    paper_stem = resolve_stem(stem, input_shape) == "paper"
    fc6_map = [fc6_map_size(size, 4 if paper_stem else 1) for size in input_shape[:2]]
    if min(fc6_map) < MIN_FC6_MAP:
        raise ValueError(f"alexnet: input {input_shape} leaves a {fc6_map[0]}×{fc6_map[1]} map before fc6; at least "
                         f"{MIN_FC6_MAP}×{MIN_FC6_MAP} is needed (use a larger input or stem='reduced')")
    bn: dict[str, Any] = {"batch_norm": batch_norm, "bn_chunk_size": bn_chunk_size}
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for index, (width, kernel) in enumerate(zip(CONV_WIDTHS, CONV_KERNELS, strict=True), start=1):
        if index == 1 and not paper_stem:
            kernel = 5
        strides = 4 if index == 1 and paper_stem else 1
        x = conv_unit(x, scaled(width, width_multiplier), kernel, strides=strides, name=f"conv{index}", **bn)
        if index in (1, 2, 5):
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = dense_unit(x, scaled(FC_WIDTH, width_multiplier), name="fc6", dropout=dropout, **bn)
    x = dense_unit(x, scaled(FC_WIDTH, width_multiplier), name="fc7", dropout=dropout, **bn)
    outputs = logits_layer(x, num_classes, name="fc8")
    return keras.Model(inputs, outputs, name="alexnet")


def fc6_map_size(size: int, stem_stride: int) -> int:
    """Side of the map fc6 reads: "same" convs (conv1 strided) and three valid 3/2 max-pools; 0 if it vanishes."""
    size = -(-size // stem_stride)
    for _ in range(3):
        if size < 3:
            return 0
        size = (size - 3) // 2 + 1
    return size
