"""The KFC input factor (paper Eq. 15) of a 2-D convolution without im2col, from sums over offset differences.

With patch entry (i, c) at output location t reading x[s·t + d·i − p, c] (zero outside the image; i a 2-D kernel
tap), the factor's block between taps i and j = i + m is Σ_{n,t} x[u] x[u + d·m]ᵀ over u = s·t + d·i − p. So it
is a sum, over the input positions u that tap i reads (and whose partner u + d·m lies inside), of the products
P_m[u] = Σ_n x_n[u] x_n[u + d·m]ᵀ: one batched product per offset difference m ((2k−1)² of them, half by
symmetry) instead of one per pair of taps (k⁴), and the border, stride and dilation corrections are 0/1
selections over u, separable per axis. Exact: equal to im2col's E[ā āᵀ] up to round-off (the products P_m in
`dtype`, see `precision`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.precision import ProductDtype, rounded

if TYPE_CHECKING:  # fisher_factors imports this module
    from kfac_repro.kfac.blocks.fisher_factors import ConvGeometry


def kfc_input_factor(x: tf.Tensor, geometry: ConvGeometry, use_bias: bool,
                     dtype: ProductDtype = "float32") -> tf.Tensor:
    """E over examples and output locations of ā ā (ā the homogeneous im2col patch, ordered (k_h, k_w, C)),
    for x [N, H, W, C] with static H, W, C: [k_h·k_w·C (+1), same]."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if height is None or width is None or channels is None:
        raise ValueError("conv K-FAC statistics need static spatial and channel input dimensions")
    (k_h, k_w), (d_h, d_w) = geometry.kernel_size, geometry.dilation
    select_h, select_w = _selectors(height, 0, geometry), _selectors(width, 1, geometry)
    positions = rounded(tf.transpose(x, [1, 2, 0, 3]), dtype)  # [H, W, N, C]: products over N, batched over u
    half = _half_offsets(k_h, k_w)
    blocks = []
    for m_h, m_w in half:
        lo_h, hi_h = max(0, -d_h * m_h), min(height, height - d_h * m_h)
        lo_w, hi_w = max(0, -d_w * m_w), min(width, width - d_w * m_w)
        if lo_h >= hi_h or lo_w >= hi_w:  # the two taps never both lie inside: this block is zero
            blocks.append(tf.zeros([k_h, k_w, channels, channels], x.dtype))
            continue
        here = positions[lo_h:hi_h, lo_w:hi_w]
        there = positions[lo_h + d_h * m_h : hi_h + d_h * m_h, lo_w + d_w * m_w : hi_w + d_w * m_w]
        products = tf.matmul(here, there, transpose_a=True)  # [h, w, C, C]: Σ_n x[u] x[u + d·m]ᵀ
        products = tf.cast(products, x.dtype)
        rows = tf.constant(select_h[m_h + k_h - 1, :, lo_h:hi_h], x.dtype)
        cols = tf.constant(select_w[m_w + k_w - 1, :, lo_w:hi_w], x.dtype)
        blocks.append(tf.einsum("iu,jv,uvcd->ijcd", rows, cols, products))
    stacked = tf.stack(blocks)  # [M, k_h, k_w, C, C]: block (i, i + m) for m in `half`
    source = tf.concat([stacked, tf.transpose(stacked, [0, 1, 2, 4, 3])], axis=0)
    source = tf.reshape(source, [-1, channels, channels])
    gathered = tf.gather(source, _assembly_index(k_h, k_w, half))  # [k_h, k_w, k_h, k_w, C, C]
    size = k_h * k_w * channels
    factor = tf.reshape(tf.transpose(gathered, [0, 1, 4, 2, 3, 5]), [size, size])
    count = tf.cast(tf.shape(x)[0], x.dtype) * float(geometry.output_size(height, 0) * geometry.output_size(width, 1))
    factor /= count
    if not use_bias:
        return factor
    taps_h = tf.constant(select_h[k_h - 1], x.dtype)
    taps_w = tf.constant(select_w[k_w - 1], x.dtype)
    mean = tf.reshape(tf.einsum("iu,jv,uvc->ijc", taps_h, taps_w, tf.reduce_sum(x, axis=0)), [size]) / count
    return tf.concat([tf.concat([factor, mean[:, None]], axis=1),
                      tf.concat([mean[None, :], tf.ones([1, 1], x.dtype)], axis=1)], axis=0)


