"""Damped eigendecompositions of Kronecker factors against explicit numpy algebra, and their failure modes."""

import numpy as np
import pytest

from kfac_repro.kfac import inverses
from kfac_repro.kfac.inverses import damped_eigen


def random_factor(size: int, rank: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(rank, size))
    return rows.T @ rows / rank  # PSD, singular when rank < size


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_damped_inverse_equals_the_explicit_inverse(dtype: str) -> None:
    factor = random_factor(6, 3)
    eigen = damped_eigen(factor, shift=0.1, dtype=dtype)
    applied = eigen.vectors @ np.diag(1 / eigen.values) @ eigen.vectors.T
    np.testing.assert_allclose(applied, np.linalg.inv(factor + 0.1 * np.eye(6)), rtol=2e-3, atol=2e-3)


def test_negative_eigenvalues_from_round_off_are_clipped_before_the_shift() -> None:
    factor = np.diag([2.0, 0.0, -1e-6])
    assert sorted(damped_eigen(factor, shift=0.5).values.tolist()) == pytest.approx([0.5, 0.5, 2.5])


def test_a_float32_decomposition_that_fails_is_retried_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    real_eigh = np.linalg.eigh

    def eigh_failing_in_float32(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if matrix.dtype == np.float32:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return real_eigh(matrix)

    monkeypatch.setattr(inverses.np.linalg, "eigh", eigh_failing_in_float32)
    factor = random_factor(5, 5)
    eigen = damped_eigen(factor, shift=0.01, dtype="float32")
    np.testing.assert_allclose(eigen.vectors @ np.diag(eigen.values) @ eigen.vectors.T, factor + 0.01 * np.eye(5),
                               rtol=1e-4, atol=1e-5)


def test_a_non_finite_factor_is_an_error_naming_its_shape() -> None:
    factor = random_factor(4, 4)
    factor[1, 2] = np.nan
    with pytest.raises(FloatingPointError, match="4×4 Kronecker factor has NaN or infinite entries"):
        damped_eigen(factor, shift=0.1)
