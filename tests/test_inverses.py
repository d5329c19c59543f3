"""Cholesky inverses of damped Kronecker factors against eigendecomposition inverses and explicit numpy algebra,
and their failure modes."""

import numpy as np
import pytest

from kfac_repro.kfac.linalg import inverses
from kfac_repro.kfac.linalg.inverses import damped_cholesky, damped_inverse


def random_factor(size: int, rank: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(rank, size))
    return rows.T @ rows / rank  # PSD, singular when rank < size


def eigen_inverse(factor: np.ndarray, shift: float) -> np.ndarray:
    """Q diag(1 / (max(e, 0) + shift)) Qᵀ in float64: the eigenbasis path's inverse."""
    values, vectors = np.linalg.eigh(factor.astype(np.float64))
    return vectors @ np.diag(1.0 / (np.maximum(values, 0.0) + shift)) @ vectors.T


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("size", "rank", "shift"), [(6, 3, 0.1), (40, 10, 1e-2), (200, 300, 1e-3),
                                                     (256, 100, 1e-2), (384, 500, 1e-3)])  # padded by one
def test_cholesky_inverse_equals_the_eigendecomposition_inverse(dtype: str, size: int, rank: int,
                                                                 shift: float) -> None:
    factor = random_factor(size, rank)
    got = damped_inverse(factor, shift=shift, dtype=dtype)
    expected = eigen_inverse(factor, shift)
    assert got.dtype == np.float32
    tolerance = 1e-5 if dtype == "float64" else 2e-3
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
    np.testing.assert_allclose(got, np.linalg.inv(factor + shift * np.eye(size)), rtol=tolerance,
                               atol=tolerance * np.abs(expected).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("size", "rank", "shift"), [(6, 3, 0.1), (200, 300, 1e-3), (256, 100, 1e-2)])  # 256: padded
def test_cholesky_factor_is_lower_triangular_and_equals_numpy_cholesky(dtype: str, size: int, rank: int,
                                                                      shift: float) -> None:
    factor = random_factor(size, rank, seed=3)
    damped = factor + shift * np.eye(size)
    got = damped_cholesky(factor, shift=shift, dtype=dtype)
    assert got.dtype == np.float32 and got.shape == (size, size)
    np.testing.assert_array_equal(got, np.tril(got))
    expected = np.linalg.cholesky(damped)
    tolerance = 1e-5 if dtype == "float64" else 2e-3
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
    vector = np.random.default_rng(4).normal(size=size)  # what the bias block does with it: solve L Lᵀ x = v
    solved = np.linalg.solve(got.T.astype(np.float64), np.linalg.solve(got.astype(np.float64), vector))
    np.testing.assert_allclose(solved, np.linalg.solve(damped, vector), rtol=10 * tolerance,
                               atol=10 * tolerance * np.abs(solved).max())


def test_cholesky_factor_retries_in_float64_and_refuses_an_indefinite_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    real = inverses._damped_cholesky_factor
    dtypes = []

    def failing_in_float32(matrix: np.ndarray, shift: float) -> np.ndarray | None:
        dtypes.append(matrix.dtype)
        return None if matrix.dtype == np.float32 else real(matrix, shift)

    monkeypatch.setattr(inverses, "_damped_cholesky_factor", failing_in_float32)
    factor = random_factor(5, 5)
    np.testing.assert_allclose(damped_cholesky(factor, 0.01), np.linalg.cholesky(factor + 0.01 * np.eye(5)),
                               rtol=1e-5, atol=1e-6)
    assert dtypes == [np.float32, np.float64]
    monkeypatch.undo()
    with pytest.raises(FloatingPointError, match="damped 3×3 factor is not positive definite"):
        damped_cholesky(np.diag([2.0, 0.0, -1.0]), shift=0.5)


def test_an_asymmetric_round_off_is_symmetrised_before_inverting() -> None:
    factor = random_factor(5, 5)
    skewed = factor + np.triu(np.full((5, 5), 1e-3), 1)
    np.testing.assert_allclose(damped_inverse(skewed, 0.1, "float64"),
                               np.linalg.inv(0.5 * (skewed + skewed.T) + 0.1 * np.eye(5)), rtol=1e-6)


def test_a_float32_factorisation_that_fails_is_retried_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    real = inverses._damped_cholesky_inverse
    dtypes = []

    def failing_in_float32(matrix: np.ndarray, shift: float) -> np.ndarray | None:
        dtypes.append(matrix.dtype)
        return None if matrix.dtype == np.float32 else real(matrix, shift)

    monkeypatch.setattr(inverses, "_damped_cholesky_inverse", failing_in_float32)
    factor = random_factor(5, 5)
    got = damped_inverse(factor, shift=0.01, dtype="float32")
    assert dtypes == [np.float32, np.float64]
    np.testing.assert_allclose(got, eigen_inverse(factor, 0.01), rtol=1e-5, atol=1e-5)


def test_an_indefinite_damped_factor_fails_in_float32_then_float64_and_is_an_error() -> None:
    with pytest.raises(FloatingPointError, match="damped 3×3 factor is not positive definite"):
        damped_inverse(np.diag([2.0, 0.0, -1.0]), shift=0.5)


def test_a_non_finite_factor_is_an_error_naming_its_shape() -> None:
    factor = random_factor(4, 4)
    factor[1, 2] = np.nan
    with pytest.raises(FloatingPointError, match="4×4 Kronecker factor has NaN or infinite entries"):
        damped_inverse(factor, shift=0.1)


@pytest.mark.parametrize(("given", "expected"), [(None, "4"), ("10", "10")])
def test_scipy_openblas_threads_sleep_at_once_unless_the_environment_says_otherwise(given: str | None,
                                                                                   expected: str) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if given is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = given
    probe = ("import os, sys; import kfac_repro.kfac.linalg.inverses; assert 'scipy.linalg' in sys.modules; "
             "print(os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("size", [1, 5, 256, 257, 600])  # within one tile, exactly one, across three
def test_the_lower_triangle_is_mirrored_onto_the_upper_in_place(size: int) -> None:
    matrix = np.random.default_rng(size).normal(size=(size + 3, size + 3))[:size, :size]  # a strided view, too
    expected = np.tril(matrix) + np.tril(matrix, -1).T
    inverses._mirror_lower_triangle(matrix)
    np.testing.assert_array_equal(matrix, expected)
