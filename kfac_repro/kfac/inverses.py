"""Eigendecompositions of damped Kronecker factors, computed in numpy (LAPACK releases the GIL).

An "inverse" of a block is stored as eigenvectors Q and damped eigenvalues e + δ of each factor, so that
(F + δI)⁻¹ x = Q diag(1/(e+δ)) Qᵀ x; the preconditioner is applied in the eigenbasis (paper §1.5 of our notes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DampedEigen:
    """Q [d, d] (columns are eigenvectors) and the damped eigenvalues e + δ [d], as float32 for the TF step."""

    vectors: np.ndarray
    values: np.ndarray


def damped_eigen(factor: np.ndarray, shift: float, dtype: str = "float64") -> DampedEigen:
    """Eigendecomposition of the symmetric factor in `dtype` (retried in float64 if LAPACK does not converge),
    eigenvalues clipped at 0 then shifted by `shift`. FloatingPointError if the factor is not finite."""
    matrix = np.asarray(factor, dtype=dtype)
    if not np.all(np.isfinite(matrix)):
        raise FloatingPointError(f"a {matrix.shape[0]}×{matrix.shape[1]} Kronecker factor has NaN or infinite "
                                 "entries: the statistics diverged (try a larger damping or a smaller kl_clip)")
    matrix = 0.5 * (matrix + matrix.T)
    try:
        values, vectors = np.linalg.eigh(matrix)
    except np.linalg.LinAlgError:
        if matrix.dtype == np.float64:
            raise
        values, vectors = np.linalg.eigh(matrix.astype(np.float64))
    values = np.maximum(values, 0.0) + shift
    return DampedEigen(vectors=vectors.astype(np.float32), values=values.astype(np.float32))
