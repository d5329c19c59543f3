"""EKFAC mode (`KFACConfig.eigenvalue_correction`, kfac/blocks/eigenbasis.py) against an independent numpy EKFAC:
explicit forward and backward passes, explicit eigendecompositions of the factors, explicit per-example gradients
projected one by one (tests/numpy_reference.py); the scaling re-estimated at exactly the statistics steps and
started afresh at each eigenbasis refresh; the blocks it does not cover named; a short `fit` that lowers the loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.keras import KFAC as KerasKFAC
from kfac_repro.kfac import KFAC, KFACConfig
from kfac_repro.kfac.blocks.eigenbasis import eigenbasis
from kfac_repro.kfac.linalg.device import on_device
from kfac_repro.kfac.linalg.inverses import CurvatureDiverged
from tests.numpy_reference import (
    eigh_basis,
    ekfac_scaling,
    ekfac_solve,
    exact_logit_cotangents,
    patches_by_loops,
    with_ones,
)

BATCH, SIZE, CHANNELS, FILTERS, UNITS, CLASSES = 40, 4, 2, 3, 2, 3  # BATCH > 33: no factor A is singular
POSITIONS = SIZE * SIZE
DAMPING = 0.01


def conv_sequence_dense_model(seed: int = 4) -> keras.Model:
    """Conv2D (3×3, same) → its 25 locations as a sequence → Dense over positions (tanh) → Flatten → Dense: the
    three ways EKFAC forms per-example gradients (im2col patches, positions, one row per example)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, CHANNELS))
    conv = keras.layers.Conv2D(FILTERS, 3, padding="same", name="conv")(inputs)
    hidden = keras.layers.Dense(UNITS, activation="tanh", name="seq")(keras.layers.Reshape((POSITIONS, FILTERS))(conv))
    logits = keras.layers.Dense(CLASSES, name="out")(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, logits)


def weights64(model: keras.Model, name: str) -> tuple[np.ndarray, np.ndarray]:
    kernel, bias = model.get_layer(name).weights
    return kernel.numpy().astype(np.float64), bias.numpy().astype(np.float64)


def numpy_pass(model: keras.Model, x: np.ndarray) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """Per layer: homogeneous inputs [B, T, d_A] and, for each exact Fisher cotangent, the pre-activation
    derivatives [B, T, d_G], by a hand-written forward and backward pass."""
    (wc, bc), (ws, bs), (wo, bo) = (weights64(model, name) for name in ("conv", "seq", "out"))
    patches = patches_by_loops(x, 3, 1, "same").reshape(BATCH, POSITIONS, -1)
    conv = patches @ wc.reshape(-1, FILTERS) + bc
    hidden = np.tanh(conv @ ws + bs)
    flat = hidden.reshape(BATCH, -1)
    derivatives: dict[str, list[np.ndarray]] = {"conv": [], "seq": [], "out": []}
    for v in exact_logit_cotangents(flat @ wo + bo):
        ds_seq = (v @ wo.T).reshape(BATCH, POSITIONS, UNITS) * (1 - hidden**2)
        derivatives["out"].append(v[:, None, :])
        derivatives["seq"].append(ds_seq)
        derivatives["conv"].append(ds_seq @ ws.T)
    ones = np.ones((BATCH, POSITIONS, 1))
    return {"conv": (np.concatenate([patches, ones], axis=2), derivatives["conv"]),
            "seq": (np.concatenate([conv, ones], axis=2), derivatives["seq"]),
            "out": (with_ones(flat)[:, None, :], derivatives["out"])}


