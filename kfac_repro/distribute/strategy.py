"""Choosing the tf.distribute strategy: MultiWorkerMirroredStrategy when a cluster is configured (one replica per
process), else MirroredStrategy over `local_replicas` local devices (the first GPUs, or logical CPU devices on a
host without GPUs), else the default strategy. A spec's `distribution.workers` is that replica count: one gradient
worker per replica.

Collectives have no timeout of their own: TensorFlow's coordination service, which MultiWorkerMirroredStrategy
starts, aborts every worker's collectives once a peer stops sending heartbeats (a frozen or vanished host), and a peer
that exits closes its connections. A per-collective timeout would park one of TensorFlow's `collective_ops` threads
per collective for the whole timeout, about 20 per K-FAC step here, until the process cannot start threads."""

from __future__ import annotations

import tensorflow as tf

from kfac_repro.distribute.cluster import cluster_from_environment


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


def local_devices(replicas: int, gpus: int) -> list[str]:
    """The devices of `replicas` replicas in one process on a host with `gpus` GPUs: the first `replicas` GPUs, or,
    without GPUs, as many logical CPU devices. ValueError when the host has GPUs but fewer than `replicas`."""
    if gpus == 0:
        return [f"/device:CPU:{index}" for index in range(replicas)]
    if replicas > gpus:
        raise ValueError(
            f"distribution.workers is {replicas} but this host has {gpus} GPU(s), one per gradient worker: pass "
            f"--set distribution.workers={gpus} to train on this host's GPUs (the per-worker batch grows), or run "
            f"one `kfac-repro worker` process per GPU across hosts (docs/distributed.md)")
    return [f"/device:GPU:{index}" for index in range(replicas)]


def make_strategy(local_replicas: int = 1) -> tf.distribute.Strategy:
    """The strategy for this process (see the module docstring)."""
    if cluster_from_environment() is not None:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    gpus = len(tf.config.list_physical_devices("GPU"))
    devices = local_devices(local_replicas, gpus)
    if local_replicas == 1:
        return tf.distribute.get_strategy()
    if not gpus:
        reserve_cpu_replicas(local_replicas)  # before anything lists logical devices (that freezes them)
    return tf.distribute.MirroredStrategy(devices)
