"""Kronecker-factored blocks for Dense and Conv2D layers: F̂ = A ⊗ G over vec of the [d_in(+1), d_out] kernel
(bias as the last row via the homogeneous coordinate), preconditioned as (A + π√λ I)⁻¹ ∇W (G + √λ/π I)⁻¹ (Eq. 3)
with the two damped inverses formed explicitly at each refresh.
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac import fisher_factors as ff
from kfac_repro.kfac.blocks import Arrays, FisherBlock, kronecker_solve
from kfac_repro.kfac.damping import factored_damping
from kfac_repro.kfac.inverses import damped_inverse
from kfac_repro.kfac.layer_capture import LayerCall

ConvFactors = Literal["cheap", "kfc"]


class KroneckerBlock(FisherBlock):
    """A ⊗ G block of a Dense or Conv2D layer (kernel and bias together)."""

    taps_preactivation = True

    def __init__(self, layer: keras.layers.Layer, conv_factors: ConvFactors = "cheap"):
        kernel = layer.kernel
        bias = getattr(layer, "bias", None)
        super().__init__(layer, [kernel] if bias is None else [kernel, bias])
        self.use_bias = bias is not None
        self.kernel_shape = tuple(kernel.shape)
        self.geometry: ff.ConvGeometry | None = None
        self.conv_factors = conv_factors
        if isinstance(layer, keras.layers.Conv2D):
            if layer.data_format != "channels_last" or layer.groups != 1:
                raise ValueError(f"layer {layer.name!r}: K-FAC supports channels_last, ungrouped Conv2D only")
            self.geometry = ff.ConvGeometry(
                kernel_size=tuple(layer.kernel_size),
                strides=tuple(layer.strides),
                padding=layer.padding,
                dilation=tuple(layer.dilation_rate),
            )
            self.kind = f"kronecker-conv-{conv_factors}"
        else:
            self.kind = "kronecker-dense"
        self.input_dim = int(np.prod(self.kernel_shape[:-1])) + int(self.use_bias)
        self.output_dim = int(self.kernel_shape[-1])
        self._add_factor("A", self.input_dim)
        self._add_factor("G", self.output_dim)

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        inputs = tf.concat([call.inputs for call in calls], axis=0)
        derivatives = [tf.concat(points, axis=0) for points in cotangent_points]
        if self.geometry is None:
            a, g = ff.dense_factors(inputs, derivatives, batch_size, self.use_bias)
        elif self.conv_factors == "kfc":
            a, g = ff.conv_kfc_factors(inputs, derivatives, batch_size, self.geometry, self.use_bias)
        else:
            a, g = ff.conv_cheap_factors(inputs, derivatives, batch_size, self.geometry, self.use_bias)
        return {"A": a, "G": g}

    def compute_inverse(self, factors: Arrays, damping: float, dtype: str) -> Arrays:
        shift_a, shift_g = factored_damping(factors["A"], factors["G"], damping)
        return {"A_inverse": damped_inverse(factors["A"], shift_a, dtype),
                "G_inverse": damped_inverse(factors["G"], shift_g, dtype)}

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        matrix = tf.reshape(grads[0], [-1, self.output_dim])
        if self.use_bias:
            matrix = tf.concat([matrix, grads[1][None, :]], axis=0)
        solved = kronecker_solve(matrix, self.inverse["A_inverse"], self.inverse["G_inverse"])
        if not self.use_bias:
            return [tf.reshape(solved, self.kernel_shape)]
        return [tf.reshape(solved[:-1], self.kernel_shape), solved[-1]]