def numpy_factors(inputs: np.ndarray, derivatives: list[np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """A and G as the library defines them: Dense rows (positions expanded); Conv2D App. A (cheap): the
    location-mean patch and the location-summed derivative."""
    if name == "conv":
        mean_patch = inputs.mean(axis=1)
        summed = [d.sum(axis=1) for d in derivatives]
        return mean_patch.T @ mean_patch / BATCH, sum(s.T @ s for s in summed) / BATCH
    rows = inputs.reshape(-1, inputs.shape[2])
    return rows.T @ rows / len(rows), sum(d.reshape(-1, d.shape[2]).T @ d.reshape(-1, d.shape[2])
                                          for d in derivatives) / BATCH


def as_matrix(grads: list[np.ndarray]) -> np.ndarray:
    kernel, bias = grads
    return np.concatenate([kernel.reshape(-1, kernel.shape[-1]), bias[None, :]], axis=0)


def data(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(BATCH, SIZE, SIZE, CHANNELS)).astype(np.float32)


def test_eigenbasis_scaling_and_preconditioning_equal_numpy_on_dense_sequence_dense_and_conv2d_layers() -> None:
    model = conv_sequence_dense_model()
    optimizer = KFAC(model, KFACConfig(eigenvalue_correction=True, fisher_targets="exact", damping=DAMPING))
    blocks = {block.name: block for block in optimizer.blocks}
    assert {name: block.kind for name, block in blocks.items()} == {
        "conv": "ekfac-conv-cheap", "seq": "ekfac-dense", "out": "ekfac-dense"}
    first, second, third = (data(seed) for seed in (1, 2, 3))
    optimizer.accumulate_statistics(tf.constant(first))
    optimizer.refresh_inverses()  # the eigenbasis of the first batch's factors
    reference = numpy_pass(model, first.astype(np.float64))
    bases = {}
    for name, (inputs, derivatives) in reference.items():
        a, g = numpy_factors(inputs, derivatives, name)
        np.testing.assert_allclose(optimizer.factors()[name]["A"], a, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(optimizer.factors()[name]["G"], g, rtol=1e-4, atol=1e-6, err_msg=name)
        bases[name] = (*eigh_basis(a), *eigh_basis(g))
        for factor, key in ((a, "A_eigen"), (g, "G_eigen")):  # the installed [U; λᵀ] reproduces the factor
            installed = blocks[name].inverse[key].numpy()
            np.testing.assert_allclose(installed[:-1] @ np.diag(installed[-1]) @ installed[:-1].T, factor,
                                       rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")
    rng = np.random.default_rng(7)
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in model.trainable_variables]
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}

    def check_preconditioned(scalings: dict[str, np.ndarray], when: str) -> None:
        result = [r.numpy() for r in optimizer.precondition([tf.constant(g) for g in grads])]
        for name, (basis_a, _, basis_g, _) in bases.items():
            positions = [index[id(v)] for v in model.get_layer(name).weights]
            expected = ekfac_solve(basis_a, basis_g, scalings[name], as_matrix([grads[i] for i in positions]),
                                   DAMPING)
            np.testing.assert_allclose(as_matrix([result[i] for i in positions]), expected, rtol=2e-3,
                                       atol=2e-4 * np.abs(expected).max(), err_msg=f"{name} {when}")

    # until a statistics step measures s in the new basis, s is K-FAC's eigenvalues a gᵀ
    check_preconditioned({name: np.outer(np.maximum(va, 0), np.maximum(vg, 0))
                          for name, (_, va, _, vg) in bases.items()}, "fresh eigenbasis")
    measured: dict[str, list[np.ndarray]] = {name: [] for name in bases}
    for batch in (second, third):  # two statistics steps in the same basis: s is their mean (decay 1 − 1/2)
        optimizer.accumulate_statistics(tf.constant(batch))
        for name, (inputs, derivatives) in numpy_pass(model, batch.astype(np.float64)).items():
            basis_a, _, basis_g, _ = bases[name]
            measured[name].append(ekfac_scaling(inputs, derivatives, basis_a, basis_g, BATCH))
        expected = {name: np.mean(values, axis=0) for name, values in measured.items()}
        for name, block in blocks.items():
            np.testing.assert_allclose(block.scaling["scaling"].numpy(), expected[name], rtol=2e-3,
                                       atol=1e-5 * expected[name].max(), err_msg=f"{name} s")
            assert block.inverse["scaling_count"].numpy() == len(measured[name])
        check_preconditioned(expected, f"after {len(measured['out'])} statistics steps")
    optimizer.close()


def test_the_scaling_is_re_estimated_at_exactly_the_statistics_steps_and_afresh_after_each_refresh() -> None:
    """inverse_every 4, stats_every 2: s changes at steps 0, 2, 4, 6 only; its count of batches since the
    eigenbasis refresh is reset at the refreshes (before steps 0 and 4), so that step 4's s is step 4's batch."""
    model = conv_sequence_dense_model()
    optimizer = KFAC(model, KFACConfig(eigenvalue_correction=True, inverse_every=4, stats_every=2, damping=0.1))
    block = next(b for b in optimizer.blocks if b.name == "seq")
    x = data(5)
    y = np.arange(BATCH, dtype=np.int32) % CLASSES
    counts, scalings = [], []
    for _ in range(8):
        before = block.scaling["scaling"].numpy()
        optimizer.train_step(tf.constant(x), tf.constant(y))
        counts.append(int(block.inverse["scaling_count"].numpy()))
        scalings.append(not np.array_equal(before, block.scaling["scaling"].numpy()))
    optimizer.close()
    assert counts == [1, 1, 2, 2, 1, 1, 2, 2]
    assert scalings == [True, False, True, False, True, False, True, False]
    assert [(r.snapshot_step, r.installed_at) for r in optimizer.refresh.history] == [(4, 4)]


def test_blocks_ekfac_does_not_cover_keep_k_fac_and_say_so() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.Conv1D(3, 2, name="conv1d"),
                              keras.layers.BatchNormalization(name="batch_normalization"), keras.layers.Flatten(),
                              keras.layers.Dense(2, name="dense")])
    optimizer = KFAC(model, KFACConfig(eigenvalue_correction=True))
    kinds = {block.name: (block.kind, block.reason) for block in optimizer.blocks}
    optimizer.close()
    assert kinds["dense"][0] == "ekfac-dense"
    for name in ("conv1d", "batch_normalization"):
        assert not kinds[name][0].startswith("ekfac") and "not eigenvalue-corrected" in kinds[name][1], kinds[name]
    reduced = KFAC(model, KFACConfig(eigenvalue_correction=True, sequence_factors="reduce"))
    dense = next(b for b in reduced.blocks if b.name == "dense")
    reduced.close()
    assert dense.kind == "kronecker-dense-reduce" and "not eigenvalue-corrected" in dense.reason


