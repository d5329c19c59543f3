"""Where the inversion runs: tf.linalg on a device gives the preconditioner numpy gives; small parts run side by side
on one BLAS thread each, large ones alone on all; TensorFlow's pools are sized around the inversion's cores (in a
fresh process)."""

import functools
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from threadpoolctl import threadpool_info

from kfac_repro.kfac import KFAC, KFACConfig
from kfac_repro.kfac.inversion.resources import ALONE_FROM_COST, host_threads, run_parts
from kfac_repro.kfac.linalg.device import on_device
from kfac_repro.kfac.linalg.inverses import damped_inverse


def test_device_inverse_matches_lapack() -> None:
    rng = np.random.default_rng(0)
    root = rng.normal(size=(40, 80))
    damped = root @ root.T / 80 + 0.1 * np.eye(40)
    host = damped_inverse(damped, 0.0, "float64")
    with on_device("/CPU:0"):
        device = damped_inverse(damped, 0.0, "float64")
    np.testing.assert_allclose(device, host, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(device @ damped, np.eye(40), atol=1e-5)


def test_accelerator_inversion_gives_the_host_preconditioner() -> None:
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(64, 12)).astype(np.float32))
    grads = None
    results = []
    for device in ("host", "accelerator"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(4)])
        optimizer = KFAC(model, KFACConfig(damping=0.1, inversion_device=device))
        optimizer.accumulate_statistics(x)
        optimizer.refresh_inverses()
        grads = grads or [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in model.trainable_variables]
        results.append([g.numpy() for g in optimizer.precondition(grads)])
    for host, accelerator in zip(*results, strict=True):
        np.testing.assert_allclose(accelerator, host, rtol=1e-4, atol=1e-6)


def test_inversion_cores_leave_tensorflow_the_other_cores() -> None:
    code = """
import os
import tensorflow as tf
from kfac_repro.kfac.inversion.resources import reserve_inversion_cores
reserve_inversion_cores(1)
print(tf.config.threading.get_intra_op_parallelism_threads(), os.cpu_count())
"""
    line = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          timeout=120).stdout.split("\n")[0]
    tf_threads, cores = map(int, line.split())
    assert tf_threads == max(1, cores - 1)


def _blas_threads() -> int:
    counts = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    assert len(counts) == 1
    return counts.pop()


def test_small_parts_run_side_by_side_on_one_blas_thread_each_and_large_ones_alone_on_all() -> None:
    together = threading.Barrier(2, timeout=30)  # passes only if two parts run at the same time
    seen: list[tuple[str, int, int]] = []  # (part, thread, BLAS threads)
    before = _blas_threads()

    def part(name: str, meet: bool) -> Callable[[], str]:
        def run() -> str:
            if meet:
                together.wait()
            seen.append((name, threading.get_ident(), _blas_threads()))
            return name
        return run

    parts = [(1.0, part("small-a", True)), (ALONE_FROM_COST, part("large", False)), (2.0, part("small-b", True)),
             (0.5, part("small-c", False))]
    assert run_parts(parts, threads=2) == ["small-a", "large", "small-b", "small-c"]
    blas = {name: threads for name, _, threads in seen}
    assert seen[0][0] == "large" and seen[0][1] == threading.get_ident() and blas["large"] == min(2, before)
    assert blas["small-a"] == blas["small-b"] == blas["small-c"] == 1
    assert threading.get_ident() not in {ident for name, ident, _ in seen if name != "large"}
    assert _blas_threads() == before  # the limit is lifted afterwards


def test_one_thread_runs_the_parts_in_order_of_cost_in_the_calling_thread() -> None:
    order: list[float] = []
    parts = [(cost, lambda cost=cost: order.append(cost) or threading.get_ident()) for cost in (1.0, 3.0, 2.0)]
    assert run_parts(parts, threads=1) == [threading.get_ident()] * 3
    assert order == [3.0, 2.0, 1.0]


def test_a_failing_part_fails_the_refresh_without_starting_the_parts_left() -> None:
    def fails() -> None:
        raise FloatingPointError("a damped 3×3 factor is not positive definite")

    started: list[int] = []

    def slow(index: int) -> int:
        started.append(index)
        time.sleep(0.05)
        return index

    parts = [(100.0, fails), *((1.0, functools.partial(slow, index)) for index in range(20))]
    with pytest.raises(FloatingPointError, match="not positive definite"):
        run_parts(parts, threads=2)
    assert len(started) < 20  # the parts not yet started when it failed were dropped


def test_a_refresh_computes_on_inversion_threads_cores_else_on_all() -> None:
    import os

    assert host_threads(3) == 3
    assert host_threads(None) == (os.cpu_count() or 1)
