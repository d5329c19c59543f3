"""The new Kronecker blocks (Dense/EinsumDense over sequences, Conv1D, Conv3D, Embedding, Depthwise and Separable)
against independent numpy: factors from per-example inputs and output derivatives (expand and reduce by explicit
sums), preconditioning against an explicit Kronecker solve with np.kron.

Each model is `Input → probe layer (linear) → Flatten → Dense logits`; the probe's output derivatives for every
exact Fisher cotangent come from a plain GradientTape on the head, its inputs are the model's inputs.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from tests.numpy_reference import exact_logit_cotangents, kron_solve, patches_by_loops, shared_weight_factors

BATCH, CLASSES, DAMPING = 5, 3, 0.05


def probe_model(input_shape: tuple[int, ...], probe: keras.layers.Layer, dtype: str = "float32") -> keras.Model:
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input(input_shape, dtype=dtype), probe, keras.layers.Flatten(),
                              keras.layers.Dense(CLASSES, name="out")])
    rng = np.random.default_rng(5)  # biases away from zero, so that a misplaced bias row shows
    for variable in probe.trainable_variables:
        if "bias" in variable.path:
            variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    return model


def output_derivatives(model: keras.Model, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The probe's output s and ds_k = ∂(logits · v_k)/∂s for the exact cotangents v_k of the softmax Fisher."""
    s = tf.constant(model.layers[0](tf.constant(x)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(s)
        logits = model.layers[2](model.layers[1](s))
    cotangents = exact_logit_cotangents(logits.numpy().astype(np.float64))
    derivatives = [tape.gradient(logits, s, output_gradients=tf.constant(v, tf.float32)).numpy().astype(np.float64)
                   for v in cotangents]
    return s.numpy().astype(np.float64), derivatives


def statistics_and_inverse(model: keras.Model, x: np.ndarray, **config: object) -> tuple[KFAC, dict, dict]:
    """K-FAC's factors of the probe after one exact-Fisher batch, and the probe's preconditioned random gradient."""
    optimizer = KFAC(model, KFACConfig(fisher_targets="exact", damping=DAMPING, **config))  # type: ignore[arg-type]
    optimizer.accumulate_statistics(tf.constant(x))
    optimizer.refresh_inverses()
    rng = np.random.default_rng(9)
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in model.trainable_variables]
    solved = optimizer.precondition([tf.constant(g) for g in grads])
    probe = model.layers[0]
    own = {id(v) for v in probe.trainable_variables}
    by_name = {v.name: (g.astype(np.float64), s.numpy())
               for v, g, s in zip(model.trainable_variables, grads, solved, strict=True) if id(v) in own}
    return optimizer, optimizer.factors()[probe.name], by_name


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=1e-6, err_msg=what)


@pytest.mark.parametrize("mode", ["expand", "reduce"])
def test_dense_over_a_sequence(mode: str) -> None:
    model = probe_model((4, 3), keras.layers.Dense(2, name="probe"))
    x = np.random.default_rng(0).normal(size=(BATCH, 4, 3)).astype(np.float32)
    optimizer, factors, grads = statistics_and_inverse(model, x, sequence_factors=mode)
    assert optimizer.blocks[0].kind == ("kronecker-dense" if mode == "expand" else "kronecker-dense-reduce")
    _, ds = output_derivatives(model, x)
    a, g = shared_weight_factors(x.astype(np.float64), ds, BATCH, True, mode)
    assert_close(factors["A"], a, "A")
    assert_close(factors["G"], g, "G")
    (kernel, solved_kernel), (bias, solved_bias) = grads["kernel"], grads["bias"]
    expected = kron_solve(factors["A"], factors["G"], np.concatenate([kernel, bias[None]]), DAMPING)
    assert_close(solved_kernel, expected[:-1], "kernel")
    assert_close(solved_bias, expected[-1], "bias")


EINSUM_CASES = {
    # MultiHeadAttention's query/key/value projection: [B, T, C] x [C, H, D] -> [B, T, H, D]
    "qkv": ("abc,cde->abde", "de", (4, 3), (4, 2, 2)),
    # its output projection: [B, T, H, D] x [H, D, E] -> [B, T, E]
    "output": ("abcd,cde->abe", "e", (4, 2, 2), (4, 3)),
    # positions listed after the units in the output, and an elided batch
    "reordered": ("...bc,cd->...db", "d", (4, 3), (2, 4)),
}


