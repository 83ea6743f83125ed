"""Threads that behave when other busy processes share the cores; no torch here.

OpenMP splits each product across threads and waits for the last of them. When another busy
process (another charrnn included) runs on the same cores, that last thread is often not
running, and every parallel region waits for a scheduler time slice; by default the waiting
threads also spin, taking the CPU from the very thread they wait for. Measured on a 2-core
EPYC beside other work: a training step took 648 ms with two spinning threads, 68 ms with two
sleeping ones and 32 ms with one thread (bench/RESULTS.md, "Threads under contention").

Two remedies, both here:
- ``quiet_waits()`` asks OpenMP runtimes to put idle threads to sleep (``OMP_WAIT_POLICY=PASSIVE``)
  unless the user chose a policy. A runtime reads it once when it loads, so charrnn sets it on
  import, before torch or the kernels load (a program that imported torch first keeps spinning
  threads; the tuner below still helps it).
- ``ThreadTuner`` times the real work with one thread and with all of them, now and then, and
  keeps whichever is faster per unit of work at the moment. The products are split by rows, so
  the numbers computed do not depend on the thread count.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable


def quiet_waits() -> None:
    """Idle OpenMP threads sleep instead of spinning (unless OMP_WAIT_POLICY is already set)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cpu_count() -> int:
    """The threads to use at most: OMP_NUM_THREADS when set, else the CPUs this process may use."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ThreadTuner:
    """Chooses 1 or ``most`` threads for each piece of work by its measured cost per unit (a step,
    a token). Each count is tried first; after that the other count is tried again once every
    ``recheck`` seconds, on a small piece, since the load of the machine changes.

    Use: ``threads, trial = tuner.choose()``, run the work (a small piece when ``trial``), then
    ``tuner.record(threads, units, seconds)``."""

    def __init__(self, most: int, recheck: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.options = (most, 1) if most > 1 else (1,)
        self.recheck, self.clock = recheck, clock
        self.cost: dict[int, float] = {}  # seconds per unit, latest (smoothed for the one in use)
        self.last_trial = -math.inf

    @property
    def best(self) -> int:
        """The count with the lowest known cost (``most`` before anything is known)."""
        return min(self.cost, key=self.cost.__getitem__) if self.cost else self.options[0]

    def choose(self) -> tuple[int, bool]:
        """(threads, trial): the count for the next piece, and whether it is a trial of a count
        that is not the best known (then keep the piece small)."""
        for n in self.options:
            if n not in self.cost:
                return n, True
        if len(self.options) > 1 and self.clock() - self.last_trial >= self.recheck:
            return next(n for n in self.options if n != self.best), True
        return self.best, False

    def record(self, threads: int, units: float, seconds: float, trial: bool = False) -> None:
        """``units`` of work took ``seconds`` with ``threads``; ``trial`` as ``choose`` said."""
        if units <= 0:
            return
        cost = seconds / units
        if trial or threads not in self.cost:
            self.cost[threads] = cost
            self.last_trial = self.clock()
        else:  # the count in use: smoothed, so one slow piece does not flip the choice
            self.cost[threads] = 0.7 * self.cost[threads] + 0.3 * cost
