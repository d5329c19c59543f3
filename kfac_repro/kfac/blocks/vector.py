"""Blocks over a layer's parameters as one flat vector θ (n entries): F = E[g_b g_bᵀ] from per-example gradients
g_b of the sampled-target loss, kept exact (n × n, for small vectors) or diagonal; inverse (F + λI)⁻¹, formed
explicitly (Cholesky) or elementwise.

ScaleShiftBlock: BatchNormalization γ and β (paper §6.2.1), g_b = [Σ_loc dy_b ⊙ x̂_b, Σ_loc dy_b], with the
normalised input x̂ = (y − β)/γ recovered from the layer's output y (batch statistics held fixed, as the paper's
per-example gradient structure does). GenericBlock: any other layer without cross-example interaction,
g_b from a per-example vector–Jacobian product of the layer's own call.
"""

from __future__ import annotations

import abc
import functools

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.base import Arrays, FisherBlock, InverseRecipes
from kfac_repro.kfac.layer_capture import LayerCall
from kfac_repro.kfac.linalg.inverses import damped_inverse, diagonal_inverse


class VectorBlock(FisherBlock):
    """Exact (n ≤ exact_max) or diagonal Fisher of the concatenated, flattened variables."""

    def __init__(self, layer: keras.layers.Layer, variables: list[tf.Variable], exact_max: int):
        super().__init__(layer, variables)
        self.sizes = [int(np.prod(v.shape)) for v in self.variables]
        self.size = sum(self.sizes)
        self.exact = self.size <= exact_max
        self.kind = f"{self.kind}-{'exact' if self.exact else 'diagonal'}"
        if self.exact:
            self._add_factor("F", self.size)
        else:
            self.inverse_path = "elementwise"
            self.factors["F"] = tf.Variable(tf.zeros([self.size]), trainable=False, name=f"{self.name}_Fdiag")
            self._add_inverse("F", tf.ones([self.size]))

    @abc.abstractmethod
    def per_example_gradients(self, calls: list[LayerCall], points: list[tf.Tensor]) -> tf.Tensor:
        """[N, n]: per-example gradients of the layer's variables, flattened and concatenated."""

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        total = None
        for points in cotangent_points:
            g = self.per_example_gradients(calls, points)
            moment = tf.matmul(g, g, transpose_a=True) if self.exact else tf.reduce_sum(tf.square(g), axis=0)
            total = moment if total is None else total + moment
        assert total is not None
        return {"F": total / tf.cast(batch_size, total.dtype)}

    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        if self.exact:
            return {"F_inverse": functools.partial(damped_inverse, factors["F"], damping, dtype)}
        return {"F_inverse": functools.partial(diagonal_inverse, factors["F"], damping)}

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
        solved = tf.linalg.matvec(self.inverse["F_inverse"], flat) if self.exact else flat * self.inverse["F_inverse"]
        pieces = tf.split(solved, self.sizes)
        return [tf.reshape(p, v.shape) for p, v in zip(pieces, self.variables, strict=True)]


class ScaleShiftBlock(VectorBlock):
    """BatchNormalization or LayerNormalization (over one axis): γ (if scale) and β (if center)."""

    kind = "scale-shift"

    def __init__(self, layer: keras.layers.BatchNormalization | keras.layers.LayerNormalization, exact_max: int):
        self.has_scale, self.has_center = layer.gamma is not None, layer.beta is not None
        variables = [v for v in (layer.gamma, layer.beta) if v is not None]
        super().__init__(layer, variables, exact_max)

    def per_example_gradients(self, calls: list[LayerCall], points: list[tf.Tensor]) -> tf.Tensor:
        axis = self.layer.axis if isinstance(self.layer.axis, int) else self.layer.axis[0]
        pieces_per_call = []
        for call, dy in zip(calls, points, strict=True):
            y = call.point
            rank = len(y.shape)
            channel_axis = axis % rank
            reduce_axes = [i for i in range(1, rank) if i != channel_axis]
            pieces = []
            if self.has_scale:
                shift = self.layer.beta if self.has_center else 0.0
                x_hat = (y - _broadcast(shift, rank, channel_axis)) / _broadcast(
                    _safe(self.layer.gamma), rank, channel_axis
                )
                pieces.append(_sum_to_channels(dy * x_hat, reduce_axes, channel_axis))
            if self.has_center:
                pieces.append(_sum_to_channels(dy, reduce_axes, channel_axis))
            pieces_per_call.append(tf.concat(pieces, axis=1))
        return tf.concat(pieces_per_call, axis=0)


class GenericBlock(VectorBlock):
    """Any layer whose output for an example depends only on that example (no batch statistics)."""

    kind = "generic"

    def __init__(self, layer: keras.layers.Layer, exact_max: int):
        super().__init__(layer, list(layer.trainable_variables), exact_max)

    def per_example_gradients(self, calls: list[LayerCall], points: list[tf.Tensor]) -> tf.Tensor:
        original_call = type(self.layer).call
        rows = []
        for call, dy in zip(calls, points, strict=True):

            def one_example(pair: tuple[tf.Tensor, tf.Tensor], kwargs: dict = call.kwargs) -> tf.Tensor:
                x_b, dy_b = pair
                with tf.GradientTape() as tape:
                    y_b = original_call(self.layer, x_b[None], **kwargs)
                grads = tape.gradient(y_b, self.variables, output_gradients=dy_b[None])
                return tf.concat(
                    [tf.reshape(tf.zeros_like(v) if g is None else tf.convert_to_tensor(g), [-1])
                     for g, v in zip(grads, self.variables, strict=True)],
                    axis=0,
                )

            rows.append(tf.vectorized_map(one_example, (call.inputs, dy)))
        return tf.concat(rows, axis=0)


def _safe(gamma: tf.Tensor) -> tf.Tensor:
    tiny = tf.constant(1e-12, gamma.dtype)
    return tf.where(tf.abs(gamma) < tiny, tf.where(gamma < 0, -tiny, tiny), gamma)


def _broadcast(vector: tf.Tensor | float, rank: int, channel_axis: int) -> tf.Tensor | float:
    if not isinstance(vector, tf.Tensor | tf.Variable):
        return vector
    shape = [1] * rank
    shape[channel_axis] = -1
    return tf.reshape(vector, shape)


def _sum_to_channels(values: tf.Tensor, reduce_axes: list[int], channel_axis: int) -> tf.Tensor:
    summed = tf.reduce_sum(values, axis=reduce_axes) if reduce_axes else values
    return tf.reshape(summed, [tf.shape(values)[0], -1])
