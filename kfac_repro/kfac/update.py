"""The update rule every optimizer here applies, written once: g ← ∇L + wd·θ (None → 0), then momentum,
v ← μ v + α·d, θ ← θ − v, with α = η·(1 − μ) for K-FAC's `kl_bound: update` (the summed update η·d meets the KL
bound) and α = η otherwise (`increment`, and SGD, whose direction d is the gradient).

`kfac.KFAC`, `kfac.SGD` (the host loop, `kfac.base`) and `keras.KFAC` (`model.fit`) all call these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import tensorflow as tf


@dataclass(frozen=True)
class UpdateRule:
    """Momentum μ, weight decay wd, and K-FAC's `kl_bound` (None: the step size feeds the buffer, as in SGD)."""

    momentum: float
    weight_decay: float
    kl_bound: Literal["update", "increment"] | None = None

    def gradients(self, grads: Sequence[tf.Tensor | None], params: Sequence[tf.Variable],
                  reduce: Callable[[list[tf.Tensor]], list[tf.Tensor]]) -> list[tf.Tensor]:
        """reduce(∇L) + wd·θ: None gradients (a variable the loss does not reach) as zeros, `reduce` combining
        the replicas' gradients."""
        dense = [tf.zeros_like(p) if g is None else tf.convert_to_tensor(g) for g, p in zip(grads, params, strict=True)]
        dense = reduce(dense)
        if self.weight_decay:
            dense = [g + self.weight_decay * p for g, p in zip(dense, params, strict=True)]
        return dense

    def increment(self, step_size: tf.Tensor) -> tf.Tensor:
        """α, what the step size contributes to the momentum buffer: η·(1 − μ) for `kl_bound: update`, else η."""
        return step_size * (1.0 - self.momentum) if self.kl_bound == "update" else step_size

    def assignments(self, params: Sequence[tf.Variable], velocity: Sequence[tf.Variable],
                    direction: Sequence[tf.Tensor], step_size: tf.Tensor) -> tuple[list[tuple], list[tf.Tensor]]:
        """(variable, new value) pairs of v ← μ v + α·d, θ ← θ − v, and the new θ (for Polyak averaging)."""
        increment = self.increment(step_size)
        pairs: list[tuple] = []
        new_params = []
        for variable, buffer, d in zip(params, velocity, direction, strict=True):
            new_velocity = self.momentum * buffer + increment * d
            new_param = variable - new_velocity
            new_params.append(new_param)
            pairs += [(buffer, new_velocity), (variable, new_param)]
        return pairs, new_params
