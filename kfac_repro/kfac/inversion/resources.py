"""Where the factor decompositions run and on how many threads.

Host (the default on a CPU): numpy's LAPACK, on `inversion_threads` BLAS threads (threadpoolctl; OpenBLAS's
count is process-wide and TensorFlow's own kernels do not use it), with TensorFlow's intra-op pool shrunk by as
many cores (`reserve_inversion_cores`, before TensorFlow starts) so that the two do not fight over cores.
Accelerator: tf.linalg Cholesky on a TensorFlow device, chosen per thread with `on_device`.
"""

from __future__ import annotations

import contextvars
import os
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


def limit_lapack_threads(threads: int) -> None:
    """Let numpy's BLAS/LAPACK use at most `threads` threads (process-wide)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def reserve_inversion_cores(threads: int) -> int:
    """Size TensorFlow's intra-op pool to the cores left after `threads` for inversion (at least 1); call it
    before TensorFlow runs anything (later, the pools stay as they are). Returns TensorFlow's thread count
(0: TensorFlow's default, all cores)."""
    import tensorflow as tf

    left = max(1, (os.cpu_count() or 1) - threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(left)
        tf.config.threading.set_inter_op_parallelism_threads(left)
    except RuntimeError:  # TensorFlow already started in this process (e.g. several arms in one process)
        return tf.config.threading.get_intra_op_parallelism_threads()
    return left
