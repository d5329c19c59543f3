"""Explicit inverses of damped curvature factors, computed with numpy and LAPACK (`lapack`: without the GIL).

A block's inverse is stored as (F + δI)⁻¹ for each of its factors, so that preconditioning a Kronecker block
costs two matrix products, (A + δ_A I)⁻¹ ∇W (G + δ_G I)⁻¹ (paper Eq. 3); with factored Tikhonov damping no
eigenvalue is needed, and a Cholesky factorisation (LAPACK potrf + potri) is several times cheaper than an
eigendecomposition.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kfac_repro.kfac.linalg.device import cholesky_inverse_on_device, cholesky_on_device, current_device
from kfac_repro.kfac.linalg.lapack import potrf_upper, potri_upper

InverseDtype = str  # "float32" or "float64"


def inverse_cost(shape: tuple[int, ...]) -> float:
    """c·d³ for c stacked d × d matrices (c = 1 for one), d for a length-d diagonal."""
    if len(shape) >= 2:
        return float(math.prod(shape[:-2]) * shape[-1] ** 3)
    return float(shape[0] if shape else 1)


class CurvatureDiverged(FloatingPointError):
    """A curvature factor has NaN or infinite entries, or is not positive definite once damped: the statistics
    blew up (the optimizer cannot continue from them)."""


def damped_inverse(factor: np.ndarray, shift: float, dtype: InverseDtype = "float32") -> np.ndarray:
    """(½(F + Fᵀ) + shift·I)⁻¹ of a symmetric PSD factor, by Cholesky in `dtype`, retried in float64 when the float32
    factorisation fails (round-off made the damped factor indefinite); float32 for the TF step.
    CurvatureDiverged if the factor is not finite, or not positive definite even in float64."""
    return _with_float64_retry(factor, shift, dtype, _damped_cholesky_inverse)


def damped_cholesky(factor: np.ndarray, shift: float, dtype: InverseDtype = "float32") -> np.ndarray:
    """The lower Cholesky factor L of ½(F + Fᵀ) + shift·I (L Lᵀ = the damped factor), float32. A third of the work
    of `damped_inverse` (potrf alone, n³/3 against n³): where a damped factor only ever solves one vector per step
    (a bias), two triangular solves with L replace the product with the inverse. Same retry and errors."""
    return _with_float64_retry(factor, shift, dtype, _damped_cholesky_factor)


def _with_float64_retry(factor: np.ndarray, shift: float, dtype: InverseDtype,
                        compute: Callable[[np.ndarray, float], np.ndarray | None]) -> np.ndarray:
    """`compute(factor in dtype, shift)`, retried in float64 when it returns None (not numerically positive
    definite); float32 result."""
    matrix = np.asarray(factor, dtype=dtype)
    if not np.all(np.isfinite(matrix)):
        raise CurvatureDiverged(f"a {matrix.shape[0]}×{matrix.shape[1]} Kronecker factor has NaN or infinite "
                                 "entries: the statistics diverged (try a larger damping or a smaller kl_clip)")
    result = compute(matrix, shift)
    if result is None and matrix.dtype != np.float64:
        result = compute(matrix.astype(np.float64), shift)
    if result is None:
        raise CurvatureDiverged(f"a damped {matrix.shape[0]}×{matrix.shape[1]} factor is not positive definite "
                                 f"(shift {shift:.3g}): try a larger damping")
    return result.astype(np.float32, copy=False)


def diagonal_inverse(diagonal: np.ndarray, shift: float) -> np.ndarray:
    """(diag(d) + shift·I)⁻¹ as the vector 1/(max(d, 0) + shift), float32 (negative round-off clipped)."""
    return (1.0 / (np.maximum(diagonal, 0.0) + shift)).astype(np.float32)


def _damped_cholesky_inverse(matrix: np.ndarray, shift: float) -> np.ndarray | None:
    """(½(M + Mᵀ) + shift·I)⁻¹ from its Cholesky factor (potrf, then potri), or None when it is not numerically
    positive definite."""
    if current_device() is not None:
        return cholesky_inverse_on_device(_damped(matrix, shift))
    factored = _upper_cholesky_in_place(matrix, shift)
    if factored is None:
        return None
    upper, size = factored
    if potri_upper(upper) != 0:
        return None
    result = upper.T[:size, :size]  # C-order view: potri's Fortran upper triangle is its lower triangle
    _mirror_lower_triangle(result)
    return result if np.all(np.isfinite(result)) else None


_TILE = 256
_TILE_STRICT_UPPER = np.triu(np.ones((_TILE, _TILE), dtype=bool), 1)


def _mirror_lower_triangle(matrix: np.ndarray) -> None:
    """Copy a square matrix's strict lower triangle onto its strict upper triangle, in place, by tiles of rows: a
    masked copy within each diagonal tile, a transposed copy right of it (a quarter of the time of np.tril(M) +
    np.tril(M, -1).T)."""
    size = len(matrix)
    for start in range(0, size, _TILE):
        stop = min(start + _TILE, size)
        tile = matrix[start:stop, start:stop]
        np.copyto(tile, tile.T, where=_TILE_STRICT_UPPER[:stop - start, :stop - start])
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T


def _damped_cholesky_factor(matrix: np.ndarray, shift: float) -> np.ndarray | None:
    """Lower L with L Lᵀ = ½(M + Mᵀ) + shift·I (potrf), or None when it is not numerically positive definite."""
    if current_device() is not None:
        return cholesky_on_device(_damped(matrix, shift))
    factored = _upper_cholesky_in_place(matrix, shift)
    if factored is None:
        return None
    upper, size = factored
    lower = np.tril(upper.T[:size, :size])  # Fortran upper factor U (UᵀU = M) read in C order is Uᵀ = L
    return lower if np.all(np.isfinite(lower)) else None


def _damped(matrix: np.ndarray, shift: float) -> np.ndarray:
    """½(M + Mᵀ) + shift·I."""
    return 0.5 * (matrix + matrix.T) + shift * np.eye(len(matrix), dtype=matrix.dtype)


def _upper_cholesky_in_place(matrix: np.ndarray, shift: float) -> tuple[np.ndarray, int] | None:
    """LAPACK potrf of ½(M + Mᵀ) + shift·I: (its Fortran-order upper factor, possibly padded; the size of M), or
    None when it is not numerically positive definite.

    Two things keep this near LAPACK's own cost: the damped matrix is built once, in a buffer that LAPACK reads in
    place (symmetric, so its C-order buffer is its Fortran-order one), and a size that is a multiple of 128 gets
    one identity row and column more (the factor's and the inverse's leading blocks are unchanged), since a
    power-of-two leading dimension makes the blocked factorisation's accesses collide in cache (1024: about 2×
    slower than 1025).
    """
    size = len(matrix)
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
    upper = damped.T  # Fortran order, no copy
    return (upper, size) if potrf_upper(upper) == 0 else None