def test_a_short_fit_in_ekfac_mode_lowers_the_loss() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8, 8, 1)).astype(np.float32)
    y = (x.reshape(512, -1) @ rng.normal(size=(64, 4))).argmax(axis=1).astype(np.int32)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    optimizer = KerasKFAC(model, eigenvalue_correction=True)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    initial = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=64, epochs=4, verbose=0)
    optimizer.close()
    assert all(b.kind.startswith("ekfac") for b in optimizer.preconditioner.blocks)
    assert history.history["loss"][-1] < 0.5 * initial, (initial, history.history["loss"])


@pytest.mark.parametrize("value", [1, "yes", None])
def test_the_setting_takes_true_or_false_only(value: object) -> None:
    with pytest.raises(ValueError, match=r"^eigenvalue_correction: expected true or false"):
        KFACConfig(eigenvalue_correction=value)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_eigenbasis_on_the_host_and_on_a_tensorflow_device_agree(dtype: str) -> None:
    """`inversion_device: accelerator` decomposes with tf.linalg on the replica's device (here the CPU's)."""
    root = np.random.default_rng(3).normal(size=(7, 5))
    factor = root @ root.T / 5  # rank 5 of 7: two zero eigenvalues, clipped at 0 (round-off may make them < 0)
    host = eigenbasis(factor, dtype)
    with on_device("/CPU:0"):
        device = eigenbasis(factor, dtype)
    for found in (host, device):
        assert found.dtype == np.float32 and found.shape == (8, 7) and (found[-1] >= 0).all()
        np.testing.assert_allclose(found[:-1] @ np.diag(found[-1]) @ found[:-1].T, factor, atol=1e-5)
        np.testing.assert_allclose(found[:-1].T @ found[:-1], np.eye(7), atol=1e-5)
    np.testing.assert_allclose(device[-1], host[-1], atol=1e-5)
    with pytest.raises(CurvatureDiverged, match="7×7 Kronecker factor has NaN"):
        eigenbasis(np.full((7, 7), np.nan), dtype)
