"""A clock for the paper's cluster layout (Fig. 1), modelled from component times measured on one machine.

Layout: n gradient workers each compute the gradient of B/n examples; the gradients are all-reduced (ring:
2(n − 1)/n · bytes over a link of the stated bandwidth); the update preconditions and applies them. Statistics
run where the paper ran them for the figure [P §3.2, §6]: *inline* (CIFAR-10: each gradient worker after its
gradient, every `stats_every` updates, on its B/n examples, t_stats(m)·(B/n)/m from the pass measured on m
examples, then its factors all-reduced like the gradient) or on a dedicated *worker* (ImageNet: off the critical
path; its factors travel on its own link). Synchronous inversion runs inline every `inverse_every` updates
(amortised: t_inv / inverse_every per update); asynchronous inversion runs on its own device, off the critical
path, and its duration sets how many updates old the inverses are:

    T_sync  = t_grad(B/n) + t_allreduce(grad) + t_apply + S + t_inv / inverse_every
    T_async = t_grad(B/n) + t_allreduce(grad) + t_apply + S,     staleness = ⌈t_inv / T_async⌉ updates
    S       = (t_stats(B/n) + t_allreduce(factors)) / stats_every  inline, 0 on a dedicated worker

Every number it gives is "modelled from measured components", never a measured wall-clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

LABEL = "modelled from measured components"


@dataclass(frozen=True)
class Components:
    """Measured seconds of one update's parts on one device, and the bytes a gradient worker all-reduces.

    gradient_seconds: examples → seconds of a forward and backward pass on that many examples.
    apply_seconds: preconditioning and applying the all-reduced gradient (0 for SGD's update, which is negligible).
    inversion_seconds: one refresh of every block's inverse (0 for SGD).
    gradient_bytes: the gradient all-reduced per update.
    statistics_seconds: one statistics pass on `statistics_examples` examples (0 for SGD).
    factor_bytes: the Kronecker factors all-reduced per statistics step (0 for SGD).
    """

    gradient_seconds: Mapping[int, float]
    apply_seconds: float
    inversion_seconds: float
    gradient_bytes: int
    statistics_seconds: float = 0.0
    statistics_examples: int = 1
    factor_bytes: int = 0


@dataclass(frozen=True)
class Layout:
    """The modelled cluster: gradient workers, global batch, inversion mode and link bandwidth (bytes/second)."""

    workers: int
    batch_size: int
    inversion: str  # "sync", "async" or "none" (SGD)
    inverse_every: int
    bandwidth: float
    statistics: str = "none"  # "inline" (on the gradient workers), "worker" (a dedicated one) or "none" (SGD)
    stats_every: int = 1


def allreduce_seconds(nbytes: int, workers: int, bandwidth: float) -> float:
    """Ring all-reduce: each worker sends and receives 2(n − 1)/n of the buffer."""
    return 0.0 if workers <= 1 else 2.0 * (workers - 1) / workers * nbytes / bandwidth


def per_update_seconds(components: Components, layout: Layout) -> float:
    """T_sync or T_async of the module docstring (T_async also for SGD, which has no inversion)."""
    shard = layout.batch_size // layout.workers
    if shard not in components.gradient_seconds:
        raise KeyError(f"no measured gradient pass on {shard} examples (B/n = {layout.batch_size}/{layout.workers}); "
                       f"measured: {sorted(components.gradient_seconds)}")
    critical = (components.gradient_seconds[shard] + allreduce_seconds(components.gradient_bytes, layout.workers,
                                                                       layout.bandwidth) + components.apply_seconds)
    if layout.statistics == "inline":
        statistics = components.statistics_seconds * shard / components.statistics_examples
        critical += (statistics + allreduce_seconds(components.factor_bytes, layout.workers, layout.bandwidth)) / \
            layout.stats_every
    if layout.inversion == "sync":
        return critical + components.inversion_seconds / layout.inverse_every
    return critical


def async_staleness(components: Components, layout: Layout) -> int:
    """Updates that pass while the inversion device inverts once: how old asynchronous inverses are."""
    return math.ceil(components.inversion_seconds / per_update_seconds(components, layout))