@pytest.mark.parametrize("mode", ["expand", "reduce"])
@pytest.mark.parametrize("case", sorted(EINSUM_CASES))
def test_einsum_dense(case: str, mode: str) -> None:
    equation, bias_axes, input_shape, output_shape = EINSUM_CASES[case]
    probe = keras.layers.EinsumDense(equation, output_shape, bias_axes=bias_axes, name="probe")
    model = probe_model(input_shape, probe)
    x = np.random.default_rng(1).normal(size=(BATCH, *input_shape)).astype(np.float32)
    optimizer, factors, grads = statistics_and_inverse(model, x, sequence_factors=mode)
    assert optimizer.blocks[0].kind == f"kronecker-einsum-{mode}"
    _, ds = output_derivatives(model, x)
    (kernel, solved_kernel), (bias, solved_bias) = grads["kernel"], grads["bias"]
    if case == "qkv":  # positions t; units (h, d); contracted c
        a_rows, ds_rows = x, [d.reshape(BATCH, 4, 4) for d in ds]
        matrix = np.concatenate([kernel.reshape(3, 4), bias.reshape(1, 4)])
    elif case == "output":  # positions t; contracted (h, d); units e
        a_rows, ds_rows = x.reshape(BATCH, 4, 4), ds
        matrix = np.concatenate([kernel.reshape(4, 3), bias[None]])
    else:  # input [B, T=4, C=3], output [B, D=2, T=4]: positions t, units d
        a_rows, ds_rows = x, [d.transpose(0, 2, 1) for d in ds]
        matrix = np.concatenate([kernel, bias.reshape(1, 2)])  # the bias is [D, 1] (it spans "db")
    a, g = shared_weight_factors(a_rows.astype(np.float64), ds_rows, BATCH, True, mode)
    assert_close(factors["A"], a, "A")
    assert_close(factors["G"], g, "G")
    expected = kron_solve(factors["A"], factors["G"], matrix, DAMPING)
    assert_close(solved_kernel, expected[:-1].reshape(kernel.shape), "kernel")
    assert_close(solved_bias, expected[-1].reshape(bias.shape), "bias")


def conv1d_patches(x: np.ndarray, k: int, stride: int, padding: str, dilation: int = 1) -> np.ndarray:
    """[N, L, C] -> [N, L_out, k·C] by loops over output positions, entries (tap, channel), zero outside."""
    n, length, channels = x.shape
    span = dilation * (k - 1) + 1
    if padding == "same":
        out = -(-length // stride)
        pad = max((out - 1) * stride + span - length, 0) // 2
    elif padding == "causal":
        out, pad = -(-length // stride), span - 1
    else:
        out, pad = (length - span) // stride + 1, 0
    result = np.zeros((n, out, k * channels))
    for t in range(out):
        for tap in range(k):
            position = t * stride + tap * dilation - pad
            if 0 <= position < length:
                result[:, t, tap * channels:(tap + 1) * channels] = x[:, position]
    return result


@pytest.mark.parametrize(("conv_factors", "mode"), [("kfc", "expand"), ("cheap", "reduce")])
@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, "same", 1), (2, "valid", 1), (1, "causal", 2)])
def test_conv1d(conv_factors: str, mode: str, stride: int, padding: str, dilation: int) -> None:
    probe = keras.layers.Conv1D(3, 3, strides=stride, padding=padding, dilation_rate=dilation, name="probe")
    model = probe_model((7, 2), probe)
    x = np.random.default_rng(2).normal(size=(BATCH, 7, 2)).astype(np.float32)
    optimizer, factors, grads = statistics_and_inverse(model, x, conv_factors=conv_factors)
    assert optimizer.blocks[0].kind == f"kronecker-conv1d-{conv_factors}"
    _, ds = output_derivatives(model, x)
    patches = conv1d_patches(x.astype(np.float64), 3, stride, padding, dilation)
    a, g = shared_weight_factors(patches, ds, BATCH, True, mode)
    assert_close(factors["A"], a, "A")
    assert_close(factors["G"], g, "G")
    (kernel, solved_kernel), (bias, solved_bias) = grads["kernel"], grads["bias"]
    expected = kron_solve(factors["A"], factors["G"], np.concatenate([kernel.reshape(6, 3), bias[None]]), DAMPING)
    assert_close(solved_kernel, expected[:-1].reshape(kernel.shape), "kernel")
    assert_close(solved_bias, expected[-1], "bias")


