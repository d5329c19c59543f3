"""The open block table: a user's own layer registered with a Kronecker block, checked against numpy brute force
(the per-example Fisher from explicit Jacobians, the batch factors from a hand-written forward and backward pass,
the preconditioned gradient from an explicit Kronecker solve); a per-name entry beating the class entry."""

from collections.abc import Callable, Iterator

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig, register_block
from kfac_repro.kfac.blocks.kronecker import KroneckerBlock
from kfac_repro.kfac.blocks.vector import GenericBlock
from tests.numpy_reference import exact_logit_cotangents, kron_solve, softmax, with_ones

BATCH, D_IN, HIDDEN, CLASSES = 6, 4, 5, 3
DAMPING = 0.05


class Affine(keras.layers.Layer):
    """A Dense-like layer with its own call: activation(x @ W + b)."""

    def __init__(self, units: int, activation: str | None = None, **kwargs: object):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="w")
        self.bias = self.add_weight(shape=(self.units,), initializer="random_normal", name="b")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.activation(tf.matmul(x, self.kernel) + self.bias)


def affine_mlp(seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D_IN,))
    hidden = Affine(HIDDEN, "tanh", name="hidden")(inputs)
    return keras.Model(inputs, Affine(CLASSES, name="out")(hidden))


@pytest.fixture
def registered() -> Iterator[Callable[..., None]]:
    """register_block, with every entry a test registers removed afterwards."""
    removers: list[Callable[[], None]] = []
    yield lambda *args, **kwargs: removers.append(register_block(*args, **kwargs))
    for remove in removers:
        remove()


def kronecker(layer: keras.layers.Layer, config: KFACConfig) -> KroneckerBlock:
    return KroneckerBlock(layer)


def weights(model: keras.Model, name: str) -> tuple[np.ndarray, np.ndarray]:
    layer = model.get_layer(name)
    return layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)


