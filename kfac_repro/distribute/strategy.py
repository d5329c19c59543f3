"""Choosing the tf.distribute strategy: MultiWorkerMirroredStrategy when a cluster is configured, else
MirroredStrategy over the local GPUs (or `local_replicas` logical CPU devices), else the default strategy.

Collectives time out after $KFAC_REPRO_COLLECTIVE_TIMEOUT seconds (default 600), so that a worker whose host
vanished without closing its connections cannot leave the others waiting forever."""

from __future__ import annotations

import os

import tensorflow as tf

from kfac_repro.distribute.cluster import ClusterSpec, parse_tf_config


def reserve_cpu_replicas(replicas: int) -> None:
    """Expose at least `replicas` logical CPU devices, for MirroredStrategy without GPUs. Call it before anything
    initialises TensorFlow's devices, with the largest count a process will need."""
    if replicas <= 1 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing and len(existing) >= replicas:
        return
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)


def cluster_from_environment() -> ClusterSpec | None:
    """The validated TF_CONFIG of this process, or None when it is not set."""
    text = os.environ.get("TF_CONFIG")
    return parse_tf_config(text) if text else None


def make_strategy(local_replicas: int = 1) -> tf.distribute.Strategy:
    """The strategy for this process (see the module docstring)."""
    if cluster_from_environment() is not None:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=float(os.environ.get("KFAC_REPRO_COLLECTIVE_TIMEOUT", "600")),
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    if local_replicas > 1:
        reserve_cpu_replicas(local_replicas)  # before anything lists logical devices (that freezes them)
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in cpus[:local_replicas]])
    return tf.distribute.get_strategy()
