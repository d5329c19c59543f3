"""Every Keras internal the Keras front end uses (kfac_repro/keras/adapter.py) is checked against the running Keras
(`make test-keras-next` runs these against the newest Keras release): a release that changed one fails here, with a
message naming it."""

from typing import Any

import keras
import numpy as np
import pytest

from kfac_repro.keras.adapter import UPDATE_HOOK, check_keras


def test_the_running_keras_has_every_internal_this_front_end_uses() -> None:
    """Fails on a Keras that changed one, with check_keras's RuntimeError naming each (and the version tested)."""
    check_keras.cache_clear()
    check_keras()


def test_keras_apply_hands_the_clipped_gradients_to_the_update_hook() -> None:
    """K-FAC's update replaces the hook; Keras's `apply` must still call it, after its own clipping."""
    seen: list[np.ndarray] = []

    class Hooked(keras.optimizers.Optimizer):
        def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> None:
            seen.append(keras.ops.convert_to_numpy(grads[0]))

    variable = keras.Variable(np.zeros(2, "float32"))
    Hooked(learning_rate=1.0, clipnorm=1.0).apply([keras.ops.convert_to_tensor([3.0, 4.0])], [variable])
    assert seen, f"Keras {keras.__version__}'s Optimizer.apply no longer calls Optimizer.{UPDATE_HOOK}"
    np.testing.assert_allclose(seen[0], [0.6, 0.8], rtol=1e-6)


def test_a_keras_that_changed_an_internal_this_front_end_uses_is_named() -> None:
    class Renamed(keras.optimizers.Optimizer):
        _backend_update_step = None  # type: ignore[assignment]
        _track_variable = None  # type: ignore[assignment]

    class NoFlag(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__()
            del self.supports_jit

    with pytest.raises(RuntimeError, match=r"lacks or changed: Optimizer\._backend_update_step\(grads, "
                                           r"trainable_variables, learning_rate\); Optimizer\._track_variable"):
        check_keras(Renamed)
    with pytest.raises(RuntimeError, match=r"Layer\.supports_jit \(tested with Keras 3\.15\.x\)"):
        check_keras(layer_class=NoFlag)
