"""Inversion-time benchmark for a fully-connected layer over a spatial map (AlexNet fc6: 6×6×256 → 4096):
one inversion (Cholesky) of every damped factor, plain Kronecker (A of size T·C+1) against doubly-factored."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np

from kfac_repro.kfac import KFAC, KFACConfig
from kfac_repro.kfac.linalg.device import on_device


@dataclass(frozen=True)
class InversionTiming:
    """Seconds for one inversion of the block, with the factor shapes inverted."""

    block: str
    factors: str
    seconds: float


def fc_over_map(height: int, width: int, channels: int, outputs: int) -> keras.Model:
    inputs = keras.Input((height, width, channels))
    return keras.Model(inputs, keras.layers.Dense(outputs, name="fc6")(keras.layers.Flatten()(inputs)))


def _random_psd(dim: int, rng: np.random.Generator) -> np.ndarray:
    matrix = rng.standard_normal((dim, dim)).astype(np.float32)
    return (matrix + matrix.T) / 2 + dim * np.eye(dim, dtype=np.float32)


def time_inversions(
    height: int = 6, width: int = 6, channels: int = 256, outputs: int = 4096,
    dtype: Literal["float32", "float64"] = "float32",
    progress: Callable[[str], None] = lambda _: None,
    device: str | None = None,
) -> list[InversionTiming]:
    """One `compute_inverse` of the fc6 block, doubly-factored and plain Kronecker, on random PSD factors
    (numpy on the host, or tf.linalg on `device`)."""
    rng = np.random.default_rng(0)
    timings = []
    for doubly in (True, False):
        model = fc_over_map(height, width, channels, outputs)
        optimizer = KFAC(model, KFACConfig(doubly_factored=("fc6",) if doubly else (), inverse_dtype=dtype))
        block = optimizer.blocks[0]
        factors = {name: _random_psd(shape[0], rng) for name, shape in block.factor_shapes.items()}
        progress(block.kind)
        start = time.perf_counter()
        with on_device(device):
            block.compute_inverse(factors, 1e-3, dtype)
        seconds = time.perf_counter() - start
        shapes = ", ".join(f"{n} {s[0]}²" for n, s in block.factor_shapes.items())
        timings.append(InversionTiming(block.kind, shapes, seconds))
    return timings
