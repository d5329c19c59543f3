"""The precision of the products K-FAC adds to a step: `KFACConfig.product_dtype`.

"float32" multiplies in the operands' own precision. "bfloat16" rounds the operands to bfloat16 (8-bit
significand: relative rounding error at most 2⁻⁹), multiplies them (float32 accumulation) and rounds the product
to bfloat16 before handing it back in the operands' dtype: to nearest in oneDNN's kernel (AVX512_BF16 CPUs) and the
GPU kernels, toward zero in TensorFlow's Eigen kernel, which CPUs without AVX512_BF16 run. Where the hardware
multiplies bfloat16 natively (AVX512_BF16 CPUs, tensor-core GPUs) that runs at about twice float32's rate. Factors,
inverses and updates are still stored and accumulated in float32.
"""

from __future__ import annotations

import tensorflow as tf

from kfac_repro.kfac.config import ProductDtype


def rounded(tensor: tf.Tensor, dtype: ProductDtype) -> tf.Tensor:
    """The operand as the product will read it: unchanged for "float32", rounded to bfloat16 otherwise."""
    return tensor if dtype == "float32" else tf.cast(tensor, tf.bfloat16)


def matmul(a: tf.Tensor, b: tf.Tensor, dtype: ProductDtype, *, transpose_a: bool = False,
           transpose_b: bool = False) -> tf.Tensor:
    """a·b (aᵀ with `transpose_a`, bᵀ with `transpose_b`) computed in `dtype`, returned in a's dtype."""
    return tf.cast(tf.matmul(rounded(a, dtype), rounded(b, dtype), transpose_a=transpose_a, transpose_b=transpose_b),
                   a.dtype)
