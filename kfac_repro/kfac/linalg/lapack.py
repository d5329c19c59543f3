"""LAPACK's Cholesky factorisation and inverse (potrf, potri), called without holding Python's GIL.

scipy.linalg.lapack's wrappers keep the GIL for the whole call: two threads each factorising a 1500 × 1500 matrix
take twice as long as one, so inversions could neither run side by side nor leave the training loop's Python thread
free while an asynchronous refresh runs. scipy exports the same routines of its own OpenBLAS as raw function
pointers for Cython (`scipy.linalg.cython_lapack`); ctypes calls them and releases the GIL for the call, as
numba's `get_cython_function_address` does.

Both routines work in place on the upper triangle of a square, Fortran-ordered float32 or float64 matrix (a
symmetric C-ordered matrix's transpose is one, without a copy) and return LAPACK's `info` (0: success; k > 0: the
leading minor of order k is not positive definite, potrf; or the factor is singular, potri).

SciPy's OpenBLAS is loaded by the import below; unless the environment says otherwise, its idle worker threads are
told to sleep at once (OPENBLAS_THREAD_TIMEOUT=4, 2⁴ cycles) instead of spinning for about 0.1 s after each call,
which took a core from the TensorFlow step that follows a synchronous refresh (measured on the MLP of `bench step
--model mlp`: that step 52 ms instead of 36). It has no effect where SciPy's LAPACK was loaded before this module.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np
from scipy.linalg import cython_lapack

_INT_POINTER = ctypes.POINTER(ctypes.c_int)
_SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_char_p, _INT_POINTER, ctypes.c_void_p, _INT_POINTER, _INT_POINTER)
_PREFIX = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}


def potrf_upper(matrix: np.ndarray) -> int:
    """U with UᵀU = M into the upper triangle of M (the strict lower triangle is left as it was)."""
    return _call("potrf", matrix)


def potri_upper(matrix: np.ndarray) -> int:
    """(UᵀU)⁻¹ into the upper triangle, from potrf's U there."""
    return _call("potri", matrix)


def _call(routine: str, matrix: np.ndarray) -> int:
    if matrix.dtype not in _PREFIX or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{routine}: expected a square float32 or float64 matrix, found {matrix.dtype} "
                         f"{matrix.shape}")
    if not matrix.flags.f_contiguous or not matrix.flags.writeable:
        raise ValueError(f"{routine}: expected a writeable Fortran-ordered matrix")
    size, info = ctypes.c_int(matrix.shape[0]), ctypes.c_int(0)
    leading = ctypes.c_int(max(1, matrix.shape[0]))
    _routine(_PREFIX[matrix.dtype] + routine)(b"U", ctypes.byref(size), matrix.ctypes.data, ctypes.byref(leading),
                                              ctypes.byref(info))
    return info.value


@functools.cache
def _routine(name: str) -> Callable[..., None]:
    """The LAPACK routine `name` (e.g. "spotrf") of scipy's library, as a ctypes function (GIL released)."""
    capsule = cython_lapack.__pyx_capi__[name]
    get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
    get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))
    return _SIGNATURE(get_pointer(capsule, get_name(capsule)))
