"""Kronecker-factored blocks for Dense and Conv2D layers: F̂ = A ⊗ G over vec of the [d_in(+1), d_out] kernel
(bias as the last row via the homogeneous coordinate), preconditioned as (A + π√λ I)⁻¹ ∇W (G + √λ/π I)⁻¹ (Eq. 3)
with the two damped inverses formed explicitly at each refresh.
"""

from __future__ import annotations

import abc
import functools
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks import fisher_factors as ff
from kfac_repro.kfac.blocks.base import Arrays, FisherBlock, InverseRecipes, kronecker_solve
from kfac_repro.kfac.layer_capture import LayerCall
from kfac_repro.kfac.linalg.damping import factored_damping
from kfac_repro.kfac.linalg.inverses import damped_inverse

ConvFactors = Literal["cheap", "kfc"]


class KroneckerFactoredBlock(FisherBlock):
    """The A ⊗ G machinery every Kronecker block shares: factors A [d_in(+1)]² and G [d_out]², their damped
    inverses, and the solve (A + π√λ I)⁻¹ M (G + √λ/π I)⁻¹ on the gradient viewed as a [d_in(+1), d_out] matrix M.
    Subclasses say how a batch gives A and G (`batch_statistics`) and how the gradients map to M and back."""

    taps_preactivation = True
    rounds_products = True

    def __init__(self, layer: keras.layers.Layer, variables: list[tf.Variable], input_dim: int, output_dim: int):
        super().__init__(layer, variables)
        self.input_dim, self.output_dim = input_dim, output_dim
        self._add_factor("A", input_dim)
        self._add_factor("G", output_dim)

    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        shift_a, shift_g = factored_damping(factors["A"], factors["G"], damping)
        return {"A_inverse": functools.partial(damped_inverse, factors["A"], shift_a, dtype),
                "G_inverse": functools.partial(damped_inverse, factors["G"], shift_g, dtype)}

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        return self.from_matrix(self.solve(self.to_matrix(grads)))

    def solve(self, matrix: tf.Tensor) -> tf.Tensor:
        """(A + π√λ I)⁻¹ M (G + √λ/π I)⁻¹ with the installed inverse, M of shape [input_dim, output_dim]."""
        return kronecker_solve(matrix, self.inverse["A_inverse"], self.inverse["G_inverse"], self.product_dtype)

    @abc.abstractmethod
    def to_matrix(self, grads: list[tf.Tensor]) -> tf.Tensor:
        """The gradients of `variables` as the [input_dim, output_dim] matrix the factors act on."""

    @abc.abstractmethod
    def from_matrix(self, matrix: tf.Tensor) -> list[tf.Tensor]:
        """The inverse of `to_matrix`: a [input_dim, output_dim] matrix back to tensors shaped like `variables`."""


class KroneckerBlock(KroneckerFactoredBlock):
    """A ⊗ G block of a Dense or Conv2D layer (kernel and bias together)."""

    def __init__(self, layer: keras.layers.Layer, conv_factors: ConvFactors = "cheap"):
        kernel = layer.kernel
        bias = getattr(layer, "bias", None)
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
        input_dim = int(np.prod(self.kernel_shape[:-1])) + int(self.use_bias)
        super().__init__(layer, [kernel] if bias is None else [kernel, bias], input_dim, int(self.kernel_shape[-1]))

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        inputs = tf.concat([call.inputs for call in calls], axis=0)
        derivatives = [tf.concat(points, axis=0) for points in cotangent_points]
        if self.geometry is None:
            a, g = ff.dense_factors(inputs, derivatives, batch_size, self.use_bias, self.product_dtype)
        elif self.conv_factors == "kfc":
            a, g = ff.conv_kfc_factors(inputs, derivatives, batch_size, self.geometry, self.use_bias,
                                       self.product_dtype)
        else:
            a, g = ff.conv_cheap_factors(inputs, derivatives, batch_size, self.geometry, self.use_bias,
                                         self.product_dtype)
        return {"A": a, "G": g}

    def to_matrix(self, grads: list[tf.Tensor]) -> tf.Tensor:
        matrix = tf.reshape(grads[0], [-1, self.output_dim])
        return tf.concat([matrix, grads[1][None, :]], axis=0) if self.use_bias else matrix

    def from_matrix(self, matrix: tf.Tensor) -> list[tf.Tensor]:
        if not self.use_bias:
            return [tf.reshape(matrix, self.kernel_shape)]
        return [tf.reshape(matrix[:-1], self.kernel_shape), matrix[-1]]
