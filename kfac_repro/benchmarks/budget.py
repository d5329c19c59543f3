"""A time budget for a sequence of measurements: each runs under an alarm set to the time left, so the budget
holds even inside one long measurement; the one that the alarm interrupts is dropped, those after it are skipped,
and what was measured before is kept (`run_measurements`).

The alarm is SIGALRM (`signal.setitimer`), so measurements run in the main thread; an alarm set before (such as
pytest-timeout's) is held while a measurement runs and re-armed after it with the time it had left.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


class BudgetSpent(BaseException):
    """The budget ran out during a measurement (a BaseException, like KeyboardInterrupt, so that no `except
    Exception` in the code measured, such as AutoGraph's fallback, swallows it)."""


class Budget:
    """`seconds` from its creation (None: no limit), read on `clock`."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.deadline = None if seconds is None else clock() + seconds

    def left(self) -> float:
        """Seconds left (inf without a limit; never below 0)."""
        return float("inf") if self.deadline is None else max(0.0, self.deadline - self.clock())

    @contextmanager
    def enforced(self) -> Iterator[None]:
        """Run the block with an alarm at the deadline that raises BudgetSpent in it; BudgetSpent at once if none
        is left. An error that the block raises after the alarm rang is the alarm's, seen through code that turned it
        into another (TensorFlow's C++ called back into Python: a SystemError), and becomes BudgetSpent."""
        if self.deadline is None:
            yield
            return
        left = self.left()
        if left <= 0:
            raise BudgetSpent

        armed, rang = [True], [False]

        def ring(_signum: int, _frame: FrameType | None) -> None:
            if armed[0]:
                rang[0] = True
                raise BudgetSpent

        previous = signal.signal(signal.SIGALRM, ring)
        started = time.monotonic()
        earlier, _ = signal.setitimer(signal.ITIMER_REAL, left)
        try:
            yield
        except Exception as error:
            if rang[0]:  # raised inside extension code, BudgetSpent can surface as another error (a SystemError)
                raise BudgetSpent from error
            raise
        finally:
            try:  # an alarm that rings here raises before the restoring below, which still runs
                armed[0] = False
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                if earlier > 0:  # someone else's alarm (pytest-timeout's): re-armed with the time it had left
                    signal.setitimer(signal.ITIMER_REAL, max(1e-3, earlier - (time.monotonic() - started)))


@dataclass
class Outcome:
    """What `run_measurements` did: the names measured, the one the budget interrupted, the ones skipped."""

    measured: list[str] = field(default_factory=list)
    interrupted: str | None = None
    skipped: list[str] = field(default_factory=list)


def run_measurements(measurements: Sequence[tuple[str, Callable[[], T]]], budget: Budget,
                     keep: Callable[[str, T], None]) -> Outcome:
    """Each (name, measure) in order under `budget`, `keep(name, result)` after each one that finished (outside
    the alarm, so that keeping is never interrupted); once the budget is spent, the rest are skipped."""
    outcome = Outcome()
    names = [name for name, _ in measurements]
    for index, (name, measure) in enumerate(measurements):
        if budget.left() <= 0:
            outcome.skipped = names[index:]
            break
        try:
            with budget.enforced():
                result = measure()
        except BudgetSpent:
            outcome.interrupted, outcome.skipped = name, names[index + 1:]
            break
        keep(name, result)
        outcome.measured.append(name)
    return outcome
