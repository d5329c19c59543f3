"""The paper's CIFAR-10 network (§6.1): three 5×5 conv layers with 32, 32 and 64 filters, then a softmax layer.

Each conv is followed by ReLU and 3×3/2 max pooling (the paper gives only the conv widths; pooling is our choice,
as in the KFC paper's cuda-convnet net). The output layer returns logits.
"""

from __future__ import annotations

import keras

from kfac_repro.models.chunked_bn import ChunkedBatchNormalization


def cifar10_net(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    filters: tuple[int, int, int] = (32, 32, 64),
    batch_norm: bool = False,
    bn_chunk_size: int | None = None,
) -> keras.Model:
    """Keras functional model; logits of shape [batch, num_classes]. BN statistics per `bn_chunk_size` examples."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for index, width in enumerate(filters, start=1):
        x = keras.layers.Conv2D(width, 5, padding="same", name=f"conv{index}")(x)
        if batch_norm:
            x = ChunkedBatchNormalization(chunk_size=bn_chunk_size, name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="cifar10_net")
