"""Kronecker blocks of layers whose weights are shared across positions: Dense and EinsumDense applied over a
sequence (or any extra axes), Conv1D and Conv3D.

With R positions sharing W, an example's gradient is DW_n = Σ_r ā_{n,r} ds_{n,r}ᵀ and its Fisher block is
(1/B) Σ_n E[vec DW_n vec DW_nᵀ]. Eschenhagen et al. (NeurIPS 2023) approximate it two ways (our scaling: the
Fisher of the mean loss over B examples, ds the derivative of one example's own sampled-target loss):

- expand (every position an extra example, their Eq. for K-FAC-expand):
  A = 1/(N R) Σ_{n,r} ā_{n,r} ā_{n,r}ᵀ,  G = (1/B) Σ_{n,r} ds_{n,r} ds_{n,r}ᵀ;
- reduce (positions aggregated before the outer product, K-FAC-reduce):
  A = (1/N) Σ_n â_n â_nᵀ with â_n = (1/R) Σ_r ā_{n,r},  G = (1/B) Σ_n ĝ_n ĝ_nᵀ with ĝ_n = Σ_r ds_{n,r}.

ā appends the homogeneous 1 (the bias row); N = B, or a multiple for a layer called several times. Expand is
what `dense_factors` lumps and KFC (paper Eq. 15) does for convolutions; reduce is App. A's cheap conv factors.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks import fisher_factors as ff
from kfac_repro.kfac.blocks.kronecker import ConvFactors, KroneckerBlock, KroneckerFactoredBlock
from kfac_repro.kfac.blocks.precision import ProductDtype
from kfac_repro.kfac.layer_capture import LayerCall

SequenceFactors = Literal["expand", "reduce"]


def shared_weight_factors(
    a: tf.Tensor, ds: list[tf.Tensor], batch_size: tf.Tensor, use_bias: bool, mode: SequenceFactors,
    dtype: ProductDtype = "float32",
) -> tuple[tf.Tensor, tf.Tensor]:
    """(A, G) of the module docstring from a [N, R, d_in] and each ds [N, R, d_out] (R positions per example)."""
    if mode == "expand":
        rows = tf.reshape(a, [-1, a.shape[-1]])
        derivatives = [tf.reshape(d, [-1, d.shape[-1]]) for d in ds]
    else:
        rows = tf.reduce_mean(a, axis=1)
        derivatives = [tf.reduce_sum(d, axis=1) for d in ds]
    if use_bias:
        rows = ff.append_homogeneous(rows)
    input_factor = ff.covariance(rows, tf.shape(rows)[0], dtype, centre=True)
    output_factor = tf.add_n([ff.covariance(d, batch_size, dtype) for d in derivatives])
    return input_factor, output_factor


def _positions(x: tf.Tensor) -> tf.Tensor:
    """[N, ..., d] -> [N, R, d]: every axis between the batch and the last is a position sharing the weights."""
    return tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]])


class SequenceDenseBlock(KroneckerBlock):
    """A Dense layer: as KroneckerBlock for [B, d] inputs; over [B, T..., d] with `mode` (expand or reduce)."""

    def __init__(self, layer: keras.layers.Dense, mode: SequenceFactors):
        super().__init__(layer)
        self.mode = mode
        self.kind = f"kronecker-dense-{mode}"

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        inputs = tf.concat([_positions(call.inputs) for call in calls], axis=0)
        derivatives = [tf.concat([_positions(p) for p in points], axis=0) for points in cotangent_points]
        a, g = shared_weight_factors(inputs, derivatives, batch_size, self.use_bias, self.mode, self.product_dtype)
        return {"A": a, "G": g}


class Conv1DBlock(KroneckerBlock):
    """A channels_last, ungrouped Conv1D as a Conv2D of height 1 (kernel [k, C_in, C_out] reads the patch
    (tap, channel) in the order the 2-D factors use): KFC (expand) or App. A cheap (reduce) factors. Causal padding
    is 'valid' on the input padded with d·(k − 1) zeros in front."""

    def __init__(self, layer: keras.layers.Conv1D, conv_factors: ConvFactors):
        super().__init__(layer, conv_factors)
        (size,), (dilation,) = layer.kernel_size, layer.dilation_rate
        self.causal_pad = dilation * (size - 1) if layer.padding == "causal" else 0
        self.geometry = ff.ConvGeometry(
            kernel_size=(1, size), strides=(1, layer.strides[0]),
            padding="valid" if layer.padding == "causal" else layer.padding, dilation=(1, dilation),
        )
        self.kind = f"kronecker-conv1d-{conv_factors}"

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        padding = [[0, 0], [self.causal_pad, 0], [0, 0]]
        images = [LayerCall(tf.pad(call.inputs, padding)[:, None], call.point[:, None], call.kwargs) for call in calls]
        return super().batch_statistics(images, [[p[:, None] for p in points] for points in cotangent_points],
                                        batch_size)


class Conv3DBlock(KroneckerBlock):
    """A channels_last, ungrouped, undilated Conv3D: patches [k_d·k_h·k_w·C_in] (the kernel's order) at every
    output location, KFC (expand: every location an example) or App. A cheap (reduce) factors as above."""

    def __init__(self, layer: keras.layers.Conv3D, conv_factors: ConvFactors):
        super().__init__(layer, conv_factors)
        self.mode: SequenceFactors = "expand" if conv_factors == "kfc" else "reduce"
        self.kind = f"kronecker-conv3d-{conv_factors}"

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        layer = self.layer
        patches = [tf.extract_volume_patches(call.inputs, [1, *layer.kernel_size, 1], [1, *layer.strides, 1],
                                             layer.padding.upper()) for call in calls]
        inputs = tf.concat([_positions(p) for p in patches], axis=0)
        derivatives = [tf.concat([_positions(p) for p in points], axis=0) for points in cotangent_points]
        a, g = shared_weight_factors(inputs, derivatives, batch_size, self.use_bias, self.mode, self.product_dtype)
        return {"A": a, "G": g}


def conv3d_supported(layer: keras.layers.Conv3D) -> str | None:
    """None if Conv3DBlock handles the layer, else why not."""
    if layer.data_format != "channels_last" or layer.groups != 1:
        return "channels_first or grouped"
    if any(d != 1 for d in layer.dilation_rate):
        return "dilation"
    return None


def conv1d_supported(layer: keras.layers.Conv1D) -> str | None:
    """None if Conv1DBlock handles the layer, else why not."""
    if layer.data_format != "channels_last" or layer.groups != 1:
        return "channels_first or grouped"
    return None


@dataclass(frozen=True)
class EinsumLayout:
    """How an EinsumDense equation is a Dense over positions: the input's `contracted` letters (in kernel order)
    meet the kernel, whose other letters `produced` (in output order) make the output units; every other input
    letter is a position axis (the batch first) that the output keeps."""

    input_letters: str
    kernel_letters: str
    output_letters: str
    contracted: str
    produced: str

    def input_permutation(self) -> list[int]:
        """Input axes reordered to (batch, positions..., contracted in kernel order)."""
        positions = [i for i, c in enumerate(self.input_letters) if c not in self.contracted]
        return positions + [self.input_letters.index(c) for c in self.contracted]

    def output_permutation(self) -> list[int]:
        """Output axes reordered to (batch, positions... in the input's order, produced)."""
        positions = [self.output_letters.index(c) for c in self.input_letters if c not in self.contracted]
        return positions + [self.output_letters.index(c) for c in self.produced]

    def kernel_permutation(self) -> list[int]:
        """Kernel axes reordered to (contracted, produced), so that it reshapes to [d_in, d_out]."""
        return [self.kernel_letters.index(c) for c in self.contracted + self.produced]


def einsum_layout(equation: str, input_rank: int) -> EinsumLayout | str:
    """The layout of `equation` for an input of `input_rank` axes, or why it is not a Dense over positions."""
    if "->" not in equation or equation.count(",") != 1:
        return f"equation {equation!r} is not 'input,kernel->output'"
    left, output = equation.split("->")
    inputs, kernel = left.split(",")
    if "..." in kernel:
        return f"equation {equation!r}: an elided kernel"
    if "..." in inputs or "..." in output:
        if inputs.count("...") != 1 or output.count("...") != 1:
            return f"equation {equation!r}: '...' must appear in both input and output"
        spare = [c for c in string.ascii_letters if c not in equation]
        elided = "".join(spare[: input_rank - len(inputs.replace("...", ""))])
        inputs, output = inputs.replace("...", elided), output.replace("...", elided)
    contracted = "".join(c for c in kernel if c in inputs and c not in output)
    produced = "".join(c for c in output if c in kernel and c not in inputs)
    if set(kernel) != set(contracted) | set(produced):
        return f"equation {equation!r}: a kernel axis is shared with the input and the output (per-head weights)"
    if any(c not in output for c in inputs if c not in contracted) or set(output) - set(inputs) - set(kernel):
        return f"equation {equation!r}: an input axis is summed away or an output axis comes from nowhere"
    if not inputs or inputs[0] in kernel or not output or output[0] != inputs[0]:
        return f"equation {equation!r}: the first (batch) axis must pass from the input to the output"
    return EinsumLayout(inputs, kernel, output, contracted, produced)


class EinsumDenseBlock(KroneckerFactoredBlock):
    """An EinsumDense whose equation is a Dense over positions (see `einsum_layout`), e.g. the query/key/value
    and output projections of MultiHeadAttention: A ⊗ G over the kernel as [d_in(+1), d_out], expand or reduce."""

    def __init__(self, layer: keras.layers.EinsumDense, layout: EinsumLayout, mode: SequenceFactors):
        self.layout, self.mode = layout, mode
        kernel, bias = layer.kernel, layer.bias
        self.kernel_shape = tuple(kernel.shape)
        permuted = [self.kernel_shape[i] for i in layout.kernel_permutation()]
        self.contracted_dim = int(np.prod(permuted[: len(layout.contracted)]))
        self.use_bias = bias is not None
        self.bias_shape = tuple(bias.shape) if bias is not None else ()
        output_dim = int(np.prod(permuted[len(layout.contracted):]))
        variables = [kernel] if bias is None else [kernel, bias]
        super().__init__(layer, variables, self.contracted_dim + int(self.use_bias), output_dim)
        self.kind = f"kronecker-einsum-{mode}"

    def batch_statistics(
        self, calls: list[LayerCall], cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        def flat(x: tf.Tensor, permutation: list[int], width: int) -> tf.Tensor:
            return tf.reshape(tf.transpose(x, permutation), [tf.shape(x)[0], -1, width])

        inputs = tf.concat([flat(c.inputs, self.layout.input_permutation(), self.contracted_dim) for c in calls], 0)
        derivatives = [tf.concat([flat(p, self.layout.output_permutation(), self.output_dim) for p in points], 0)
                       for points in cotangent_points]
        a, g = shared_weight_factors(inputs, derivatives, batch_size, self.use_bias, self.mode, self.product_dtype)
        return {"A": a, "G": g}

    def to_matrix(self, grads: list[tf.Tensor]) -> tf.Tensor:
        kernel = tf.reshape(tf.transpose(grads[0], self.layout.kernel_permutation()), [-1, self.output_dim])
        return tf.concat([kernel, tf.reshape(grads[1], [1, -1])], axis=0) if self.use_bias else kernel

    def from_matrix(self, matrix: tf.Tensor) -> list[tf.Tensor]:
        permutation = self.layout.kernel_permutation()
        permuted_shape = [self.kernel_shape[i] for i in permutation]
        kernel = tf.transpose(tf.reshape(matrix[: self.contracted_dim], permuted_shape), np.argsort(permutation))
        if not self.use_bias:
            return [kernel]
        return [kernel, tf.reshape(matrix[-1], self.bias_shape)]


def einsum_support(layer: keras.layers.EinsumDense) -> EinsumLayout | str:
    """The layout if EinsumDenseBlock handles the layer, else why not."""
    layout = einsum_layout(layer.equation, layer.input_spec.ndim)
    if isinstance(layout, str):
        return layout
    if layer.bias is not None:
        bias_letters = "".join(c for c in layout.output_letters if c in (layer.bias_axes or ""))
        if bias_letters != layout.produced:
            return f"bias axes {layer.bias_axes!r} are not the output units {layout.produced!r}"
    return layout

