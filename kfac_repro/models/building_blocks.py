"""Pieces shared by the model families: channel scaling, conv(+BN)+ReLU units, the stem choice.

Everything is made of built-in Keras layers (Conv2D, Dense, pooling, ReLU) plus `ChunkedBatchNormalization`, a
BatchNormalization subclass, so that K-FAC finds and registers the layers without model changes. Tensors are
channels_last: [batch, height, width, channels].
"""

from __future__ import annotations

from typing import Any, Literal

import keras

from kfac_repro.models.chunked_bn import ChunkedBatchNormalization

Stem = Literal["paper", "reduced"]
STEMS: tuple[str, ...] = ("paper", "reduced")
# Inputs at least this large get the paper's ImageNet stem by default; smaller ones (CIFAR-size) the reduced stem.
PAPER_STEM_MIN_SIZE = 112


def scaled(channels: int, width_multiplier: float) -> int:
    """`channels` × `width_multiplier`, rounded, at least 1."""
    return max(1, round(channels * width_multiplier))


def resolve_stem(stem: str | None, input_shape: tuple[int, int, int]) -> str:
    """`stem`, or by default "paper" for inputs of at least 112×112 and "reduced" below."""
    if stem is None:
        return "paper" if min(input_shape[:2]) >= PAPER_STEM_MIN_SIZE else "reduced"
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS} or None, got {stem!r}")
    return stem


def batch_norm_layer(name: str, chunk_size: int | None) -> ChunkedBatchNormalization:
    """BN over chunks of `chunk_size` examples (None: the whole batch); see `chunked_bn`."""
    return ChunkedBatchNormalization(chunk_size=chunk_size, name=name)


def conv_unit(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    strides: int = 1,
    batch_norm: bool = False,
    bn_chunk_size: int | None = None,
    relu: bool = True,
    kernel_initializer: str = "he_normal",
) -> keras.KerasTensor:
    """Conv2D ("same" padding) → [BN] → [ReLU]. With BN the conv has no bias (BN's β replaces it)."""
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=not batch_norm,
        kernel_initializer=kernel_initializer, name=name,
    )(x)
    if batch_norm:
        x = batch_norm_layer(f"{name}_bn", bn_chunk_size)(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def imagenet_stem(x: keras.KerasTensor, filters: int, paper_stem: bool, **bn: Any) -> keras.KerasTensor:
    """GoogLeNet/ResNet conv1: 7×7/2 conv then 3×3/2 max pooling (paper stem), or a 3×3/1 conv (reduced stem)."""
    x = conv_unit(x, filters, 7 if paper_stem else 3, strides=2 if paper_stem else 1, name="conv1", **bn)
    if paper_stem:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    return x


def dense_unit(
    x: keras.KerasTensor, units: int, *, name: str, batch_norm: bool = False, bn_chunk_size: int | None = None,
    dropout: float = 0.0,
) -> keras.KerasTensor:
    """Dense → [BN] → ReLU → [Dropout]: a hidden fully-connected layer."""
    x = keras.layers.Dense(units, use_bias=not batch_norm, kernel_initializer="he_normal", name=name)(x)
    if batch_norm:
        x = batch_norm_layer(f"{name}_bn", bn_chunk_size)(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


# Logits start at a tenth of a LeCun-initialised layer's scale (weights N(0, 0.01/fan_in), truncated): with He
# initialisation, max-pooling and dropout, the activations that reach the logits have an RMS of about 5 on the
# paper-scale AlexNet, so Keras's default (Glorot) gave logits of standard deviation 6 and a first training loss of
# 20 where ln(1000) = 6.9 is expected of an untrained classifier (GoogLeNet 12.4, ResNet-50 8.5). Our choice: the
# paper does not say how it initialises.
LOGITS_INITIALIZER_SCALE = 0.01


def logits_layer(x: keras.KerasTensor, num_classes: int, name: str = "logits") -> keras.KerasTensor:
    """The output Dense layer: logits, no softmax; small initial weights, so that the untrained model predicts
    nearly uniformly (first loss ≈ ln(num_classes))."""
    initializer = keras.initializers.VarianceScaling(LOGITS_INITIALIZER_SCALE, mode="fan_in",
                                                     distribution="truncated_normal")
    return keras.layers.Dense(num_classes, kernel_initializer=initializer, name=name)(x)
