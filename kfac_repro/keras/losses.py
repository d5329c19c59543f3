"""The likelihood behind a compiled Keras loss, and its Fisher scale.

K-FAC's curvature is the Fisher of the model's predictive distribution, which equals the Gauss–Newton matrix of
the loss only when the loss is that distribution's negative log-likelihood at Keras's scale. Keras averages over
the batch ("sum_over_batch_size") and, for mean squared error and binary cross-entropy, over the output elements
too; for d output elements per example the per-example Hessian with respect to the output is then (2/d)·I for MSE
and diag(p(1 − p))/d for binary cross-entropy, so the Fisher cotangents are scaled by √(2/d) and √(1/d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kfac_repro.kfac.likelihoods import Likelihood

_SUPPORTED = ("SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy", "MeanSquaredError")
_FUNCTIONS = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
    "mean_squared_error": keras.losses.MeanSquaredError,
}
_LIKELIHOODS: dict[type, Likelihood] = {
    keras.losses.SparseCategoricalCrossentropy: "categorical",
    keras.losses.CategoricalCrossentropy: "categorical",
    keras.losses.BinaryCrossentropy: "bernoulli",
    keras.losses.MeanSquaredError: "gaussian",
}
_PROBABILITY_ACTIVATIONS = {"categorical": "softmax", "bernoulli": "sigmoid"}


@dataclass(frozen=True)
class LossLikelihood:
    """What K-FAC needs from the loss: the likelihood, whether outputs are logits, the cotangent scale."""

    likelihood: Likelihood
    from_logits: bool
    loss_name: str

    def cotangent_scale(self, elements: int) -> float:
        """√(Hessian scale): √(2/d) for MSE, √(1/d) for binary cross-entropy, 1 for categorical (d: output
        elements per example)."""
        if self.likelihood == "categorical":
            return 1.0
        return float(np.sqrt((2.0 if self.likelihood == "gaussian" else 1.0) / elements))


def likelihood_of(model: keras.Model) -> LossLikelihood:
    """The likelihood of `model`'s compiled loss; a clear ValueError for a loss K-FAC cannot map, or a loss that
    contradicts the model's last activation (softmax/sigmoid outputs with from_logits=True, or the reverse)."""
    loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError(f"model {model.name!r} has no compiled loss: call model.compile(optimizer=KFAC(model), "
                         "loss=...) first")
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(f"K-FAC supports one loss on one output; model {model.name!r} was compiled with {loss!r}")
    instance = _as_loss_instance(loss)
    kind = type(instance)
    if kind not in _LIKELIHOODS:
        raise ValueError(f"K-FAC cannot map the loss {_describe(loss)} to a likelihood; supported: "
                         f"{', '.join(_SUPPORTED)} (or their function names and strings)")
    config: dict[str, Any] = instance.get_config()
    if config.get("reduction", "sum_over_batch_size") != "sum_over_batch_size":
        raise ValueError(f"loss {_describe(loss)}: K-FAC needs reduction='sum_over_batch_size' (the batch mean, "
                         f"Keras's default), found {config['reduction']!r}")
    if config.get("axis", -1) != -1:
        raise ValueError(f"loss {_describe(loss)}: K-FAC needs axis=-1, found {config['axis']!r}")
    if config.get("ignore_class") is not None:
        raise ValueError(f"loss {_describe(loss)}: ignore_class is not supported by K-FAC")
    likelihood = _LIKELIHOODS[kind]
    from_logits = bool(config.get("from_logits", False))
    _check_activation(model, likelihood, from_logits, _describe(loss))
    return LossLikelihood(likelihood, from_logits, kind.__name__)


def _as_loss_instance(loss: Any) -> Any:
    if isinstance(loss, (str, dict)):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    name = getattr(loss, "__name__", None)
    if callable(loss) and name in _FUNCTIONS and loss is getattr(keras.losses, name, None):
        return _FUNCTIONS[name]()  # Keras's loss functions default to from_logits=False
    return loss


def _describe(loss: Any) -> str:
    if isinstance(loss, str):
        return repr(loss)
    return getattr(loss, "__name__", None) or type(loss).__name__


def _check_activation(model: keras.Model, likelihood: Likelihood, from_logits: bool, loss: str) -> None:
    """Refuse a softmax/sigmoid output read as logits, and a linear output read as probabilities."""
    expected = _PROBABILITY_ACTIVATIONS.get(likelihood)
    activation = _output_activation(model)
    if expected is None or activation is None:
        return
    if from_logits and activation in ("softmax", "sigmoid"):
        raise ValueError(f"loss {loss} has from_logits=True but model {model.name!r} ends with a {activation}: "
                         f"its outputs are probabilities; compile with from_logits=False or drop the {activation}")
    if not from_logits and activation == "linear":
        raise ValueError(f"loss {loss} expects probabilities (from_logits=False) but model {model.name!r} ends with "
                         f"a linear layer: its outputs are logits; compile with from_logits=True or add a {expected}")


def _output_activation(model: keras.Model) -> str | None:
    """'softmax', 'sigmoid' or 'linear' for the layer producing the model's output, when it can be told."""
    layer = _output_layer(model)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) and name in (None, "linear"):
        return "linear"
    return name if name in ("softmax", "sigmoid") else None


def _output_layer(model: keras.Model) -> keras.layers.Layer | None:
    if isinstance(model, keras.Sequential):
        return model.layers[-1] if model.layers else None
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1:
        return None
    history = getattr(outputs[0], "_keras_history", None)
    return getattr(history, "operation", None)
