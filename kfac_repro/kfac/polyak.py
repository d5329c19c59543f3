"""Exponentially decayed Polyak averaging of the weights (paper §6): θ̄ ← d θ̄ + (1 − d) θ after every update."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import tensorflow as tf


class PolyakAverage:
    """Shadow copies of `variables`; `swapped_in()` evaluates with the averages and restores the weights after."""

    def __init__(self, variables: Sequence[tf.Variable], decay: float):
        self.decay = decay
        self.variables = list(variables)
        self.averages = [
            tf.Variable(tf.identity(v.value), trainable=False, name=f"polyak_{i}") for i, v in enumerate(self.variables)
        ]

    def assignments(self, new_weights: list[tf.Tensor]) -> list[tuple[tf.Variable, tf.Tensor]]:
        """(average, new average) pairs for the weights after this step's update."""
        return [(average, self.decay * average + (1.0 - self.decay) * weight)
                for average, weight in zip(self.averages, new_weights, strict=True)]

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        saved = [tf.identity(v.value) for v in self.variables]
        for variable, average in zip(self.variables, self.averages, strict=True):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(self.variables, saved, strict=True):
                variable.assign(value)
