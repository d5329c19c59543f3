"""Explicit inverses of damped curvature factors, computed in numpy/LAPACK (which release the GIL).

A block's inverse is stored as (F + δI)⁻¹ for each of its factors, so that preconditioning a Kronecker block
costs two matrix products, (A + δ_A I)⁻¹ ∇W (G + δ_G I)⁻¹ (paper Eq. 3); with factored Tikhonov damping no
eigenvalue is needed, and a Cholesky factorisation (LAPACK potrf + potri) is several times cheaper than an
eigendecomposition.

SciPy's OpenBLAS is loaded by the import below; unless the environment says otherwise, its idle worker threads are
told to sleep at once (OPENBLAS_THREAD_TIMEOUT=4, 2⁴ cycles) instead of spinning for about 0.1 s after each call,
which took a core from the TensorFlow step that follows a synchronous refresh (measured on the MLP of `bench step
--model mlp`: that step 52 ms instead of 36). It has no effect where SciPy's LAPACK was loaded before this module.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np
from scipy.linalg import lapack

from kfac_repro.kfac.inversion_resources import cholesky_inverse_on_device, current_device

InverseDtype = str  # "float32" or "float64"


def damped_inverse(factor: np.ndarray, shift: float, dtype: InverseDtype = "float32") -> np.ndarray:
    """(½(F + Fᵀ) + shift·I)⁻¹ of a symmetric PSD factor, by Cholesky in `dtype`, retried in float64 when the float32
    factorisation fails (round-off made the damped factor indefinite); float32 for the TF step.
    FloatingPointError if the factor is not finite, or not positive definite even in float64."""
    matrix = np.asarray(factor, dtype=dtype)
    if not np.all(np.isfinite(matrix)):
        raise FloatingPointError(f"a {matrix.shape[0]}×{matrix.shape[1]} Kronecker factor has NaN or infinite "
                                 "entries: the statistics diverged (try a larger damping or a smaller kl_clip)")
    inverse = _damped_cholesky_inverse(matrix, shift)
    if inverse is None and matrix.dtype != np.float64:
        inverse = _damped_cholesky_inverse(matrix.astype(np.float64), shift)
    if inverse is None:
        raise FloatingPointError(f"a damped {matrix.shape[0]}×{matrix.shape[1]} factor is not positive definite "
                                 f"(shift {shift:.3g}): try a larger damping")
    return inverse.astype(np.float32, copy=False)


def diagonal_inverse(diagonal: np.ndarray, shift: float) -> np.ndarray:
    """(diag(d) + shift·I)⁻¹ as the vector 1/(max(d, 0) + shift), float32 (negative round-off clipped)."""
    return (1.0 / (np.maximum(diagonal, 0.0) + shift)).astype(np.float32)


def _damped_cholesky_inverse(matrix: np.ndarray, shift: float) -> np.ndarray | None:
    """(½(M + Mᵀ) + shift·I)⁻¹ from its Cholesky factor (potrf, then potri), or None when it is not numerically
    positive definite.

    Two things keep this near LAPACK's own cost: the damped matrix is built once, in a buffer that LAPACK reads in
    place (symmetric, so its C-order buffer is its Fortran-order one), and a size that is a multiple of 128 gets
    one identity row and column more (the inverse's leading block is unchanged), since a power-of-two leading
    dimension makes the blocked factorisation's accesses collide in cache (1024: about 2× slower than 1025).
    """
    size = len(matrix)
    if current_device() is not None:
        damped = 0.5 * (matrix + matrix.T) + shift * np.eye(size, dtype=matrix.dtype)
        return cholesky_inverse_on_device(damped)
    padded = size + int(size >= 256 and size % 128 == 0)
    damped = np.empty((padded, padded), dtype=matrix.dtype)
    block = damped[:size, :size]
    np.add(matrix, matrix.T, out=block)
    block *= 0.5
    diagonal = np.arange(size)
    block[diagonal, diagonal] += shift
    if padded > size:
        damped[size, :] = 0.0
        damped[:, size] = 0.0
        damped[size, size] = 1.0
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (damped,))
    upper, info = potrf(damped.T, lower=False, overwrite_a=True, clean=False)  # damped.T: Fortran order, no copy
    if info != 0:
        return None
    inverse, info = potri(upper, lower=False, overwrite_c=True)
    lower = inverse.T[:size, :size]  # Fortran upper triangle = C-order lower triangle
    result = np.tril(lower)
    result += np.tril(lower, -1).T
    return result if np.all(np.isfinite(result)) else None
