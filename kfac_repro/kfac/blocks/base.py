"""Fisher blocks: the curvature of one layer's parameters, with its statistics, inverse and preconditioner.

Every block follows one life cycle: `batch_statistics` (in the TF step, from captured tensors) → EMA into its
factor variables → `compute_inverse` (numpy, from a snapshot of the factors; may run in a background thread;
returns arrays keyed like `inverse`: "<factor>_inverse", all of them or the `parts` asked for, each inverse
variable being a unit of work that `inversion` can give to its own worker) → `install_inverse` (assign to the
block's TF variables) → `precondition` (in the TF step, from the installed inverse). A block may also keep
`scaling`: statistics measured in terms of the installed inverse (EKFAC's eigenbasis, `eigenbasis`), given by
`batch_statistics` beside the factors and folded in by `scaling_assignments` rather than the factors' average.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Sequence

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac.blocks.precision import ProductDtype, rounded
from kfac_repro.kfac.linalg.inverses import inverse_cost

Arrays = dict[str, np.ndarray]
InverseRecipes = dict[str, Callable[[], np.ndarray]]


class FisherBlock(abc.ABC):
    """The curvature block of a set of variables (those of one layer)."""

    kind: str = "block"
    inverse_path: str = "cholesky"  # how compute_inverse inverts (shown by summary())
    taps_preactivation: bool = False  # True: statistics need the layer's pre-activation, else its output
    reason: str = ""  # why the layer got this block (set at registration, shown by summary())
    rounds_products: bool = False  # its statistics' and preconditioning's products honour `product_dtype`
    product_dtype: ProductDtype = "float32"  # set at registration from KFACConfig (where it rounds products)

    def __init__(self, layer: keras.layers.Layer, variables: Sequence[tf.Variable]):
        self.layer = layer
        self.name: str = layer.name
        self.variables = list(variables)
        self.factors: dict[str, tf.Variable] = {}
        self.inverse: dict[str, tf.Variable] = {}
        self.scaling: dict[str, tf.Variable] = {}

    @property
    def statistics(self) -> dict[str, tf.Variable]:
        """The variables `batch_statistics` feeds, in its order: the factors, then the scaling."""
        return {**self.factors, **self.scaling}

    def scaling_assignments(self, batch: list[tf.Tensor], stats_decay: float) -> list[tuple]:
        """(variable, new value) pairs folding this batch's scaling statistics (in `scaling`'s order) in."""
        return []

    def _add_factor(self, name: str, dim: int) -> None:
        """A [dim, dim] factor `name` and its damped inverse `inverse[name + "_inverse"]` (identity until set)."""
        self.factors[name] = tf.Variable(tf.zeros([dim, dim]), trainable=False, name=f"{self.name}_{name}")
        self._add_inverse(name, tf.eye(dim))

    def _add_inverse(self, name: str, initial: tf.Tensor) -> None:
        self._add_inverse_state(f"{name}_inverse", initial)

    def _add_inverse_state(self, key: str, initial: tf.Tensor) -> None:
        """A variable `inverse[key]` that each refresh recomputes (an inverse, or a factorisation standing in
        for one), `initial` until then."""
        self.inverse[key] = tf.Variable(initial, trainable=False, name=f"{self.name}_{key}")

    def inverse_costs(self) -> dict[str, float]:
        """Each inverse variable's relative compute cost (`linalg.inverses.inverse_cost` of its shape), by
        key; a block whose refresh does less for a variable than an explicit inverse says so here."""
        return {key: inverse_cost(tuple(var.shape)) for key, var in self.inverse.items()}

    @property
    def factor_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(var.shape) for name, var in self.factors.items()}

    @abc.abstractmethod
    def batch_statistics(self, calls: list, cotangent_points: list[list[tf.Tensor]], batch_size: tf.Tensor) -> dict:
        """This mini-batch's statistics, keyed like `statistics`. `cotangent_points[k][c]`: derivative of the point of
        call c for Fisher cotangent k."""

    @abc.abstractmethod
    def inverse_recipes(self, factors: Arrays, damping: float, dtype: str) -> InverseRecipes:
        """One deferred computation per inverse variable of a factor snapshot, keyed like `inverse` (pure numpy;
        `dtype` of the factorisation, float32 results). What the inverses share (the damping split π, from
        traces) is computed here, so that each recipe costs only its own factor's inversion."""

    def compute_inverse(self, factors: Arrays, damping: float, dtype: str,
                        parts: Collection[str] | None = None) -> Arrays:
        """The damped inverses of a factor snapshot named in `parts` (default: all), keyed like `inverse`."""
        recipes = self.inverse_recipes(factors, damping, dtype)
        return {name: recipe() for name, recipe in recipes.items() if parts is None or name in parts}

    @abc.abstractmethod
    def precondition(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """(F̂ + damping)⁻¹ applied to the gradients of `variables`, using the installed inverse."""

    def install_inverse(self, inverse: Arrays) -> None:
        for name, value in inverse.items():
            self.inverse[name].assign(value)


def kronecker_solve(matrix: tf.Tensor, left_inverse: tf.Tensor, right_inverse: tf.Tensor,
                    dtype: ProductDtype = "float32") -> tf.Tensor:
    """(L ⊗ R)⁻¹ vec(M) as L⁻¹ M R⁻¹ for symmetric L, R: two matrix products in `dtype` (see `precision`)."""
    left, middle, right = (rounded(t, dtype) for t in (left_inverse, matrix, right_inverse))
    return tf.cast(tf.matmul(tf.matmul(left, middle), right), matrix.dtype)
