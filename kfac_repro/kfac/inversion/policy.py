"""When inverses are refreshed: the `RefreshPolicy` protocol and its policies (paper §3.1), for both front ends.

A policy only decides; `inversion.refresh.InverseRefresh` carries out its decisions at every step boundary, in the
host loop and (through `keras.refresh`) in `fit`. At the boundary before step k the engine asks, in this order:
`start(k, last)` (nothing pending: snapshot the factors now and start inverting them; `last` is the step of the
latest snapshot), `due(k, s, all_ready)` (install the pending inversion of the snapshot of step s now;
`all_ready`: every worker reported its share finished during step k − 1), and after an install `start` again.
A new policy is a class here with `background`, `start` and `due`, and a line in `policy_for`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from kfac_repro.kfac.config import KFACConfig


class RefreshPolicy(Protocol):
    """Decides when a snapshot of the factors is taken and when its inverses are installed."""

    background: ClassVar[bool]  # inversions run in a background thread (else at the boundary that starts them)

    def start(self, step: int, last: int) -> bool:
        """Snapshot the factors at the boundary before `step` and start inverting them (nothing is pending)."""
        ...

    def due(self, step: int, snapshot_step: int, all_ready: bool) -> bool:
        """Install, before `step`, the pending inverses of the snapshot of `snapshot_step`."""
        ...


@dataclass(frozen=True)
class Synchronous:
    """The current factors' inverses, computed and installed before every step that is a multiple of `every`."""

    every: int
    background: ClassVar[bool] = False

    def start(self, step: int, last: int) -> bool:
        return step % self.every == 0 and step != last

    def due(self, step: int, snapshot_step: int, all_ready: bool) -> bool:
        return True


@dataclass(frozen=True)
class FixedLag:
    """Asynchronous, pinned: the snapshot of step s is installed before step s + `lag` (waited for if late), and
    the next snapshot is taken at that boundary: reproducible, the schedule does not depend on timing."""

    lag: int
    background: ClassVar[bool] = True

    def start(self, step: int, last: int) -> bool:
        return True

    def due(self, step: int, snapshot_step: int, all_ready: bool) -> bool:
        return step >= snapshot_step + self.lag


@dataclass(frozen=True)
class FreeRunning:
    """Asynchronous, free-running: installed before the step after the one in which every worker reported its
    share finished (the flag travels in the step's existing all-reduce), then the next snapshot is taken."""

    background: ClassVar[bool] = True

    def start(self, step: int, last: int) -> bool:
        return True

    def due(self, step: int, snapshot_step: int, all_ready: bool) -> bool:
        return all_ready


def policy_for(config: KFACConfig) -> RefreshPolicy:
    """The policy `config` names: sync every `inverse_every` steps, or async pinned at `async_lag` or free."""
    if config.inversion == "sync":
        return Synchronous(config.inverse_every)
    return FreeRunning() if config.async_lag is None else FixedLag(config.async_lag)
