"""Layer taps that stay installed while Keras traces `fit`'s train step.

Keras gives an optimizer only the gradients, so the K-FAC optimizer keeps its layer taps (and one on the model's
own `call`, for its output, and one on its `compute_loss`, for the sample weights the loss is weighted by) installed
from construction to `close()`. Each traced call is recorded under the graph being traced and per replica
(MirroredStrategy traces each replica in a thread of its own, and LossScaleOptimizer applies the update in threads
of other ones: the replica's id, not the thread, finds its records); the optimizer's `apply`, traced into the same
graph (or one inside it) right after the forward pass, finds that pass's records there. Eager calls are not
recorded.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import keras
import tensorflow as tf

from kfac_repro.kfac.layer_capture import LayerCall, LayerTaps


class GraphTaps(LayerTaps):
    """`LayerTaps` that also record `model`'s calls (`model_calls()`) and the sample weights its `compute_loss` got
    (`sample_weights()`), keyed by the graph being traced."""

    def __init__(self, model: keras.Model, preactivation_layers: Sequence[keras.layers.Layer],
                 output_layers: Sequence[keras.layers.Layer]):
        self._slots: dict[int | None, SimpleNamespace] = {}
        super().__init__(preactivation_layers, [*output_layers, model])
        self._model = model
        self._model_name = model.name

    def __enter__(self) -> GraphTaps:
        super().__enter__()
        original = self._model.compute_loss
        signature = inspect.signature(original)

        @functools.wraps(original)  # keeps the signature, which Keras inspects for a `training` argument
        def compute_loss(*args: Any, **kwargs: Any) -> Any:
            if not tf.executing_eagerly():
                given = signature.bind_partial(*args, **kwargs).arguments
                self.calls  # noqa: B018 (switches the record to the graph being traced)
                self._slot().sample_weights.append(given.get("sample_weight"))
            return original(*args, **kwargs)

        self._model.compute_loss = compute_loss
        return self

    def __exit__(self, *exc: object) -> None:
        del self._model.compute_loss
        super().__exit__(*exc)

    @property
    def calls(self) -> dict[str, list[LayerCall]]:
        """This thread's calls recorded in the graph now being traced, or in a graph enclosing it (the optimizer's
        update inside a conditional: LossScaleOptimizer, gradient accumulation); a throw-away record when eager."""
        if tf.executing_eagerly():
            return _Discard()
        graph = tf.compat.v1.get_default_graph()
        slot = self._slot()
        recorded = getattr(slot, "graph", None)
        if recorded is not graph and not _encloses(recorded, graph):
            slot.graph = graph
            self.clear()
        return slot.calls

    def clear(self) -> None:
        """Forget this replica's recorded calls and sample weights."""
        slot = self._slot()
        slot.calls = {layer.name: [] for layer in self._preactivation + self._output}
        slot.sample_weights = []

    def _slot(self) -> SimpleNamespace:
        """This replica's records (the graph they were traced in, the calls); one slot in cross-replica context."""
        context = tf.distribute.get_replica_context()
        replica = None if context is None else tf.get_static_value(context.replica_id_in_sync_group)
        key = None if replica is None else int(replica)
        return self._slots.setdefault(key, SimpleNamespace())

    def model_calls(self) -> list[LayerCall]:
        """The model's calls in the graph now being traced; `point` is the model's output."""
        return self.calls[self._model_name]

    def sample_weights(self) -> list[tf.Tensor | None]:
        """The `sample_weight` of each `compute_loss` call in the graph now being traced (None: unweighted)."""
        self.calls  # noqa: B018 (switches the record to the graph being traced)
        return self._slot().sample_weights


def _encloses(outer: object, graph: object) -> bool:
    """`graph` is a function graph traced inside `outer` (a branch of a conditional in it, say)."""
    while outer is not None and graph is not None:
        graph = getattr(graph, "outer_graph", None)
        if graph is outer:
            return True
    return False


class _Discard(dict[str, list[LayerCall]]):
    """A record that forgets everything appended to it."""

    def __missing__(self, key: str) -> list[LayerCall]:
        return []