def per_example_jacobians(model: keras.Model, x: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Per layer, one [CLASSES, (d_in + 1)·d_out] Jacobian of the logits w.r.t. [W; b] (row-major) per example,
    entry by entry: ∂z_k/∂W_ij = a_i · ∂z_k/∂s_j with a the input (1 for the bias row)."""
    w1, b1 = weights(model, "hidden")
    w2, _ = weights(model, "out")
    jacobians: dict[str, list[np.ndarray]] = {"hidden": [], "out": []}
    for row in x:
        h = np.tanh(row @ w1 + b1)
        ds = {"hidden": w2.T * (1 - h**2), "out": np.eye(CLASSES)}  # ∂z_k/∂s_j, [CLASSES, d_out]
        for name, a in (("hidden", np.append(row, 1.0)), ("out", np.append(h, 1.0))):
            d_out = ds[name].shape[1]
            jac = np.zeros((CLASSES, len(a) * d_out))
            for k in range(CLASSES):
                for i in range(len(a)):
                    for j in range(d_out):
                        jac[k, i * d_out + j] = a[i] * ds[name][k, j]
            jacobians[name].append(jac)
    return jacobians


def logits_of(model: keras.Model, x: np.ndarray) -> np.ndarray:
    w1, b1 = weights(model, "hidden")
    w2, b2 = weights(model, "out")
    return np.tanh(x @ w1 + b1) @ w2 + b2


def batch_factors(model: keras.Model, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """A = E[ā āᵀ], G = (1/B) Σ_b Σ_k ds_bk ds_bkᵀ by a hand-written forward and backward pass (exact targets)."""
    w1, b1 = weights(model, "hidden")
    w2, _ = weights(model, "out")
    hidden = np.tanh(x @ w1 + b1)
    g_hidden, g_out = np.zeros((HIDDEN, HIDDEN)), np.zeros((CLASSES, CLASSES))
    for ds_out in exact_logit_cotangents(logits_of(model, x)):
        ds_hidden = (ds_out @ w2.T) * (1 - hidden**2)
        g_out += ds_out.T @ ds_out / len(x)
        g_hidden += ds_hidden.T @ ds_hidden / len(x)
    a_in, a_hidden = with_ones(x), with_ones(hidden)
    return {"hidden": {"A": a_in.T @ a_in / len(x), "G": g_hidden},
            "out": {"A": a_hidden.T @ a_hidden / len(x), "G": g_out}}


def test_unregistered_custom_layer_gets_the_generic_block() -> None:
    optimizer = KFAC(affine_mlp(), KFACConfig())
    assert [type(block) for block in optimizer.blocks] == [GenericBlock, GenericBlock]
    assert "Affine: no Kronecker structure" in optimizer.summary()


def test_custom_layer_registered_with_a_kronecker_block_equals_the_per_example_fisher(registered: Callable) -> None:
    """For one example the exact Fisher block E_y[vec(DW) vec(DW)ᵀ] = Jᵀ (diag p − p pᵀ) J is exactly A ⊗ G."""
    registered(Affine, kronecker, "Affine: x W + b, A ⊗ G")
    model = affine_mlp(seed=2)
    x = np.random.default_rng(1).normal(size=(1, D_IN)).astype(np.float32)
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact"))
    assert [block.kind for block in optimizer.blocks] == ["kronecker-dense", "kronecker-dense"]
    assert "Affine: x W + b, A ⊗ G" in optimizer.summary()
    optimizer.accumulate_statistics(tf.constant(x))
    x64 = x.astype(np.float64)
    p = softmax(logits_of(model, x64))[0]
    for name, (jacobian,) in per_example_jacobians(model, x64).items():
        exact_block = jacobian.T @ (np.diag(p) - np.outer(p, p)) @ jacobian
        factors = optimizer.factors()[name]
        np.testing.assert_allclose(np.kron(factors["A"], factors["G"]), exact_block, rtol=1e-4, atol=1e-7,
                                   err_msg=name)


def test_custom_layer_kronecker_factors_and_preconditioned_gradient_equal_numpy(registered: Callable) -> None:
    registered(Affine, kronecker)
    model = affine_mlp()
    x = np.random.default_rng(0).normal(size=(BATCH, D_IN)).astype(np.float32)
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact", damping=DAMPING))
    optimizer.accumulate_statistics(tf.constant(x))
    expected = batch_factors(model, x.astype(np.float64))
    for name, factors in optimizer.factors().items():
        for factor, value in factors.items():
            np.testing.assert_allclose(value, expected[name][factor], rtol=1e-4, atol=1e-6, err_msg=f"{name}.{factor}")
    optimizer.refresh_inverses()
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in optimizer.params]
    solved = {v.path: s.numpy() for v, s in zip(optimizer.params, optimizer.precondition(grads), strict=True)}
    by_path = {v.path: g for v, g in zip(optimizer.params, grads, strict=True)}
    for name in ("hidden", "out"):
        layer = model.get_layer(name)
        matrix = np.vstack([by_path[layer.kernel.path], by_path[layer.bias.path][None]]).astype(np.float64)
        want = kron_solve(expected[name]["A"], expected[name]["G"], matrix, DAMPING)
        got = np.vstack([solved[layer.kernel.path], solved[layer.bias.path][None]])
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4, err_msg=name)


def test_a_name_entry_beats_the_class_entry_and_removal_restores_the_default(registered: Callable) -> None:
    registered(Affine, kronecker)
    registered("ou*", lambda layer, config: GenericBlock(layer, config.exact_block_max), "out: generic by name")
    optimizer = KFAC(affine_mlp(), KFACConfig())
    assert [(block.name, block.kind) for block in optimizer.blocks] == [
        ("hidden", "kronecker-dense"), ("out", "generic-exact")]
    assert "out: generic by name" in optimizer.summary()
    remove = register_block(Affine, lambda layer, config: GenericBlock(layer, 0), "the latest class entry")
    try:
        assert [b.reason for b in KFAC(affine_mlp(), KFACConfig()).blocks] == [
            "the latest class entry", "out: generic by name"]
    finally:
        remove()
    assert KFAC(affine_mlp(), KFACConfig()).blocks[0].kind == "kronecker-dense"


def test_a_registered_class_covers_subclasses_keeping_its_call_only(registered: Callable) -> None:
    class Scaled(Affine):
        def call(self, x: tf.Tensor) -> tf.Tensor:
            return 2.0 * super().call(x)

    class Renamed(Affine):
        pass

    registered(Affine, kronecker)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((D_IN,))
    outputs = Scaled(CLASSES, name="scaled")(Renamed(HIDDEN, "tanh", name="renamed")(inputs))
    optimizer = KFAC(keras.Model(inputs, outputs), KFACConfig())
    assert [block.kind for block in optimizer.blocks] == ["kronecker-dense", "generic-exact"]


def test_skip_layers_beats_a_registered_entry(registered: Callable) -> None:
    registered("out", kronecker)
    optimizer = KFAC(affine_mlp(), KFACConfig(skip_layers=("out",)))
    assert [block.name for block in optimizer.blocks] == ["hidden"]
    assert "skip_layers: matches 'out'" in optimizer.summary()


def test_bad_registrations_are_refused_naming_what_is_wrong(registered: Callable) -> None:
    with pytest.raises(TypeError, match="key must be a keras Layer class or a layer name, found <class 'int'>"):
        register_block(int, kronecker)
    with pytest.raises(TypeError, match="factory for 'out' must be callable"):
        register_block("out", "KroneckerBlock")
    registered("out", lambda layer, config: "not a block")
    with pytest.raises(TypeError, match="layer 'out': the block registered for 'out' returned str, not a FisherBlock"):
        KFAC(affine_mlp(), KFACConfig())
