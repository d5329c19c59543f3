"""Explicit inverses of damped curvature factors, computed in numpy/LAPACK (which release the GIL).

A block's inverse is stored as (F + δI)⁻¹ for each of its factors, so that preconditioning a Kronecker block
costs two matrix products, (A + δ_A I)⁻¹ ∇W (G + δ_G I)⁻¹ (paper Eq. 3); with factored Tikhonov damping no
eigenvalue is needed, and a Cholesky factorisation (LAPACK potrf + potri) is several times cheaper than an
eigendecomposition.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from kfac_repro.kfac.inversion_resources import cholesky_inverse_on_device, current_device

InverseDtype = str  # "float32" or "float64"


def damped_inverse(factor: np.ndarray, shift: float, dtype: InverseDtype = "float32") -> np.ndarray:
    """(F + shift·I)⁻¹ of a symmetric PSD factor, by Cholesky in `dtype`, retried in float64 when the float32
    factorisation fails (round-off made the damped factor indefinite); float32 for the TF step.
    FloatingPointError if the factor is not finite, or not positive definite even in float64."""
    matrix = np.asarray(factor, dtype=dtype)
    if not np.all(np.isfinite(matrix)):
        raise FloatingPointError(f"a {matrix.shape[0]}×{matrix.shape[1]} Kronecker factor has NaN or infinite "
                                 "entries: the statistics diverged (try a larger damping or a smaller kl_clip)")
    damped = 0.5 * (matrix + matrix.T) + shift * np.eye(len(matrix), dtype=matrix.dtype)
    inverse = _cholesky_inverse(damped)
    if inverse is None and damped.dtype != np.float64:
        inverse = _cholesky_inverse(damped.astype(np.float64))
    if inverse is None:
        raise FloatingPointError(f"a damped {matrix.shape[0]}×{matrix.shape[1]} factor is not positive definite "
                                 f"(shift {shift:.3g}): try a larger damping")
    return inverse.astype(np.float32)


def diagonal_inverse(diagonal: np.ndarray, shift: float) -> np.ndarray:
    """(diag(d) + shift·I)⁻¹ as the vector 1/(max(d, 0) + shift), float32 (negative round-off clipped)."""
    return (1.0 / (np.maximum(diagonal, 0.0) + shift)).astype(np.float32)


def _cholesky_inverse(matrix: np.ndarray) -> np.ndarray | None:
    """M⁻¹ from M = L Lᵀ (potrf, then potri on L), or None when M is not numerically positive definite."""
    if current_device() is not None:
        return cholesky_inverse_on_device(matrix)
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (matrix,))
    lower, info = potrf(matrix, lower=True, clean=True)
    if info != 0:
        return None
    inverse, info = potri(lower, lower=True)
    if info != 0 or not np.all(np.isfinite(inverse)):
        return None
    return np.tril(inverse) + np.tril(inverse, -1).T
