"""Per-channel Kronecker blocks of DepthwiseConv2D, and the two parts of SeparableConv2D.

A depthwise kernel [k_h, k_w, C, m] is C independent convolutions: channel c maps its own k = k_h·k_w patch
(plus the homogeneous 1 for the bias) to m outputs (Keras/TF order: output channel c·m + j). Each channel gets its
own A_c ⊗ G_c with the conv conventions of fisher_factors (KFC = expand over locations, cheap = App. A reduce):

kfc:   A_c = E_{n,t}[ā_{c,nt} ā_{c,nt}ᵀ],  G_c = (1/B) Σ_{n,t} ds_{c,nt} ds_{c,nt}ᵀ;
cheap: A_c = E_n[Ā_{c,n} Ā_{c,n}ᵀ] (location-mean patch),  G_c = E_n[(Σ_t ds_{c,nt})(Σ_t ds_{c,nt})ᵀ].

SeparableConv2D computes z = depthwise(x) then s = z P + b (a 1×1 pointwise conv): the depthwise part is the block
above with output derivative dz = ds Pᵀ (no bias), and the pointwise part a Kronecker block over [z; 1] ⊗ ds.
Factors and damped inverses (Cholesky) are stacked over channels; damping is factored per channel (Eq. 3).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks import fisher_factors as ff
from kfac_repro.kfac.blocks.base import Arrays, FisherBlock, InverseRecipes, kronecker_solve
from kfac_repro.kfac.blocks.kronecker import ConvFactors, KroneckerFactoredBlock
from kfac_repro.kfac.blocks.precision import ProductDtype, rounded
from kfac_repro.kfac.layer_capture import LayerCall
from kfac_repro.kfac.linalg.damping import factored_damping
from kfac_repro.kfac.linalg.inverses import damped_inverse


def depthwise_supported(layer: keras.layers.Layer) -> str | None:
    """None if the per-channel blocks handle the layer, else why not."""
    if layer.data_format != "channels_last":
        return "channels_first"
    return None


class _PerChannel:
    """The per-channel factor algebra of one depthwise kernel [k_h, k_w, C, m]."""

    def __init__(self, shape: tuple[int, ...], use_bias: bool, geometry: ff.ConvGeometry, conv_factors: ConvFactors):
        self.taps, self.channels, self.multiplier = int(shape[0] * shape[1]), int(shape[2]), int(shape[3])
        self.use_bias, self.geometry, self.conv_factors = use_bias, geometry, conv_factors
        self.input_dim = self.taps + int(use_bias)

    def factors(self, x: tf.Tensor, ds: list[tf.Tensor], batch_size: tf.Tensor,
                dtype: ProductDtype) -> tuple[tf.Tensor, tf.Tensor]:
        """A [C, k(+1), k(+1)] from inputs x [N, H, W, C]; G [C, m, m] from each ds [N, H', W', C·m]; the
        products in `dtype`."""
        if self.conv_factors == "kfc":
            patches = ff.conv_patches(x, self.geometry)
            rows = tf.reshape(patches, [-1, self.taps, self.channels])
            derivatives = [tf.reshape(d, [-1, self.channels, self.multiplier]) for d in ds]
        else:
            rows = tf.reshape(ff.location_mean_patches(x, self.geometry), [-1, self.taps, self.channels])
            derivatives = [tf.reshape(ff.location_sums(d), [-1, self.channels, self.multiplier])
                           for d in ds]
        if self.use_bias:
            rows = tf.concat([rows, tf.ones_like(rows[:, :1])], axis=1)
        rows, derivatives = rounded(rows, dtype), [rounded(d, dtype) for d in derivatives]
        a = tf.cast(tf.einsum("nkc,nlc->ckl", rows, rows), x.dtype) / tf.cast(tf.shape(rows)[0], x.dtype)
        g = tf.add_n([tf.cast(tf.einsum("ncm,ncl->cml", d, d), x.dtype) for d in derivatives])
        g /= tf.cast(batch_size, tf.float32)
        return a, g

    def to_matrices(self, kernel: tf.Tensor, bias: tf.Tensor | None) -> tf.Tensor:
        """[k_h, k_w, C, m] kernel (and [C·m] bias) -> [C, k(+1), m]."""
        matrices = tf.transpose(tf.reshape(kernel, [self.taps, self.channels, self.multiplier]), [1, 0, 2])
        if bias is None:
            return matrices
        return tf.concat([matrices, tf.reshape(bias, [self.channels, 1, self.multiplier])], axis=1)

    def from_matrices(self, matrices: tf.Tensor, kernel_shape: tuple[int, ...]) -> list[tf.Tensor]:
        kernel = tf.reshape(tf.transpose(matrices[:, : self.taps], [1, 0, 2]), kernel_shape)
        return [kernel, tf.reshape(matrices[:, -1], [-1])] if self.use_bias else [kernel]


def _per_channel_recipes(a: np.ndarray, g: np.ndarray, damping: float, dtype: str,
                         names: tuple[str, str]) -> InverseRecipes:
    """Per-channel factored damping, then the stacked damped inverses [C, d_A, d_A] and [C, d_G, d_G] as two
    deferred computations keyed by `names`."""
    shifts = [factored_damping(a_c, g_c, damping) for a_c, g_c in zip(a, g, strict=True)]

    def stacked(factor: np.ndarray, which: int) -> np.ndarray:
        return np.stack([damped_inverse(f_c, shift[which], dtype) for f_c, shift in zip(factor, shifts, strict=True)])

    return {names[0]: functools.partial(stacked, a, 0), names[1]: functools.partial(stacked, g, 1)}


def _add_batched_factor(block: FisherBlock, name: str, count: int, dim: int) -> None:
    """Per-channel factor variables [count, dim, dim] and their stacked damped inverses, keyed like
    `FisherBlock._add_factor`'s ("<name>_inverse"), so that `install_inverse` serves them."""
    block.factors[name] = tf.Variable(tf.zeros([count, dim, dim]), trainable=False, name=f"{block.name}_{name}")
    block._add_inverse(name, tf.eye(dim, batch_shape=[count]))


