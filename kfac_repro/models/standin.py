"""The stand-in for the paper's ImageNet nets in the cpu profile: a small convnet that keeps what each figure is
about at about a tenth of the reduced GoogLeNet's cost per example, so that the comparisons run at the paper's
batch sizes (256–2048) for about 10 epochs on a 2-core CPU.

conv1 5×5 (32) → [BN] → ReLU → max-pool 3/2 → conv2 5×5 (32) → [BN] → ReLU → max-pool 3/2 → stage 3 → [fc6] → logits.
Stage 3 is conv3 5×5 (64) → [BN] → ReLU → max-pool 3/2, or with `residual` (ResNet-50's stand-in) a basic residual
block (3×3, 3×3, a 1×1 projection shortcut, BN after each conv) then global average pooling. `fc6` > 0 adds a
Dense layer of that width over the flattened map (AlexNet's stand-in: its fc6 is a Dense over a flattened map,
the layer the doubly-factored block is meant for). Widths scale with `width_multiplier`. Our design: the paper
has no such net.
"""

from __future__ import annotations

from typing import Any

import keras

from kfac_repro.models.building_blocks import conv_unit, dense_unit, logits_layer, scaled


def standin(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
    batch_norm: bool = False,
    bn_chunk_size: int | None = None,
    residual: bool = False,
    fc6: int = 0,
) -> keras.Model:
    """Keras functional model; logits [batch, num_classes]. BN statistics per `bn_chunk_size` examples."""
    bn: dict[str, Any] = {"batch_norm": batch_norm, "bn_chunk_size": bn_chunk_size}
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for index, width in ((1, 32), (2, 32)):
        x = conv_unit(x, scaled(width, width_multiplier), 5, name=f"conv{index}", **bn)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{index}")(x)
    width = scaled(64, width_multiplier)
    if residual:
        shortcut = conv_unit(x, width, 1, name="conv3_shortcut", relu=False, **bn)
        branch = conv_unit(x, width, 3, name="conv3a", **bn)
        branch = conv_unit(branch, width, 3, name="conv3b", relu=False, **bn)
        x = keras.layers.ReLU(name="conv3_relu")(keras.layers.Add(name="conv3_add")([shortcut, branch]))
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = conv_unit(x, width, 5, name="conv3", **bn)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    if fc6:
        x = dense_unit(x, scaled(fc6, width_multiplier), name="fc6", batch_norm=False)
    return keras.Model(inputs, logits_layer(x, num_classes), name="standin")
