"""Threads that behave when other busy processes share the cores; no torch here.

OpenMP splits each product across threads and waits for the last of them. When another busy
process (another charrnn included) runs on the same cores, that last thread is often not
running, and every parallel region waits for a scheduler time slice; by default the waiting
threads also spin, taking the CPU from the very thread they wait for. Measured on a 2-core
EPYC beside other work: a training step took 648 ms with two spinning threads, 68 ms with two
sleeping ones and 32 ms with one thread (bench/RESULTS.md, "Threads under contention").

Two remedies, both here:
- ``quiet_waits()`` asks OpenMP runtimes to put idle threads to sleep after a short spin
  (``OMP_WAIT_POLICY=PASSIVE`` with ``GOMP_SPINCOUNT=1000``) unless the user chose a policy. Sleeping
  at once (PASSIVE alone) costs a futex wake-up at each of a step's hundreds of small parallel
  regions: on a quiet EPYC a 1x320 bf16 step took 35 ms that way, 12.7 ms with the short spin (as
  fast as torch's default spinning) and 19 ms with one thread (bench/step_threads.py). A runtime
  reads these once when it loads, so charrnn sets them on import, before torch or the kernels
  load (a program that imported torch first keeps torch's defaults; the tuner below still helps it).
- ``ThreadTuner`` times the real work with one thread and with all of them, now and then, and
  keeps whichever is faster per unit of work at the moment. The products are split by rows, so
  the numbers computed do not depend on the thread count.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SPIN_COUNT = 1000
"""Busy-wait iterations before an idle GNU OpenMP thread sleeps: microseconds, enough to bridge
the gaps between the parallel regions of one training step, too short to take a core from
another process for long."""


def quiet_waits() -> None:
    """Idle OpenMP threads sleep after a short spin (unless OMP_WAIT_POLICY is already set)."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))


def cpu_count() -> int:
    """The threads to use at most: OMP_NUM_THREADS when set, else the CPUs this process may use."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ThreadTuner:
    """Chooses 1 or ``most`` threads for each piece of work by its measured cost per unit (a step,
    a token). Each count is tried first (the very first piece, which pays for warm-ups, is not
    counted); after that the other count is tried again ``recheck`` seconds later, on a small
    piece where the work can be split, since the load of the machine changes. A trial that loses
    doubles the wait before the next one, up to ``max_recheck``, so a count that keeps losing costs
    little.

    Use: ``with tuner.timed(units): work()`` (``apply``, e.g. ``torch.set_num_threads``, sets the
    count), or ``threads, trial = tuner.choose()``, the work, ``tuner.record(threads, units,
    seconds, trial)``."""

    def __init__(
        self,
        most: int,
        recheck: float = 2.0,
        max_recheck: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        apply: Callable[[int], None] | None = None,
    ):
        self.options = (most, 1) if most > 1 else (1,)
        self.recheck, self.max_recheck, self.clock, self.apply = recheck, max_recheck, clock, apply
        self.cost: dict[int, float] = {}  # seconds per unit, latest (smoothed for the one in use)
        self.wait = recheck
        self.last_trial = -math.inf
        self.warm = False

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
        if len(self.options) > 1 and self.clock() - self.last_trial >= self.wait:
            return next(n for n in self.options if n != self.best), True
        return self.best, False

    def record(self, threads: int, units: float, seconds: float, trial: bool = False) -> None:
        """``units`` of work took ``seconds`` with ``threads``; ``trial`` as ``choose`` said."""
        if not self.warm or units <= 0:
            self.warm = units > 0
            return
        cost = seconds / units
        if trial or threads not in self.cost:
            before = self.best if self.cost else None
            self.cost[threads] = cost
            self.last_trial = self.clock()
            if before is not None and before != threads:
                self.wait = self.recheck if self.best == threads else min(2 * self.wait, self.max_recheck)
        else:  # the count in use: smoothed, so one slow piece does not flip the choice
            self.cost[threads] = 0.7 * self.cost[threads] + 0.3 * cost

    @contextmanager
    def timed(self, units: float = 1) -> Iterator[int]:
        """Run a piece of ``units`` with the chosen count (set through ``apply``) and time it."""
        threads, trial = self.choose()
        if self.apply is not None:
            self.apply(threads)
        t0 = time.perf_counter()
        yield threads
        self.record(threads, units, time.perf_counter() - t0, trial)