def _geometry(layer: keras.layers.Layer) -> ff.ConvGeometry:
    return ff.ConvGeometry(kernel_size=tuple(layer.kernel_size), strides=tuple(layer.strides),
                           padding=layer.padding, dilation=tuple(layer.dilation_rate))


class DepthwiseBlock(FisherBlock):
    """DepthwiseConv2D: C blocks A_c ⊗ G_c (kernel and bias of channel c together)."""

    taps_preactivation = True
    rounds_products = True

    def __init__(self, layer: keras.layers.DepthwiseConv2D, conv_factors: ConvFactors):
        bias = layer.bias if layer.use_bias else None
        super().__init__(layer, [layer.kernel] if bias is None else [layer.kernel, bias])
        self.kernel_shape = tuple(layer.kernel.shape)
        self.algebra = _PerChannel(self.kernel_shape, bias is not None, _geometry(layer), conv_factors)
        self.kind = f"kronecker-depthwise-{conv_factors}"
        _add_batched_factor(self, "A", self.algebra.channels, self.algebra.input_dim)
        _add_batched_factor(self, "G", self.algebra.channels, self.algebra.multiplier)

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        inputs = tf.concat([call.inputs for call in calls], axis=0)
        a, g = self.algebra.factors(inputs, [tf.concat(p, axis=0) for p in cotangent_points], batch_size,
                                    self.product_dtype)
        return {"A": a, "G": g}

    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        return _per_channel_recipes(factors["A"], factors["G"], damping, dtype, ("A_inverse", "G_inverse"))

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        matrices = self.algebra.to_matrices(grads[0], grads[1] if len(grads) > 1 else None)
        solved = kronecker_solve(matrices, self.inverse["A_inverse"], self.inverse["G_inverse"],  # per channel
                                 self.product_dtype)
        return self.algebra.from_matrices(solved, self.kernel_shape)


