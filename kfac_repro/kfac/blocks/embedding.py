"""The Kronecker block of an Embedding layer: its input is a one-hot token e_v, so y = e_vᵀ W and the input factor
of the expand approximation (every position an example) is diagonal, the token frequencies:

A = diag(c) with c_v = (1/(N T)) #{(n, t): token v},  G = (1/B) Σ_{n,t} ds_{n,t} ds_{n,t}ᵀ  (ds = dL_n/dy_{n,t}),

over the [V, D] table; preconditioned as (A + π√λ I)⁻¹ ∇W (G + √λ/π I)⁻¹, π from the trace norms (paper Eq. 3).
A is kept as its diagonal (V numbers), never as a V × V matrix, and inverted elementwise; G by Cholesky.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kfac_repro.kfac.blocks.base import Arrays, FisherBlock, InverseRecipes
from kfac_repro.kfac.layer_capture import LayerCall
from kfac_repro.kfac.linalg.damping import factored_damping
from kfac_repro.kfac.linalg.inverses import damped_inverse, diagonal_inverse


class EmbeddingBlock(FisherBlock):
    """diag(token frequencies) ⊗ G over the embedding table."""

    kind = "kronecker-embedding"
    inverse_path = "elementwise A, cholesky G"

    def __init__(self, layer: keras.layers.Embedding):
        super().__init__(layer, [layer.embeddings])
        self.vocabulary, self.output_dim = (int(d) for d in layer.embeddings.shape)
        self.factors["A"] = tf.Variable(tf.zeros([self.vocabulary]), trainable=False, name=f"{self.name}_Adiag")
        self._add_inverse("A", tf.ones([self.vocabulary]))
        self._add_factor("G", self.output_dim)

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        tokens = tf.concat([tf.reshape(tf.cast(call.inputs, tf.int32), [-1]) for call in calls], axis=0)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(tokens, tf.float32), tokens, self.vocabulary)
        frequencies = counts / tf.cast(tf.size(tokens), tf.float32)
        g = tf.add_n([
            tf.add_n([_moment(tf.reshape(p, [-1, self.output_dim])) for p in points]) for points in cotangent_points
        ]) / tf.cast(batch_size, tf.float32)
        return {"A": frequencies, "G": g}

    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        shift_a, shift_g = factored_damping(factors["A"], factors["G"], damping)
        return {"A_inverse": functools.partial(diagonal_inverse, factors["A"], shift_a),
                "G_inverse": functools.partial(damped_inverse, factors["G"], shift_g, dtype)}

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """(A + δ_A)⁻¹ ∇W (G + δ_G I)⁻¹: a row scaling and one [V, D] × [D, D] product."""
        scaled = tf.convert_to_tensor(grads[0]) * self.inverse["A_inverse"][:, None]
        return [tf.matmul(scaled, self.inverse["G_inverse"])]


def _moment(rows: tf.Tensor) -> tf.Tensor:
    return tf.matmul(rows, rows, transpose_a=True)
