"""Which Fisher block each layer gets: one ordered table, the first entry that covers a layer decides (paper App. C).

Entries, in order: layers matching `skip_layers`; quantized or LoRA layers and recurrent cells (their tensors are
out of reach); then the user's entries (`register_block`), those naming layers ahead of those naming classes, the
latest first; then the built-in ones: doubly-factored (named in `doubly_factored`, or large enough), Dense,
Conv2D (both eigenvalue-corrected under `eigenvalue_correction`, except a Dense with `sequence_factors: reduce`),
Conv1D/3D, EinsumDense (when its equation is a Dense over positions), Embedding, DepthwiseConv2D,
SeparableConv2D, BatchNormalization, LayerNormalization; any other layer gets the generic per-example block.
A class entry covers instances of the class and of subclasses keeping its `call` (the statistics read that call);
a name entry covers layers whose name or path matches its glob pattern (fnmatch). Each entry says why
(`summary()` shows it).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras.layers import Layer

from kfac_repro.kfac.blocks.base import FisherBlock
from kfac_repro.kfac.blocks.depthwise import DepthwiseBlock, SeparableBlock, depthwise_supported
from kfac_repro.kfac.blocks.doubly_factored import DoublyFactoredBlock, spatial_input_shape
from kfac_repro.kfac.blocks.eigenbasis import EigenbasisBlock
from kfac_repro.kfac.blocks.embedding import EmbeddingBlock
from kfac_repro.kfac.blocks.kronecker import KroneckerBlock
from kfac_repro.kfac.blocks.shared_weight import (
    Conv1DBlock,
    Conv3DBlock,
    EinsumDenseBlock,
    SequenceDenseBlock,
    conv1d_supported,
    conv3d_supported,
    einsum_support,
)
from kfac_repro.kfac.blocks.vector import GenericBlock, ScaleShiftBlock
from kfac_repro.kfac.config import KFACConfig

_EKFAC = "EKFAC, per-example scaling in the A ⊗ G eigenbasis"
Decision = tuple[Callable[[], FisherBlock] | None, str]  # (block factory, or None: unpreconditioned; why)
BlockFactory = Callable[[Layer, KFACConfig], FisherBlock]  # a user's block: factory(layer, config)


@dataclass(frozen=True)
class BlockEntry:
    """One row of the table: `covers(layer, config)` says whether it applies; `choose(layer, config)` decides.
    `key`: the layer class or name pattern it was registered for (None: a built-in guard)."""

    key: type[Layer] | str | None
    covers: Callable[[Layer, KFACConfig], bool]
    choose: Callable[[Layer, KFACConfig], Decision]


class BlockTable:
    """The ordered entries; `decide` takes the first that covers a layer."""

    def __init__(self, guards: list[BlockEntry], built_in: list[BlockEntry]):
        self._guards = guards
        self._by_name: list[BlockEntry] = []
        self._by_class: list[BlockEntry] = []
        self._built_in = built_in

    @property
    def entries(self) -> list[BlockEntry]:
        """Every entry, in the order `decide` tries them."""
        return [*self._guards, *self._by_name, *self._by_class, *self._built_in]

    def decide(self, layer: Layer, config: KFACConfig) -> Decision:
        """(block factory, or None to leave the layer unpreconditioned; why), from the first entry covering it."""
        entry = next(entry for entry in self.entries if entry.covers(layer, config))
        return entry.choose(layer, config)

    def register(self, key: type[Layer] | str, factory: BlockFactory, reason: str | None = None) -> Callable[[], None]:
        """Give the layers of class `key` (and of its subclasses keeping its `call`), or the layers whose name or
        path matches the glob pattern `key`, the block `factory(layer, config)`; `reason` is what `summary()` says.
        Ahead of the built-in entries; name entries ahead of class entries, the latest first. Returns a function
        that removes the entry."""
        if not callable(factory):
            raise TypeError(f"register_block: factory for {key!r} must be callable, found {factory!r}")
        if isinstance(key, str):
            why = reason or f"registered for layers named {key!r}"
            entries, covers = self._by_name, functools.partial(_named, key)
        elif isinstance(key, type) and issubclass(key, Layer):
            why = reason or f"registered for {key.__name__}"
            entries, covers = self._by_class, functools.partial(_of_class, key)
        else:
            raise TypeError(f"register_block: key must be a keras Layer class or a layer name, found {key!r}")
        entry = BlockEntry(key, covers, functools.partial(_registered, factory, key, why))
        entries.insert(0, entry)
        return functools.partial(entries.remove, entry)


def _named(pattern: str, layer: Layer, config: KFACConfig) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in (layer.name, getattr(layer, "path", layer.name)))


def _of_class(base: type[Layer], layer: Layer, config: KFACConfig) -> bool:
    return _keeps_call(layer, base)


def _registered(factory: BlockFactory, key: type[Layer] | str, why: str, layer: Layer,
                config: KFACConfig) -> Decision:
    def build() -> FisherBlock:
        block = factory(layer, config)
        if not isinstance(block, FisherBlock):
            raise TypeError(f"layer {layer.name!r}: the block registered for {key!r} returned "
                            f"{type(block).__name__}, not a FisherBlock")
        return block

    return build, why


def _keeps_call(layer: Layer, base: type[Layer]) -> bool:
    """An instance of `base`, or of a subclass keeping its call (so that the statistics' reading is valid)."""
    return isinstance(layer, base) and type(layer).call is base.call


def _always(layer: Layer, config: KFACConfig) -> bool:
    return True


def _class(base: type[Layer], choose: Callable[[Layer, KFACConfig], Decision],
           also: Callable[[Layer], bool] = lambda layer: True) -> BlockEntry:
    return BlockEntry(base, lambda layer, config: _keeps_call(layer, base) and also(layer), choose)


def _generic(layer: Layer, config: KFACConfig, why: str) -> Decision:
    return functools.partial(GenericBlock, layer, config.exact_block_max), f"{why}; per-example gradients"


def _skipped_pattern(layer: Layer, config: KFACConfig) -> str | None:
    return next((p for p in config.skip_layers if _named(p, layer, config)), None)


def _quantized(layer: Layer, config: KFACConfig) -> bool:
    return getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False)


