"""Where the inversion runs: tf.linalg on a device gives the preconditioner numpy gives; the LAPACK thread limit
applies; TensorFlow's pools are sized around the inversion's cores (in a fresh process)."""

import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.kfac import KFAC, KFACConfig
from kfac_repro.kfac.inversion.inverses import damped_inverse
from kfac_repro.kfac.inversion.resources import on_device


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


def test_inversion_threads_limit_lapack_and_leave_tensorflow_the_other_cores() -> None:
    code = """
import os
import tensorflow as tf
from threadpoolctl import threadpool_info
from kfac_repro.kfac.inversion.resources import limit_lapack_threads, reserve_inversion_cores
reserve_inversion_cores(1)
print(tf.config.threading.get_intra_op_parallelism_threads(), os.cpu_count())
limit_lapack_threads(1)
print(sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}))
"""
    lines = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                           timeout=120).stdout.split("\n")
    tf_threads, cores = map(int, lines[0].split())
    assert tf_threads == max(1, cores - 1)
    assert lines[1] == "[1]"
