"""EKFAC (George et al. 2018, "Fast Approximate Natural Gradient Descent in a Kronecker-factored Eigenbasis") for
the A ⊗ G block of a Dense or Conv2D layer (`KFACConfig.eigenvalue_correction`).

With the gradient as the [d_in(+1), d_out] matrix M of `KroneckerBlock` (input side A, output side G):
- each inverse refresh eigendecomposes A = U_A diag(a) U_Aᵀ and G = U_G diag(g) U_Gᵀ (the eigenbasis);
- each statistics step measures s_batch = (1/B) Σ_n Σ_k (U_Aᵀ ∇W_nk U_G)² (elementwise), ∇W_nk = Σ_t ā_nt ds_ntkᵀ
  the gradient of example n's own loss for Fisher cotangent k, summed over the positions t that share the weights
  (a Dense layer's sequence positions, a convolution's output locations from im2col patches; calls of a layer
  called several times) before squaring: the per-example diagonal of the Fisher in the eigenbasis, exact for every
  example, not K-FAC's factored approximation of it. It folds into s ← δ s + (1 − δ) s_batch, δ = min(1 − 1/c,
  stats_decay), c counting the statistics steps since the refresh (s starts afresh in each eigenbasis; until the
  first statistics step after a refresh s = a gᵀ, K-FAC's eigenvalues);
- the step is U_A [(U_Aᵀ M U_G) / (s + λ)] U_Gᵀ, λ = damping + weight_decay added to every entry of s.
The statistics step that measures s_batch also preconditions that batch's gradient with it (both front ends fold
statistics before preconditioning). A and G are the block's usual factors (`conv_factors` for a convolution).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks import fisher_factors as ff
from kfac_repro.kfac.blocks.base import Arrays, InverseRecipes
from kfac_repro.kfac.blocks.kronecker import ConvFactors, KroneckerBlock
from kfac_repro.kfac.blocks.precision import matmul
from kfac_repro.kfac.layer_capture import LayerCall
from kfac_repro.kfac.linalg.device import current_device, eigh_on_device
from kfac_repro.kfac.linalg.inverses import CurvatureDiverged


class EigenbasisBlock(KroneckerBlock):
    """A Dense or Conv2D layer's block preconditioned in the eigenbasis of its factors with a re-estimated
    scaling (see the module docstring). Installed by each refresh: "A_eigen", "G_eigen" ([U; aᵀ], the eigenvectors
    as columns over a last row of eigenvalues), "damping" (λ) and "scaling_count" (c, reset to 0)."""

    inverse_path = "eigh"

    def __init__(self, layer: keras.layers.Layer, conv_factors: ConvFactors = "cheap"):
        super().__init__(layer, conv_factors)
        self.kind = "ekfac-" + self.kind.removeprefix("kronecker-")
        self.inverse = {}  # the eigenbases stand in for K-FAC's damped inverses
        for name, dim in (("A", self.input_dim), ("G", self.output_dim)):
            self._add_inverse_state(f"{name}_eigen", tf.concat([tf.eye(dim), tf.ones([1, dim])], axis=0))
        self._add_inverse_state("damping", tf.constant(0.0))
        self._add_inverse_state("scaling_count", tf.constant(0.0))
        self.scaling = {"scaling": tf.Variable(tf.ones([self.input_dim, self.output_dim]), trainable=False,
                                               name=f"{self.name}_scaling")}

    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        return {"A_eigen": functools.partial(eigenbasis, factors["A"], dtype),
                "G_eigen": functools.partial(eigenbasis, factors["G"], dtype),
                "damping": functools.partial(np.array, damping, np.float32),
                "scaling_count": functools.partial(np.array, 0.0, np.float32)}

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        statistics = super().batch_statistics(calls, cotangent_points, batch_size)
        basis_a, _ = _split(self.inverse["A_eigen"])
        basis_g, _ = _split(self.inverse["G_eigen"])
        inputs = matmul(tf.concat([self._example_rows(call.inputs) for call in calls], axis=1), basis_a,
                        self.product_dtype)
        squares = []
        for points in cotangent_points:
            rows = tf.concat([_by_example(point) for point in points], axis=1)
            squares.append(projected_squares(inputs, matmul(rows, basis_g, self.product_dtype)))
        statistics["scaling"] = tf.add_n(squares) / tf.cast(batch_size, tf.float32)
        return statistics

    def scaling_assignments(self, batch: list[tf.Tensor], stats_decay: float) -> list[tuple]:
        """s ← δ s + (1 − δ) s_batch, δ = min(1 − 1/c, stats_decay), c the statistics steps since the refresh."""
        count = self.inverse["scaling_count"] + 1.0
        decay = tf.minimum(1.0 - 1.0 / count, stats_decay)
        scaling = self.scaling["scaling"]
        return [(scaling, decay * scaling + (1.0 - decay) * batch[0]), (self.inverse["scaling_count"], count)]

    def solve(self, matrix: tf.Tensor) -> tf.Tensor:
        """U_A [(U_Aᵀ M U_G) / (s + λ)] U_Gᵀ, with s = a gᵀ until the first statistics step in this basis."""
        basis_a, values_a = _split(self.inverse["A_eigen"])
        basis_g, values_g = _split(self.inverse["G_eigen"])
        dtype = self.product_dtype
        projected = matmul(matmul(basis_a, matrix, dtype, transpose_a=True), basis_g, dtype)
        fresh = values_a[:, None] * values_g[None, :]
        scaling = tf.where(self.inverse["scaling_count"] > 0, self.scaling["scaling"], fresh)
        scaled = projected / (scaling + self.inverse["damping"])
        return matmul(matmul(basis_a, scaled, dtype), basis_g, dtype, transpose_b=True)

    def _example_rows(self, inputs: tf.Tensor) -> tf.Tensor:
        """[N, positions, input_dim]: each example's inputs (im2col patches for a convolution), homogeneous."""
        rows = _by_example(inputs if self.geometry is None else ff.conv_patches(inputs, self.geometry))
        return tf.concat([rows, tf.ones_like(rows[:, :, :1])], axis=2) if self.use_bias else rows


