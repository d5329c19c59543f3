"""Population statistics of a model's batch normalisation, recomputed from training examples ("precise BN").

Keras's moving averages (momentum 0.99: a mean age of ~100 updates) trail the weights: early in training, or over a
budget of a few hundred steps, an evaluation in inference mode normalises with statistics of weights long gone and
can sit at chance while the network itself has learnt. Before such an evaluation, `recompute_batch_norm_statistics`
sets each BatchNormalization layer's moving mean and variance to the mean, over K batches of training examples, of
the statistics that layer computes in training mode (earlier layers normalising with their batch statistics, as in
training): E_k[mean_k], E_k[var_k] (biased variances, Keras's). It is the same for every optimizer, and changes no
weight that training uses.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The model's BatchNormalization layers (subclasses included) that update statistics in training."""
    layers = [layer for layer in _sublayers(model)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    for layer in layers:
        if layer.renorm:
            raise ValueError(f"layer {layer.name!r} uses batch renormalisation, whose statistics this does not "
                             "recompute")
    return layers


def _sublayers(model: keras.Layer) -> list[keras.Layer]:
    """Every layer inside `model`, nested models' layers included, each once."""
    found: dict[int, keras.Layer] = {}
    for layer in getattr(model, "layers", []):
        found.setdefault(id(layer), layer)
        for inner in _sublayers(layer):
            found.setdefault(id(inner), inner)
    return list(found.values())


def recompute_batch_norm_statistics(model: keras.Model, batches: Iterable[np.ndarray]) -> int:
    """Replace every BN layer's moving mean and variance with the mean of its training-mode statistics over
    `batches` (the k-th batch enters with momentum 1 - 1/k: a running mean); returns the number of BN layers (0:
    nothing was called). Called eagerly, so K-FAC's layer taps record nothing."""
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        count = 0
        for count, batch in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / count
            model(batch, training=True)
        if not count:
            raise ValueError("no batch given to recompute the batch normalisation statistics from")
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)