class SeparableBlock(KroneckerFactoredBlock):
    """SeparableConv2D: the pointwise part is the A ⊗ G block (with the bias) over [z; 1] and ds; the depthwise
    part adds per-channel blocks A_depthwise_c ⊗ G_depthwise_c (no bias), block-diagonal to it."""

    def __init__(self, layer: keras.layers.SeparableConv2D, conv_factors: ConvFactors):
        bias = layer.bias if layer.use_bias else None
        depthwise, pointwise = layer.depthwise_kernel, layer.pointwise_kernel
        self.use_bias = bias is not None
        self.depthwise_shape, self.pointwise_shape = tuple(depthwise.shape), tuple(pointwise.shape)
        self.intermediate, self.filters = int(self.pointwise_shape[2]), int(self.pointwise_shape[3])
        super().__init__(layer, [depthwise, pointwise] + ([] if bias is None else [bias]),
                         self.intermediate + int(self.use_bias), self.filters)
        self.algebra = _PerChannel(self.depthwise_shape, False, _geometry(layer), conv_factors)
        self.conv_factors = conv_factors
        self.kind = f"kronecker-separable-{conv_factors}"
        _add_batched_factor(self, "A_depthwise", self.algebra.channels, self.algebra.input_dim)
        _add_batched_factor(self, "G_depthwise", self.algebra.channels, self.algebra.multiplier)

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        inputs = tf.concat([call.inputs for call in calls], axis=0)
        derivatives = [tf.concat(p, axis=0) for p in cotangent_points]
        layer = self.layer
        z = tf.nn.depthwise_conv2d(inputs, tf.cast(layer.depthwise_kernel, inputs.dtype), [1, *layer.strides, 1],
                                   layer.padding.upper(), dilations=tuple(layer.dilation_rate))
        pointwise = tf.reshape(tf.cast(layer.pointwise_kernel, inputs.dtype), [self.intermediate, self.filters])
        dz = [tf.einsum("nhwf,cf->nhwc", d, pointwise) for d in derivatives]
        a_dw, g_dw = self.algebra.factors(inputs, dz, batch_size, self.product_dtype)
        if self.conv_factors == "kfc":
            rows = tf.reshape(z, [-1, self.intermediate])
            ds = [tf.reshape(d, [-1, self.filters]) for d in derivatives]
        else:
            rows = tf.reduce_mean(z, axis=[1, 2])
            ds = [ff.location_sums(d) for d in derivatives]
        if self.use_bias:
            rows = ff.append_homogeneous(rows)
        a = ff.covariance(rows, tf.shape(rows)[0], self.product_dtype, centre=True)
        g = tf.add_n([ff.covariance(d, batch_size, self.product_dtype) for d in ds])
        return {"A": a, "G": g, "A_depthwise": a_dw, "G_depthwise": g_dw}

    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        depthwise = _per_channel_recipes(factors["A_depthwise"], factors["G_depthwise"], damping, dtype,
                                         ("A_depthwise_inverse", "G_depthwise_inverse"))
        return {**super().inverse_recipes(factors, damping, dtype), **depthwise}

    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        matrices = self.algebra.to_matrices(grads[0], None)
        depthwise = kronecker_solve(matrices, self.inverse["A_depthwise_inverse"], self.inverse["G_depthwise_inverse"],
                                    self.product_dtype)
        return [*self.algebra.from_matrices(depthwise, self.depthwise_shape), *super().precondition(grads)]

    def to_matrix(self, grads: list[tf.Tensor]) -> tf.Tensor:
        """The pointwise kernel (and bias) as [C·m(+1), filters]; grads[0] is the depthwise kernel's."""
        pointwise = tf.reshape(grads[1], [self.intermediate, self.filters])
        return tf.concat([pointwise, grads[2][None, :]], axis=0) if self.use_bias else pointwise

    def from_matrix(self, matrix: tf.Tensor) -> list[tf.Tensor]:
        pointwise = tf.reshape(matrix[: self.intermediate], self.pointwise_shape)
        return [pointwise, matrix[-1]] if self.use_bias else [pointwise]
