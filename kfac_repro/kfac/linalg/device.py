"""Where this thread's factor decompositions run: LAPACK on the host (the default), or tf.linalg on a TensorFlow
device chosen with `on_device` (the inversion engine sets it per thread; `inverses` reads it)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

_DEVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar("kfac_inversion_device", default=None)


@contextmanager
def on_device(device: str | None) -> Iterator[None]:
    """Run this thread's factor inversions with tf.linalg on `device` (None: LAPACK on the host)."""
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def current_device() -> str | None:
    """The device `on_device` chose for this thread (None: the host)."""
    return _DEVICE.get()


def cholesky_inverse_on_device(matrix: np.ndarray) -> np.ndarray | None:
    """M⁻¹ of a symmetric positive definite M by tf.linalg Cholesky on `current_device()`, or None when M is not
    numerically positive definite."""
    import tensorflow as tf

    with tf.device(current_device()):
        tensor = tf.constant(matrix)
        try:
            inverse = tf.linalg.cholesky_solve(tf.linalg.cholesky(tensor), tf.eye(len(matrix), dtype=tensor.dtype))
        except tf.errors.InvalidArgumentError:
            return None
    result = inverse.numpy()
    return result if np.all(np.isfinite(result)) else None


def cholesky_on_device(matrix: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of a symmetric positive definite M by tf.linalg on `current_device()`, or None when
    M is not numerically positive definite."""
    import tensorflow as tf

    with tf.device(current_device()):
        try:
            lower = tf.linalg.cholesky(tf.constant(matrix))
        except tf.errors.InvalidArgumentError:
            return None
    result = lower.numpy()
    return result if np.all(np.isfinite(result)) else None


def eigh_on_device(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues ascending, eigenvectors as columns) of a symmetric M by tf.linalg on `current_device()`."""
    import tensorflow as tf

    with tf.device(current_device()):
        values, vectors = tf.linalg.eigh(tf.constant(matrix))
    return values.numpy(), vectors.numpy()
