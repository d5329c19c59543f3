"""Recording what K-FAC needs from an unmodified Keras model during a forward pass.

While a `LayerTaps` context is active, each tapped layer's instance `call` is wrapped so that every call records
its input and a "point" tensor whose derivative the statistics need: the pre-activation s = a W + b for Dense and
Conv2D layers (caught by wrapping the layer's activation), the layer output for every other layer. The model's own
code is not changed, and the wrappers are removed on exit. Records are kept per thread, because MirroredStrategy
traces each replica's step in a thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf


@dataclass
class LayerCall:
    """One call of a tapped layer: its (first) input, the point tensor, and the keyword arguments it got."""

    inputs: tf.Tensor
    point: tf.Tensor
    kwargs: dict[str, Any] = field(default_factory=dict)


def in_float32(call: LayerCall) -> LayerCall:
    """The call with floating inputs and point cast to float32 (mixed precision computes them in float16/bfloat16;
    Fisher statistics are kept in float32)."""

    def cast(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, tf.float32) if x.dtype.is_floating else x

    return LayerCall(cast(call.inputs), cast(call.point), call.kwargs)


class LayerTaps:
    """Context manager that records `LayerCall`s for the given layers; `calls[layer_name]` lists them in order."""

    def __init__(self, preactivation_layers: Sequence[keras.layers.Layer], output_layers: Sequence[keras.layers.Layer]):
        self._preactivation = list(preactivation_layers)
        self._output = list(output_layers)
        self._local = threading.local()
        self._active = False

    @property
    def calls(self) -> dict[str, list[LayerCall]]:
        """This thread's recorded calls, by layer name."""
        if not hasattr(self._local, "calls"):
            self.clear()
        return self._local.calls

    def clear(self) -> None:
        """Forget this thread's recorded calls (do this at the start of every traced step)."""
        self._local.calls = {layer.name: [] for layer in self._preactivation + self._output}

    def __enter__(self) -> LayerTaps:
        if self._active:
            raise RuntimeError("LayerTaps is already active")
        self.clear()
        for layer in self._preactivation:
            layer.call = self._preactivation_call(layer, layer.call)
        for layer in self._output:
            layer.call = self._output_call(layer, layer.call)
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self._preactivation + self._output:
            del layer.call  # the instance attribute shadowed the class method
        self._active = False

    def _preactivation_call(self, layer: keras.layers.Layer, original: Callable) -> Callable:
        def call(inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
            activation = layer.activation
            seen: list[tf.Tensor] = []

            def tapped_activation(preactivation: tf.Tensor) -> tf.Tensor:
                seen.append(preactivation)
                return activation(preactivation)

            layer.activation = tapped_activation
            try:
                outputs = original(inputs, *args, **kwargs)
            finally:
                layer.activation = activation
            if len(seen) != 1:
                raise RuntimeError(f"layer {layer.name!r}: expected its activation to be applied once per call")
            self.calls[layer.name].append(LayerCall(inputs, seen[0], kwargs))
            return outputs

        return call

    def _output_call(self, layer: keras.layers.Layer, original: Callable) -> Callable:
        def call(inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
            outputs = original(inputs, *args, **kwargs)
            self.calls[layer.name].append(LayerCall(inputs, outputs, kwargs))
            return outputs

        return call
