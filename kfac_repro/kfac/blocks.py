"""Fisher blocks: the curvature of one layer's parameters, with its statistics, inverse and preconditioner.

Every block follows one life cycle: `batch_statistics` (in the TF step, from captured tensors) → EMA into its
factor variables → `compute_inverse` (numpy, from a snapshot of the factors; may run in a background thread)
→ `install_inverse` (assign to TF variables) → `precondition` (in the TF step).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.inverses import DampedEigen

Arrays = dict[str, np.ndarray]


class FisherBlock(abc.ABC):
    """The curvature block of a set of variables (those of one layer)."""

    kind: str = "block"
    taps_preactivation: bool = False  # True: statistics need the layer's pre-activation, else its output

    def __init__(self, layer: keras.layers.Layer, variables: Sequence[tf.Variable]):
        self.layer = layer
        self.name: str = layer.name
        self.variables = list(variables)
        self.factors: dict[str, tf.Variable] = {}
        self.inverse: dict[str, tf.Variable] = {}

    def _add_factor(self, name: str, dim: int) -> None:
        self.factors[name] = tf.Variable(tf.zeros([dim, dim]), trainable=False, name=f"{self.name}_{name}")
        self.inverse[f"{name}_vectors"] = tf.Variable(tf.eye(dim), trainable=False, name=f"{self.name}_{name}_Q")
        self.inverse[f"{name}_values"] = tf.Variable(tf.ones([dim]), trainable=False, name=f"{self.name}_{name}_e")

    @property
    def factor_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(var.shape) for name, var in self.factors.items()}

    @abc.abstractmethod
    def batch_statistics(self, calls: list, cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor) -> dict:
        """This mini-batch's factors, keyed like `factors`. `cotangent_points[k][c]`: derivative of the point of
        call c for Fisher cotangent k."""

    @abc.abstractmethod
    def compute_inverse(self, factors: Arrays, damping: float, dtype: str) -> dict[str, DampedEigen]:
        """Damped eigendecompositions of the given factor snapshot (pure numpy)."""

    @abc.abstractmethod
    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """(F̂ + damping)⁻¹ applied to the gradients of `variables`, using the installed inverse."""

    def install_inverse(self, inverse: dict[str, DampedEigen]) -> None:
        for name, eig in inverse.items():
            self.inverse[f"{name}_vectors"].assign(eig.vectors)
            self.inverse[f"{name}_values"].assign(eig.values)

    def eigen(self, name: str) -> tuple[tf.Variable, tf.Variable]:
        return self.inverse[f"{name}_vectors"], self.inverse[f"{name}_values"]


def rotate_solve(matrix: tf.Tensor, left: tuple[tf.Variable, tf.Variable], right: tuple) -> tf.Tensor:
    """L⁻¹ M R⁻¹ for L = Q_L diag(e_L) Q_Lᵀ, R likewise: Q_L [(Q_Lᵀ M Q_R) / (e_L e_Rᵀ)] Q_Rᵀ."""
    (q_left, e_left), (q_right, e_right) = left, right
    rotated = tf.matmul(tf.matmul(q_left, matrix, transpose_a=True), q_right)
    rotated = rotated / (e_left[:, None] * e_right[None, :])
    return tf.matmul(tf.matmul(q_left, rotated), q_right, transpose_b=True)
