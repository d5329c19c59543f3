"""Kronecker-factor statistics of one mini-batch, from captured layer inputs and pre-activation derivatives.

Conventions: a Keras kernel maps inputs to outputs as s = a W (+ b), W of shape [d_in, d_out]; the homogeneous
coordinate appends 1 to a (and the bias row to W), so the block of vec(DW) is approximated by A ⊗ G with
A = E[a aᵀ] of shape [d_in+1, d_in+1] and G = E[ds dsᵀ] of shape [d_out, d_out] (paper Eq. 2). `ds` is the
derivative of each example's own loss (sampled targets), so sums over examples are divided by the batch size B.
Every function's `dtype` is the precision of its products (`precision`); the factors come back in the inputs' dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from kfac_repro.kfac.blocks.kfc_offsets import kfc_input_factor, offsets_cheaper
from kfac_repro.kfac.blocks.precision import ProductDtype, matmul


@dataclass(frozen=True)
class ConvGeometry:
    """The spatial hyper-parameters of a 2-D convolution (channels_last)."""

    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str  # "valid" or "same"
    dilation: tuple[int, int]

    def output_size(self, size: int, axis: int) -> int:
        """Number of output locations along one spatial axis, as TF computes it."""
        k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation[axis]
        if self.padding == "same":
            return math.ceil(size / s)
        return (size - d * (k - 1) - 1) // s + 1

    def pad_before(self, size: int, axis: int) -> int:
        """Zero rows/columns TF adds before the input for 'same' padding (the smaller half)."""
        if self.padding != "same":
            return 0
        k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation[axis]
        total = max((self.output_size(size, axis) - 1) * s + d * (k - 1) + 1 - size, 0)
        return total // 2


def append_homogeneous(a: tf.Tensor) -> tf.Tensor:
    """[N, d] -> [N, d+1] with a last column of ones (the bias's input)."""
    return tf.concat([a, tf.ones_like(a[:, :1])], axis=1)


def covariance(rows: tf.Tensor, denominator: tf.Tensor | float, dtype: ProductDtype = "float32",
               centre: bool = False) -> tf.Tensor:
    """rowsᵀ rows / denominator, for rows of shape [N, d].

    With `centre` and bfloat16 products it is computed as (R − 1μᵀ)ᵀ(R − 1μᵀ) + N μμᵀ, μ the mean row, with only the
    centred product rounded: the rounding then errs relative to the rows' spread, not to their mean. Input factors
    ask for it (the homogeneous column of ones, which centring makes exactly zero; post-ReLU activations); the
    derivatives of sampled-target losses have mean about zero, so their factors do not.
    """
    if dtype == "float32" or not centre:
        return matmul(rows, rows, dtype, transpose_a=True) / tf.cast(denominator, rows.dtype)
    mean = tf.reduce_mean(rows, axis=0, keepdims=True)
    centred = rows - mean
    count = tf.cast(tf.shape(rows)[0], rows.dtype)
    gram = matmul(centred, centred, dtype, transpose_a=True) + count * tf.matmul(mean, mean, transpose_a=True)
    return gram / tf.cast(denominator, rows.dtype)


def dense_factors(
    a: tf.Tensor, ds: list[tf.Tensor], batch_size: tf.Tensor, use_bias: bool, dtype: ProductDtype = "float32"
) -> tuple[tf.Tensor, tf.Tensor]:
    """A = mean over rows of ā āᵀ; G = (1/B) Σ_rows ds dsᵀ, summed over the cotangent samples in `ds`.

    a: [..., d_in]; each ds: [..., d_out]. Leading axes beyond the batch (a Dense applied to a sequence) count as
    locations sharing the weights (paper App. C), so they are lumped like the locations of a convolution.
    """
    rows = tf.reshape(a, [-1, a.shape[-1]])
    if use_bias:
        rows = append_homogeneous(rows)
    input_factor = covariance(rows, tf.shape(rows)[0], dtype, centre=True)
    output_factor = tf.add_n([covariance(tf.reshape(d, [-1, d.shape[-1]]), batch_size, dtype) for d in ds])
    return input_factor, output_factor


def conv_patches(x: tf.Tensor, geometry: ConvGeometry) -> tf.Tensor:
    """im2col: [B, H, W, C] -> [B, H_out, W_out, k_h·k_w·C], patch entries ordered (k_h, k_w, C) like the kernel."""
    return tf.image.extract_patches(
        x,
        sizes=[1, *geometry.kernel_size, 1],
        strides=[1, *geometry.strides, 1],
        rates=[1, *geometry.dilation, 1],
        padding=geometry.padding.upper(),
    )


def conv_kfc_factors(
    x: tf.Tensor, ds: list[tf.Tensor], batch_size: tf.Tensor, geometry: ConvGeometry, use_bias: bool,
    dtype: ProductDtype = "float32",
) -> tuple[tf.Tensor, tf.Tensor]:
    """KFC (paper Eq. 15): F ≈ |T|·E_{x,t}[a aᵀ] ⊗ E_{x,t}[ds dsᵀ], the |T| folded into G.

    A = E over examples and locations of the homogeneous patch ā_t ā_tᵀ (from offset-difference sums, or im2col
    where that costs less: `offsets_cheaper`); G = (1/B) Σ_{b,t} ds_t ds_tᵀ.
    x: [N, H, W, C_in] layer inputs (N = B, or a multiple for a layer called several times);
    each ds: [N, H_out, W_out, C_out].
    """
    if offsets_cheaper(tuple(x.shape[1:]), geometry):
        input_factor = kfc_input_factor(x, geometry, use_bias, dtype)
    else:
        input_factor = im2col_input_factor(x, geometry, use_bias, dtype)
    output_factor = tf.add_n([covariance(tf.reshape(d, [-1, d.shape[-1]]), batch_size, dtype) for d in ds])
    return input_factor, output_factor


def im2col_input_factor(x: tf.Tensor, geometry: ConvGeometry, use_bias: bool,
                        dtype: ProductDtype = "float32") -> tf.Tensor:
    """KFC's A by im2col: the mean over examples and locations of ā ā for the materialised homogeneous patches."""
    patches = conv_patches(x, geometry)
    rows = tf.reshape(patches, [-1, patches.shape[-1]])
    if use_bias:
        rows = append_homogeneous(rows)
    return covariance(rows, tf.shape(rows)[0], dtype, centre=True)


def conv_cheap_factors(
    x: tf.Tensor, ds: list[tf.Tensor], batch_size: tf.Tensor, geometry: ConvGeometry, use_bias: bool,
    dtype: ProductDtype = "float32",
) -> tuple[tf.Tensor, tf.Tensor]:
    """Appendix A (Eq. 16–19): F ≈ |T|²·E_x[Ā Āᵀ] ⊗ E_x[D̄ D̄ᵀ], the |T|² folded into G.

    Ā = location-averaged patch (homogeneous coordinate 1), D̄ = location-summed derivative:
    A = E_b[Ā_b Ā_bᵀ], G = E_b[(Σ_t ds_bt)(Σ_t ds_bt)ᵀ].
    """
    mean_patch = location_mean_patches(x, geometry)
    if use_bias:
        mean_patch = append_homogeneous(mean_patch)
    input_factor = covariance(mean_patch, tf.shape(mean_patch)[0], dtype, centre=True)
    output_factor = tf.add_n([covariance(location_sums(d), batch_size, dtype) for d in ds])
    return input_factor, output_factor


def location_sums(maps: tf.Tensor) -> tf.Tensor:
    """Σ_t maps[:, t, :] over the locations of [N, H, W, C] maps: [N, C].

    Computed as 1ᵀ M for each example's [H·W, C] view M (one broadcast product), which on TensorFlow's CPU kernels
    reads a large map about twice as fast as reduce_sum over the two middle axes (see the commit that added it).
    """
    height, width, channels = (tf.shape(maps)[axis] if maps.shape[axis] is None else maps.shape[axis]
                               for axis in (1, 2, 3))
    rows = tf.reshape(maps, [-1, height * width, channels])
    return tf.matmul(tf.ones([1, height * width], maps.dtype), rows)[:, 0, :]


def location_mean_patches(x: tf.Tensor, geometry: ConvGeometry) -> tf.Tensor:
    """Per-example mean over output locations of the im2col patch, [B, k_h·k_w·C], without materialising patches.

    The patch entry (i, j, c) at location (t_h, t_w) reads x[s_h t_h + d_h i − p_h, s_w t_w + d_w j − p_w, c] (zero
    outside), so its sum over locations is Σ_{h,w} M_h[i,h] M_w[j,w] x[h,w,c] with 0/1 selector matrices M: two
    batched products, over h on x viewed as [B, H, W·C], then over w on the result viewed as [B·k_h, W, C], neither
    of which moves x in memory (a 3-operand einsum transposed x first; see commit 4cc0ca2 for the timings).
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if height is None or width is None or channels is None:
        raise ValueError("conv K-FAC statistics need static spatial and channel input dimensions")
    select_h = tf.cast(_location_selector(height, 0, geometry), x.dtype)
    select_w = tf.cast(_location_selector(width, 1, geometry), x.dtype)
    rows = tf.matmul(select_h, tf.reshape(x, [-1, height, width * channels]))  # [B, k_h, W·C]
    sums = tf.matmul(select_w, tf.reshape(rows, [-1, width, channels]))  # [B·k_h, k_w, C]
    locations = geometry.output_size(height, 0) * geometry.output_size(width, 1)
    return tf.reshape(sums, [tf.shape(x)[0], -1]) / float(locations)


def _location_selector(size: int, axis: int, geometry: ConvGeometry) -> tf.Tensor:
    """M[i, h] = 1 if input index h is read by kernel tap i at some output location (float32 [k, size])."""
    k, s, d = geometry.kernel_size[axis], geometry.strides[axis], geometry.dilation[axis]
    out, pad = geometry.output_size(size, axis), geometry.pad_before(size, axis)
    matrix = [[0.0] * size for _ in range(k)]
    for tap in range(k):
        for location in range(out):
            index = s * location + d * tap - pad
            if 0 <= index < size:
                matrix[tap][index] = 1.0
    return tf.constant(matrix, dtype=tf.float32)