def conv3d_patches(x: np.ndarray, k: int, padding: str) -> np.ndarray:
    """[N, D, H, W, C] -> [N, T, k³·C] (stride 1), entries (i, j, l, channel), zero outside."""
    n, size = x.shape[0], x.shape[1]
    pad, out = ((k - 1) // 2, size) if padding == "same" else (0, size - k + 1)
    rows = []
    for location in np.ndindex(out, out, out):
        entries = []
        for tap in np.ndindex(k, k, k):
            index = [t + o - pad for t, o in zip(tap, location, strict=True)]
            inside = all(0 <= i < size for i in index)
            entries.append(x[:, index[0], index[1], index[2]] if inside else np.zeros((n, x.shape[-1])))
        rows.append(np.concatenate(entries, axis=1))
    return np.stack(rows, axis=1)


@pytest.mark.parametrize(("conv_factors", "mode"), [("kfc", "expand"), ("cheap", "reduce")])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv3d(conv_factors: str, mode: str, padding: str) -> None:
    model = probe_model((3, 3, 3, 2), keras.layers.Conv3D(2, 2 if padding == "valid" else 3, padding=padding,
                                                          name="probe"))
    x = np.random.default_rng(7).normal(size=(BATCH, 3, 3, 3, 2)).astype(np.float32)
    optimizer, factors, grads = statistics_and_inverse(model, x, conv_factors=conv_factors)
    assert optimizer.blocks[0].kind == f"kronecker-conv3d-{conv_factors}"
    _, ds = output_derivatives(model, x)
    k = 2 if padding == "valid" else 3
    patches = conv3d_patches(x.astype(np.float64), k, padding)
    a, g = shared_weight_factors(patches, [d.reshape(BATCH, -1, 2) for d in ds], BATCH, True, mode)
    assert_close(factors["A"], a, "A")
    assert_close(factors["G"], g, "G")
    (kernel, solved_kernel), (bias, solved_bias) = grads["kernel"], grads["bias"]
    matrix = np.concatenate([kernel.reshape(-1, 2), bias[None]])
    expected = kron_solve(factors["A"], factors["G"], matrix, DAMPING)
    assert_close(solved_kernel, expected[:-1].reshape(kernel.shape), "kernel")
    assert_close(solved_bias, expected[-1], "bias")


def test_embedding_input_factor_is_the_token_frequencies() -> None:
    vocabulary, width = 6, 3
    model = probe_model((4,), keras.layers.Embedding(vocabulary, width, name="probe"), dtype="int32")
    x = np.random.default_rng(3).integers(0, vocabulary - 1, size=(BATCH, 4)).astype(np.int32)  # token 5 unseen
    optimizer, factors, grads = statistics_and_inverse(model, x)
    assert optimizer.blocks[0].kind == "kronecker-embedding" and factors["A"].shape == (vocabulary,)
    _, ds = output_derivatives(model, x)
    one_hot = np.eye(vocabulary)[x]
    a, g = shared_weight_factors(one_hot, ds, BATCH, False, "expand")
    np.testing.assert_array_equal(a, np.diag(np.diag(a)))  # one-hot inputs: the expand A is diagonal
    assert_close(factors["A"], np.diag(a), "A")
    assert factors["A"][vocabulary - 1] == 0 and np.isclose(factors["A"].sum(), 1.0)
    assert_close(factors["G"], g, "G")
    table, solved = grads["embeddings"]
    assert_close(solved, kron_solve(factors["A"], factors["G"], table, DAMPING), "embeddings")


def depthwise_reference(patches: np.ndarray, ds: list[np.ndarray], channels: int, multiplier: int, bias: bool,
                        mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per channel c: the shared-weight factors of its own patch [N, T, k] and its m outputs c·m + j."""
    n, locations = patches.shape[:2]
    per_tap = patches.reshape(n, locations, -1, channels)
    return [shared_weight_factors(per_tap[..., c], [d.reshape(n, locations, channels, multiplier)[:, :, c]
                                                    for d in ds], BATCH, bias, mode) for c in range(channels)]


@pytest.mark.parametrize(("conv_factors", "mode"), [("kfc", "expand"), ("cheap", "reduce")])
def test_depthwise_conv_has_one_kronecker_block_per_channel(conv_factors: str, mode: str) -> None:
    probe = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="probe")
    model = probe_model((4, 4, 2), probe)
    x = np.random.default_rng(4).normal(size=(BATCH, 4, 4, 2)).astype(np.float32)
    optimizer, factors, grads = statistics_and_inverse(model, x, conv_factors=conv_factors)
    assert optimizer.blocks[0].kind == f"kronecker-depthwise-{conv_factors}"
    _, ds = output_derivatives(model, x)
    patches = patches_by_loops(x.astype(np.float64), 3, 1, "same").reshape(BATCH, 16, -1)
    ds = [d.reshape(BATCH, 16, 4) for d in ds]
    (kernel, solved_kernel), (bias, solved_bias) = grads["kernel"], grads["bias"]
    for c, (a, g) in enumerate(depthwise_reference(patches, ds, 2, 2, True, mode)):
        assert_close(factors["A"][c], a, f"A of channel {c}")
        assert_close(factors["G"][c], g, f"G of channel {c}")
        matrix = np.concatenate([kernel[:, :, c].reshape(9, 2), bias.reshape(2, 2)[c][None]])
        expected = kron_solve(factors["A"][c], factors["G"][c], matrix, DAMPING)
        assert_close(solved_kernel[:, :, c], expected[:-1].reshape(3, 3, 2), f"kernel of channel {c}")
        assert_close(solved_bias.reshape(2, 2)[c], expected[-1], f"bias of channel {c}")


@pytest.mark.parametrize(("conv_factors", "mode"), [("kfc", "expand"), ("cheap", "reduce")])
def test_separable_conv_depthwise_and_pointwise_parts(conv_factors: str, mode: str) -> None:
    probe = keras.layers.SeparableConv2D(3, 3, depth_multiplier=2, padding="valid", name="probe")
    model = probe_model((4, 4, 2), probe)
    x = np.random.default_rng(6).normal(size=(BATCH, 4, 4, 2)).astype(np.float32)
    optimizer, factors, grads = statistics_and_inverse(model, x, conv_factors=conv_factors)
    assert optimizer.blocks[0].kind == f"kronecker-separable-{conv_factors}"
    _, ds = output_derivatives(model, x)
    ds = [d.reshape(BATCH, 4, 3) for d in ds]
    depthwise = probe.depthwise_kernel.numpy().astype(np.float64).reshape(9, 2, 2)  # [tap, channel, multiplier]
    pointwise = probe.pointwise_kernel.numpy().astype(np.float64).reshape(4, 3)
    patches = patches_by_loops(x.astype(np.float64), 3, 1, "valid").reshape(BATCH, 4, 9, 2)
    z = np.einsum("ntkc,kcm->ntcm", patches, depthwise).reshape(BATCH, 4, 4)  # intermediate channel c·m + j
    dz = [d @ pointwise.T for d in ds]
    for c, (a, g) in enumerate(depthwise_reference(patches.reshape(BATCH, 4, -1), dz, 2, 2, False, mode)):
        assert_close(factors["A_depthwise"][c], a, f"A_depthwise {c}")
        assert_close(factors["G_depthwise"][c], g, f"G_depthwise {c}")
    a, g = shared_weight_factors(z, ds, BATCH, True, mode)
    assert_close(factors["A"], a, "A")
    assert_close(factors["G"], g, "G")
    (dw, solved_dw), (pw, solved_pw), (bias, solved_bias) = (grads[n] for n in ("depthwise_kernel",
                                                                                  "pointwise_kernel", "bias"))
    expected = kron_solve(factors["A"], factors["G"], np.concatenate([pw.reshape(4, 3), bias[None]]), DAMPING)
    assert_close(solved_pw, expected[:-1].reshape(pw.shape), "pointwise")
    assert_close(solved_bias, expected[-1], "bias")
    for c in range(2):
        solved = kron_solve(factors["A_depthwise"][c], factors["G_depthwise"][c], dw[:, :, c].reshape(9, 2), DAMPING)
        assert_close(solved_dw[:, :, c], solved.reshape(3, 3, 2), f"depthwise channel {c}")
