"""LAPACK's potrf and potri called through scipy's Cython function pointers: the same results as scipy's own
wrappers and numpy, LAPACK's info on failure, refused layouts, and the GIL released during the call."""

import threading
import time

import numpy as np
import pytest
from scipy.linalg import lapack as scipy_lapack
from threadpoolctl import threadpool_limits

from kfac_repro.kfac.linalg.lapack import potrf_upper, potri_upper


def spd(size: int, dtype: type, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(2 * size, size))
    return np.asfortranarray((rows.T @ rows / (2 * size)).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 7, 300])
def test_potrf_and_potri_equal_scipy_and_numpy(dtype: type, size: int) -> None:
    matrix = spd(size, dtype)
    work = matrix.copy(order="F")
    assert potrf_upper(work) == 0
    expected, info = scipy_lapack.get_lapack_funcs("potrf", (matrix,))(matrix, lower=False)
    assert info == 0
    np.testing.assert_array_equal(np.triu(work), np.triu(expected))
    np.testing.assert_array_equal(np.tril(work, -1), np.tril(matrix, -1))  # the other triangle is left alone
    assert potri_upper(work) == 0
    inverse = np.triu(work) + np.triu(work, 1).T
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(inverse @ matrix.astype(np.float64), np.eye(size), atol=tolerance * size)


def test_an_indefinite_matrix_returns_the_order_of_its_failing_minor() -> None:
    assert potrf_upper(np.asfortranarray(np.diag([2.0, 1.0, -1.0, 3.0]))) == 3


def _read_only(matrix: np.ndarray) -> np.ndarray:
    matrix.flags.writeable = False
    return matrix


@pytest.mark.parametrize(("matrix", "message"), [
    (np.eye(3, dtype=np.int64, order="F"), "float32 or float64"),
    (np.ones((3, 4), order="F"), "square"),
    (np.eye(3, order="C"), "writeable Fortran-ordered"),
    (_read_only(np.eye(3, order="F")), "writeable Fortran-ordered"),
], ids=["integer", "not-square", "C-ordered", "read-only"])
def test_a_matrix_lapack_cannot_work_on_in_place_is_refused(matrix: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        potrf_upper(matrix)


def test_the_gil_is_released_while_lapack_runs() -> None:
    """A factorisation of about 0.15 s in another thread: this thread keeps running Python meanwhile (where the
    GIL was held, the longest pause between its steps would be the whole call)."""
    matrix = spd(2000, np.float64)
    span: list[float] = []

    def factorise() -> None:
        span.append(time.perf_counter())
        assert potrf_upper(matrix) == 0
        span.append(time.perf_counter())

    with threadpool_limits(limits=1, user_api="blas"):
        worker = threading.Thread(target=factorise)
        ticks = [time.perf_counter()]
        worker.start()
        while worker.is_alive():
            ticks.append(time.perf_counter())
        worker.join()
    start, stop = span
    inside = [tick for tick in ticks if start <= tick <= stop]
    pauses = np.diff([start, *inside, stop])
    assert pauses.max() < 0.3 * (stop - start), (pauses.max(), stop - start)