def _wants_doubly_factored(layer: Layer, config: KFACConfig) -> bool:
    if not (_keeps_call(layer, keras.layers.Dense) or _keeps_call(layer, keras.layers.Conv2D)):
        return False
    if layer.name in config.doubly_factored:
        return True
    threshold = config.doubly_factored_min_inputs
    if threshold is None or int(np.prod(layer.kernel.shape[:-1])) < threshold:
        return False
    return spatial_input_shape(layer) is not None


def _doubly_factored(layer: Layer, config: KFACConfig) -> Decision:
    spatial = spatial_input_shape(layer)
    if spatial is None:
        raise ValueError(f"layer {layer.name!r}: the doubly-factored block needs a Dense layer fed by "
                         "Flatten of an [H, W, C] map, or a Conv2D with a 1×1 output")
    return functools.partial(DoublyFactoredBlock, layer, spatial), "doubly-factored (paper §4)"


def _dense(layer: Layer, config: KFACConfig) -> Decision:
    if config.sequence_factors == "reduce":
        return functools.partial(SequenceDenseBlock, layer, "reduce"), "Dense: A ⊗ G; positions (if any) reduced"
    if config.eigenvalue_correction:
        return functools.partial(EigenbasisBlock, layer), f"Dense: {_EKFAC}; positions (if any) summed per example"
    return functools.partial(KroneckerBlock, layer), "Dense: A ⊗ G; positions (if any) expanded"


