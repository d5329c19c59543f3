"""The time axis of a figure: updates × each arm's seconds per update, the same cost the report's claims use.

A run's own logged seconds measure whatever else the machine was doing (other runs, tests, a paused process), so
the figures do not plot them when `bench arms` measured the arms: time = updates × the arm's steady-state seconds
per update (bench-arms.csv), or, for a figure about the paper's cluster layout (Fig. 2), × the per-update time of
the cluster clock modelled from measured components. Without a measured cost for every arm, a figure falls back
to the runs' logged wall-clock and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kfac_repro.judging.clocks import Arms, Costs, measured_cost, modelled_cost


@dataclass(frozen=True)
class Clock:
    """Seconds per update of every arm of a figure, and the axis label that says where they come from."""

    seconds: Mapping[str, float]
    label: str


def figure_clock(arms: Arms, costs: Costs, modelled: bool) -> Clock | None:
    """The figure's clock from its bench-arms costs (modelled cluster clock when `modelled`); None unless every
    arm has one."""
    cost = modelled_cost(arms, costs) if modelled else measured_cost(costs)
    seconds = {}
    for arm in arms:
        try:
            value, _ = cost(arm)
        except KeyError:  # the cluster clock lacks a gradient pass measured at this arm's B/n
            return None
        if value is None:
            return None
        seconds[arm] = value
    shared = any(costs[arm].shared for arm in arms)
    source = "modelled cluster s/update" if modelled else "s/update from bench arms"
    return Clock(seconds, f"updates × {source}{' (shared machine)' if shared else ''}")
