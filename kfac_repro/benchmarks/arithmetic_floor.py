"""The arithmetic floor of an MLP's update: its multiply-adds, counted from the layer widths, at the rate of
TensorFlow's own matrix product measured in the same process. No update that does this arithmetic can take less
time, so the floor divided by SGD's measured step is the lowest ratio to SGD that this machine allows.

Counts for a batch of N through dense layers d_in → d_out (K-FAC's factors carry the homogeneous coordinate, so
its input side is d_in + 1):
- SGD: the forward product N·d_in·d_out, the weight gradient as much again, and the input gradient as much
  again for every layer but the first (nothing needs the gradient of the data);
- K-FAC adds the sampled-target backward pass (input gradients only), the factor products N·((d_in+1)² + d_out²)
  and the preconditioning (A + δI)⁻¹ ∇W (G + δI)⁻¹: (d_in+1)²·d_out + (d_in+1)·d_out².
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class MultiplyAdds:
    """Multiply-adds of one update: SGD's forward and backward pass, and what K-FAC adds to them."""

    sgd: float
    sampled_backward: float
    factor_products: float
    preconditioning: float

    @property
    def kfac_products(self) -> float:
        """The products that `KFACConfig.product_dtype` may round: factor statistics and preconditioning."""
        return self.factor_products + self.preconditioning

    @property
    def kfac(self) -> float:
        return self.sgd + self.sampled_backward + self.kfac_products


def mlp_multiply_adds(widths: Sequence[int], batch_size: int) -> MultiplyAdds:
    """The counts of the module docstring for an MLP of layer `widths` (input first)."""
    layers = list(itertools.pairwise(widths))
    forward = sum(batch_size * d_in * d_out for d_in, d_out in layers)
    input_gradients = forward - batch_size * widths[0] * widths[1]
    return MultiplyAdds(
        sgd=2 * forward + input_gradients,
        sampled_backward=input_gradients,
        factor_products=sum(batch_size * ((d_in + 1) ** 2 + d_out**2) for d_in, d_out in layers),
        preconditioning=sum((d_in + 1) ** 2 * d_out + (d_in + 1) * d_out**2 for d_in, d_out in layers),
    )


PRODUCT_SIZE = 2048  # side of the square product whose rate the floor uses


def matmul_rate(dtype: tf.DType, size: int = PRODUCT_SIZE, repeats: int = 10) -> float:
    """Multiply-adds per second of TensorFlow's product of two size × size matrices of `dtype` (median of
    `repeats`, after one untimed product)."""
    a = tf.random.stateless_normal((size, size), seed=(0, 0), dtype=tf.float32)
    a = tf.cast(a, dtype)
    product = tf.function(lambda m: tf.matmul(m, m))
    product(a).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a).numpy()
        times.append(time.perf_counter() - start)
    return size**3 / statistics.median(times)


@dataclass(frozen=True)
class Floor:
    """The lowest time of K-FAC's update (without inversion) at the measured product rates, as a ratio to SGD's
    measured step: all in float32, and with the products of `kfac_products` in bfloat16."""

    float32_rate: float
    bfloat16_rate: float
    float32_ratio: float
    bfloat16_ratio: float


def floor(counts: MultiplyAdds, sgd_seconds: float) -> Floor:
    """Measure both product rates now and divide the counted arithmetic by them and by `sgd_seconds`."""
    float32_rate, bfloat16_rate = matmul_rate(tf.float32), matmul_rate(tf.bfloat16)
    rest = counts.sgd + counts.sampled_backward
    return Floor(float32_rate, bfloat16_rate, counts.kfac / float32_rate / sgd_seconds,
                 (rest / float32_rate + counts.kfac_products / bfloat16_rate) / sgd_seconds)