def _conv2d(layer: Layer, config: KFACConfig) -> Decision:
    if layer.data_format != "channels_last" or layer.groups != 1:
        return _generic(layer, config, "Conv2D channels_first or grouped")
    if config.eigenvalue_correction:
        return (functools.partial(EigenbasisBlock, layer, config.conv_factors),
                f"Conv2D: {_EKFAC}, eigenbasis of the {config.conv_factors} factors")
    return functools.partial(KroneckerBlock, layer, config.conv_factors), f"Conv2D: {config.conv_factors} factors"


def _shared_conv(name: str, block: type[FisherBlock], supported: Callable[[Layer], str | None]
                 ) -> Callable[[Layer, KFACConfig], Decision]:
    def choose(layer: Layer, config: KFACConfig) -> Decision:
        why_not = supported(layer)
        if why_not is None:
            return functools.partial(block, layer, config.conv_factors), f"{name}: {config.conv_factors} factors"
        return _generic(layer, config, f"{name} with {why_not}")

    return choose


def _einsum_dense(layer: Layer, config: KFACConfig) -> Decision:
    layout = einsum_support(layer)
    if not isinstance(layout, str):
        return (functools.partial(EinsumDenseBlock, layer, layout, config.sequence_factors),
                f"EinsumDense: A ⊗ G; positions {config.sequence_factors}ed")
    return None, f"EinsumDense: {layout}; per-example gradients of EinsumDense crash tf.vectorized_map"


def _depthwise(layer: Layer, config: KFACConfig) -> Decision:
    return (functools.partial(DepthwiseBlock, layer, config.conv_factors),
            f"DepthwiseConv2D: per-channel A_c ⊗ G_c, {config.conv_factors} factors")


def _separable(layer: Layer, config: KFACConfig) -> Decision:
    return (functools.partial(SeparableBlock, layer, config.conv_factors),
            f"SeparableConv2D: per-channel depthwise and pointwise A ⊗ G, {config.conv_factors} factors")


def _scale_shift(name: str) -> Callable[[Layer, KFACConfig], Decision]:
    return lambda layer, config: (functools.partial(ScaleShiftBlock, layer, config.exact_block_max), f"{name} γ, β")


def _depthwise_supported(layer: Layer) -> bool:
    return depthwise_supported(layer) is None


BLOCKS = BlockTable(
    guards=[
        BlockEntry(None, lambda layer, config: _skipped_pattern(layer, config) is not None,
                   lambda layer, config: (None, f"skip_layers: matches {_skipped_pattern(layer, config)!r}")),
        BlockEntry(None, _quantized, lambda layer, config: (None, "quantized or LoRA layer: no Fisher block")),
        BlockEntry(None, lambda layer, config: hasattr(layer, "state_size"), lambda layer, config: (
            None, "recurrent cell: called inside the RNN's loop, its per-step tensors are out of reach")),
    ],
    built_in=[
        BlockEntry(None, _wants_doubly_factored, _doubly_factored),
        _class(keras.layers.Dense, _dense),
        _class(keras.layers.Conv2D, _conv2d),
        _class(keras.layers.Conv1D, _shared_conv("Conv1D", Conv1DBlock, conv1d_supported)),
        _class(keras.layers.Conv3D, _shared_conv("Conv3D", Conv3DBlock, conv3d_supported)),
        _class(keras.layers.EinsumDense, _einsum_dense),
        _class(keras.layers.Embedding, lambda layer, config: (
            functools.partial(EmbeddingBlock, layer), "Embedding: diag(token frequencies) ⊗ G")),
        _class(keras.layers.DepthwiseConv2D, _depthwise, _depthwise_supported),
        _class(keras.layers.SeparableConv2D, _separable, _depthwise_supported),
        BlockEntry(keras.layers.BatchNormalization, lambda layer, config: isinstance(
            layer, keras.layers.BatchNormalization), _scale_shift("BatchNormalization")),
        _class(keras.layers.LayerNormalization, _scale_shift("LayerNormalization"), lambda layer: len(layer.axis) == 1),
        BlockEntry(None, _always, lambda layer, config: _generic(
            layer, config, f"{type(layer).__name__}: no Kronecker structure")),
    ],
)

register_block = BLOCKS.register