def offsets_cheaper(input_shape: tuple[int | None, ...], geometry: ConvGeometry) -> bool:
    """Whether the offset sums beat im2col for an [H, W, C] input: when they need at most 1/3 of its multiply-adds
    (1/8 under 16 channels). Their many small C × C products run slower per multiply-add than im2col's one large
    product on CPU: measured 2–3× slower at 32–64 channels, 4–11× at 3 channels (TF 2.21, 2 shared cores), so
    1×1 kernels, 3×3 kernels at stride 2 and a 7×7 stride-2 RGB stem stay on im2col."""
    ratio = offset_cost_ratio(input_shape, geometry)
    channels = input_shape[-1]
    return ratio <= (1 / 3 if channels is not None and channels >= 16 else 1 / 8)


def offset_cost_ratio(input_shape: tuple[int | None, ...], geometry: ConvGeometry) -> float:
    """Multiply-adds of the offset-difference sums over those of im2col's patch product (per example), for an
    [H, W, C] input; infinite when a dimension is not static (the offset sums need them)."""
    height, width, channels = input_shape
    if height is None or width is None or channels is None:
        return float("inf")
    k_h, k_w = geometry.kernel_size
    locations = geometry.output_size(height, 0) * geometry.output_size(width, 1)
    offsets = len(_half_offsets(k_h, k_w))
    return offsets * height * width * channels**2 / (locations * (k_h * k_w * channels + 1) ** 2)


def _half_offsets(k_h: int, k_w: int) -> list[tuple[int, int]]:
    """Offset differences m with m_h > 0, or m_h = 0 and m_w ≥ 0: the rest are their transposes."""
    return [(m_h, m_w) for m_h in range(k_h) for m_w in range(-(k_w - 1), k_w) if m_h > 0 or m_w >= 0]


def _assembly_index(k_h: int, k_w: int, half: list[tuple[int, int]]) -> np.ndarray:
    """Flat index into [stacked; stackedᵀ] (each [M, k_h, k_w]) of the block between taps (i_h, i_w), (j_h, j_w)."""
    position = {m: n for n, m in enumerate(half)}
    per_offset = k_h * k_w
    index = np.zeros((k_h, k_w, k_h, k_w), np.int64)
    for i_h in range(k_h):
        for i_w in range(k_w):
            for j_h in range(k_h):
                for j_w in range(k_w):
                    m = (j_h - i_h, j_w - i_w)
                    if m in position:  # block (i, i + m) itself
                        index[i_h, i_w, j_h, j_w] = position[m] * per_offset + i_h * k_w + i_w
                    else:  # the transpose of block (j, j − m)
                        flipped = position[(-m[0], -m[1])]
                        index[i_h, i_w, j_h, j_w] = (len(half) + flipped) * per_offset + j_h * k_w + j_w
    return index


def _selectors(size: int, axis: int, geometry: ConvGeometry) -> np.ndarray:
    """S[m + k − 1, i, u] = 1 if tap i reads input index u at some output location and u + d·m is inside too."""
    k, s, d = geometry.kernel_size[axis], geometry.strides[axis], geometry.dilation[axis]
    out, pad = geometry.output_size(size, axis), geometry.pad_before(size, axis)
    select = np.zeros((2 * k - 1, k, size), np.float32)
    for tap in range(k):
        read = s * np.arange(out) + d * tap - pad
        read = read[(read >= 0) & (read < size)]
        for m in range(-(k - 1), k):
            partner = read + d * m
            select[m + k - 1, tap, read[(partner >= 0) & (partner < size)]] = 1.0
    return select
