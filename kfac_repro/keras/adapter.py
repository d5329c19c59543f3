"""Every use the Keras front end makes of what Keras does not document as public, in one place, each checked
against the running Keras by `check_keras` (called when a `KFAC` is made), so that a Keras release that changed
one fails at once with a message naming it rather than somewhere inside a traced step.

- `Optimizer._backend_update_step(grads, trainable_variables, learning_rate)`: the hook K-FAC's update replaces,
  called by Keras's `apply` after loss-scale unscaling, gradient accumulation and clipping, before the EMA update.
- `Optimizer._track_variable(variable)`: K-FAC's factors, inverses and refresh state become optimizer variables
  (checkpointed and saved with it) without the per-parameter shape `add_variable_from_reference` imposes.
- `Optimizer._variables`: the list `_track_variable` adds to; K-FAC built for the whole model and then given only
  part of it (inside a MultiOptimizer) drops its first state from it.
- `Variable.path` (public on Keras variables, which K-FAC's `tf.Variable`s are not): Keras's `.h5` writer names each
  optimizer variable by its `path`, so `track_variable` gives K-FAC's state one (`<optimizer name>/<variable name>`).
- `Layer.supports_jit` (a model's): set False while K-FAC is attached, so that `jit_compile="auto"` resolves to
  False (the inversion runs on the host).
Layer calls are tapped by wrapping each layer's public `call` (`kfac.layer_capture`).
"""

from __future__ import annotations

import functools
import inspect

import keras
import tensorflow as tf

TESTED = "3.15"  # the Keras minor release these were checked against (pyproject pins keras<3.16)
UPDATE_HOOK = "_backend_update_step"


@functools.cache
def check_keras(optimizer_class: type = keras.optimizers.Optimizer, layer_class: type = keras.layers.Layer) -> None:
    """RuntimeError naming each internal this front end uses that the running Keras lacks or changed."""
    problems = []
    hook = getattr(optimizer_class, UPDATE_HOOK, None)
    if hook is None or list(inspect.signature(hook).parameters) != ["self", "grads", "trainable_variables",
                                                                     "learning_rate"]:
        problems.append(f"Optimizer.{UPDATE_HOOK}(grads, trainable_variables, learning_rate)")
    if not callable(getattr(optimizer_class, "_track_variable", None)):
        problems.append("Optimizer._track_variable(variable)")
    try:
        tracked = optimizer_class(learning_rate=1.0)._variables
    except Exception:  # a Keras whose optimizer cannot be made as this one is: named below
        tracked = None
    if not isinstance(tracked, list):
        problems.append("Optimizer._variables (a list)")
    if not isinstance(getattr(layer_class(), "supports_jit", None), bool):
        problems.append("Layer.supports_jit")
    if problems:
        raise RuntimeError(f"kfac_repro.keras needs Keras internals that Keras {keras.__version__} lacks or changed: "
                           f"{'; '.join(problems)} (tested with Keras {TESTED}.x)")


def track_variable(optimizer: keras.optimizers.Optimizer, variable: tf.Variable) -> None:
    """Make `variable` part of the optimizer's state (`optimizer.variables`, checkpoints, saving in either format)."""
    optimizer._track_variable(variable)
    if not hasattr(variable, "path"):
        variable.path = f"{optimizer.name}/{variable.name.split(':')[0]}"


def untrack_variables(optimizer: keras.optimizers.Optimizer, variables: list) -> None:
    """Drop `variables` from the optimizer's state."""
    dropped = {id(v) for v in variables}
    tracked = optimizer._variables
    for index in reversed(range(len(tracked))):
        if id(tracked[index]) in dropped:
            del tracked[index]