def eigenbasis(factor: np.ndarray, dtype: str) -> np.ndarray:
    """[U; aᵀ] of the symmetric PSD ½(F + Fᵀ) = U diag(a) Uᵀ in `dtype` (negative round-off of a clipped to 0),
    float32: by LAPACK's eigh on the host, or tf.linalg's on the device `linalg.device.on_device` chose
    (`inversion_device: accelerator`). CurvatureDiverged if F is not finite."""
    matrix = np.asarray(factor, dtype=dtype)
    if not np.all(np.isfinite(matrix)):
        raise CurvatureDiverged(f"a {matrix.shape[0]}×{matrix.shape[1]} Kronecker factor has NaN or infinite "
                                "entries: the statistics diverged (try a larger damping or a smaller kl_clip)")
    symmetric = 0.5 * (matrix + matrix.T)
    values, vectors = np.linalg.eigh(symmetric) if current_device() is None else eigh_on_device(symmetric)
    return np.concatenate([vectors, np.maximum(values, 0.0)[None, :]], axis=0).astype(np.float32)


def projected_squares(inputs: tf.Tensor, derivatives: tf.Tensor) -> tf.Tensor:
    """Σ_n (Σ_t x_nt y_ntᵀ)², elementwise, for x [N, T, d_x] and y [N, T, d_y]: the summed squares of the per-example
    outer-product sums (with one position, (x²)ᵀ(y²) without forming them)."""
    if inputs.shape[1] == 1:
        return tf.matmul(tf.square(inputs[:, 0]), tf.square(derivatives[:, 0]), transpose_a=True)
    return tf.reduce_sum(tf.square(tf.matmul(inputs, derivatives, transpose_a=True)), axis=0)


def _by_example(tensor: tf.Tensor) -> tf.Tensor:
    """[N, ..., d] -> [N, positions, d] (positions static where the shape is)."""
    middle = tensor.shape[1:-1]
    positions = middle.num_elements() if middle.is_fully_defined() else -1
    return tf.reshape(tensor, [tf.shape(tensor)[0], positions, tensor.shape[-1]])


def _split(state: tf.Variable) -> tuple[tf.Tensor, tf.Tensor]:
    """[U; aᵀ] -> (U, a)."""
    return state[:-1], state[-1]
