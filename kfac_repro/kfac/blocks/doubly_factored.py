"""Doubly-factored Kronecker blocks (paper §4, Eq. 4–12) for a layer whose input is a T × C spatial map per
example: a Dense layer over a flattened [H, W, C] map (AlexNet's fc6) or a Conv2D whose output is 1 × 1.

Per example, the input map A_b (T × C) is replaced by its best rank-1 approximation K_b Ψ_bᵀ (top singular
triple, K = √σ u, Ψ = √σ v), and F ≈ E[K Kᵀ] ⊗ E[Ψ Ψᵀ] ⊗ E[ds dsᵀ] (Eq. 8) over vec of the [T, C, d_out] kernel.
Damping: π_i λ^(1/3) I per factor with the geometric-mean π of Eq. 12, each damped factor inverted explicitly
(the preconditioner is three mode products). The bias has its own exact block E[ds dsᵀ] + λ I (its per-example
gradient is ds); it only ever solves one vector per step, so its refresh keeps just the Cholesky factor of
E[ds dsᵀ] + λ I (a third of an explicit inverse's work) and preconditioning does two triangular solves.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.base import Arrays, FisherBlock, InverseRecipes
from kfac_repro.kfac.blocks.fisher_factors import covariance
from kfac_repro.kfac.blocks.precision import rounded
from kfac_repro.kfac.layer_capture import LayerCall
from kfac_repro.kfac.linalg.damping import geometric_mean_pis
from kfac_repro.kfac.linalg.inverses import damped_cholesky, damped_inverse


def spatial_input_shape(layer: keras.layers.Layer) -> tuple[int, int] | None:
    """(T, C) of the map a layer reads: a Conv2D with 1 × 1 output, or a Dense fed by Flatten of [H, W, C]."""
    if isinstance(layer, keras.layers.Conv2D):
        height, width, channels = layer.input.shape[1:]
        if height is None or width is None:
            return None
        out_h, out_w = layer.output.shape[1:3]
        return (layer.kernel_size[0] * layer.kernel_size[1], channels) if (out_h, out_w) == (1, 1) else None
    if not isinstance(layer, keras.layers.Dense):
        return None
    try:
        source = layer.input._keras_history.operation
    except (AttributeError, ValueError):  # a subclassed model's layer has no graph to follow
        return None
    if not isinstance(source, keras.layers.Flatten):
        return None
    shape = source.input.shape
    if len(shape) != 4 or None in shape[1:]:
        return None
    return shape[1] * shape[2], shape[3]


def rank_one_factors(maps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """maps [N, T, C] → (K [N, T], Ψ [N, C]) with K Ψᵀ the best rank-1 approximation of each map (Eq. 5)."""
    singular_values, left, right = tf.linalg.svd(maps, full_matrices=False)
    root = tf.sqrt(singular_values[:, :1])
    return root * left[:, :, 0], root * right[:, :, 0]


BIAS_CHOLESKY = "bias_cholesky"  # the bias block's state: lower L with L Lᵀ = E[ds dsᵀ] + λ I


class DoublyFactoredBlock(FisherBlock):
    """E[KKᵀ] ⊗ E[ΨΨᵀ] ⊗ G over the kernel viewed as [T, C, d_out]; the bias in its own exact block."""

    kind = "doubly-factored"
    inverse_path = "cholesky, bias: cholesky factor"
    taps_preactivation = True
    rounds_products = True

    def __init__(self, layer: keras.layers.Layer, spatial: tuple[int, int]):
        kernel = layer.kernel
        bias = getattr(layer, "bias", None)
        super().__init__(layer, [kernel] if bias is None else [kernel, bias])
        self.use_bias = bias is not None
        self.kernel_shape = tuple(kernel.shape)
        self.locations, self.channels = spatial
        self.output_dim = int(self.kernel_shape[-1])
        if self.locations * self.channels * self.output_dim != int(np.prod(self.kernel_shape)):
            raise ValueError(f"layer {layer.name!r}: kernel {self.kernel_shape} is not [{spatial}, d_out]")
        self._add_factor("K", self.locations)
        self._add_factor("Psi", self.channels)
        self._add_factor("G", self.output_dim)
        if self.use_bias:
            self._add_inverse_state(BIAS_CHOLESKY, tf.eye(self.output_dim))

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        inputs = tf.concat([call.inputs for call in calls], axis=0)
        maps = tf.reshape(inputs, [-1, self.locations, self.channels])
        k, psi = rank_one_factors(maps)
        rows = tf.shape(maps)[0]
        derivatives = [tf.reshape(tf.concat(points, axis=0), [-1, self.output_dim]) for points in cotangent_points]
        return {
            "K": covariance(k, rows, self.product_dtype),
            "Psi": covariance(psi, rows, self.product_dtype),
            "G": tf.add_n([covariance(d, batch_size, self.product_dtype) for d in derivatives]),
        }

    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        names = ("K", "Psi", "G")
        pis = geometric_mean_pis([factors[n] for n in names])
        root = damping ** (1.0 / 3.0)
        recipes: InverseRecipes = {f"{n}_inverse": functools.partial(damped_inverse, factors[n], pi * root, dtype)
                                   for n, pi in zip(names, pis, strict=True)}
        if self.use_bias:
            recipes[BIAS_CHOLESKY] = functools.partial(damped_cholesky, factors["G"], damping, dtype)
        return recipes

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """(K̃⁻¹ ⊗ Ψ̃⁻¹ ⊗ G̃⁻¹) vec(∇W) as three mode products of the [T, C, d_out] kernel gradient."""
        t, c, o = self.locations, self.channels, self.output_dim
        k_inverse, psi_inverse, g_inverse, gradient = (
            rounded(v, self.product_dtype)
            for v in (self.inverse["K_inverse"], self.inverse["Psi_inverse"], self.inverse["G_inverse"], grads[0]))
        tensor = tf.matmul(k_inverse, tf.reshape(gradient, [t, c * o]))
        tensor = tf.einsum("jc,tco->tjo", psi_inverse, tf.reshape(tensor, [t, c, o]))
        solved = tf.matmul(tf.reshape(tensor, [t * c, o]), g_inverse)
        solved = tf.reshape(tf.cast(solved, grads[0].dtype), self.kernel_shape)
        if not self.use_bias:
            return [solved]
        bias = tf.linalg.cholesky_solve(self.inverse[BIAS_CHOLESKY], tf.reshape(grads[1], [o, 1]))
        return [solved, tf.reshape(bias, [o])]

    def inverse_costs(self) -> dict[str, float]:
        """As for every block, except the bias's Cholesky factor: d³/3 (potrf alone)."""
        costs = super().inverse_costs()
        if self.use_bias:
            costs[BIAS_CHOLESKY] /= 3.0
        return costs
