"""K-FAC inside Keras's own training loop: `model.compile(optimizer=KFAC(model), loss=...)`, then `fit`.

Public API: `KFAC` (a Keras optimizer), `KFACDiagnostics` (a callback: K-FAC's step size, KL bound, damping and
staleness in `fit`'s logs and TensorBoard), `load_model` (keras.saving.load_model that re-attaches K-FAC to the loaded
model). See README, "Keras fit".
"""

from __future__ import annotations

from typing import Any

import keras

from kfac_repro.keras.diagnostics import KFACDiagnostics
from kfac_repro.keras.optimizer import KFAC

__all__ = ["KFAC", "KFACDiagnostics", "load_model"]


def load_model(filepath: str, custom_objects: dict[str, Any] | None = None, **kwargs: Any) -> keras.Model:
    """`keras.saving.load_model` for a model compiled with K-FAC (`.keras` or `.h5`): the optimizer, saved without
    its model, is attached to the loaded model and gets its saved state, so that `fit` continues where it stopped."""
    model = keras.saving.load_model(filepath, custom_objects={"KFAC": KFAC, **(custom_objects or {})}, **kwargs)
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, KFAC) and optimizer._binding is None:
        optimizer.attach(model)
        if not optimizer.built:  # the .h5 loader leaves it unbuilt: built here, its saved state then assigned
            optimizer.build(model.trainable_variables)
    return model
