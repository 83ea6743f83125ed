"""The thread tuner: it keeps the count that its own measurements say is faster, and looks again
now and then. Timings here are given, not measured."""

from __future__ import annotations

import os
import subprocess
import sys

from charrnn.threads import ThreadTuner


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(tuner: ThreadTuner, clock: Clock, cost: dict[int, float], pieces: int) -> list[tuple[int, bool]]:
    """Feed the tuner ``pieces`` pieces of 100 units, each costing ``cost[threads]`` per unit."""
    seen = []
    for _ in range(pieces):
        threads, trial = tuner.choose()
        units = 10 if trial else 100
        clock.now += units * cost[threads]
        tuner.record(threads, units, units * cost[threads], trial)
        seen.append((threads, trial))
    return seen


def test_tries_both_then_keeps_the_faster():
    clock = Clock()
    tuner = ThreadTuner(4, recheck=1.0, clock=clock)
    seen = run(tuner, clock, {4: 0.001, 1: 0.003}, 5)
    assert seen[:2] == [(4, True), (1, True)]
    assert seen[2:] == [(4, False)] * 3
    assert tuner.best == 4


def test_follows_a_change_of_load_within_a_recheck():
    clock = Clock()
    tuner = ThreadTuner(2, recheck=1.0, clock=clock)
    run(tuner, clock, {2: 0.001, 1: 0.0015}, 10)
    assert tuner.best == 2
    # Another process takes a core: two threads now wait on each other, one thread is unhurt.
    seen = run(tuner, clock, {2: 0.03, 1: 0.0015}, 30)
    assert tuner.best == 1
    assert all(t == 1 or trial for t, trial in seen[2:])  # one slow piece flips the smoothed cost
    # Trials of the slow count stay rare: at most one per second of work, on small pieces.
    trials = [s for s in seen if s == (2, True)]
    assert len(trials) <= clock.now / 1.0 + 1
    # The load goes away: two threads win again.
    run(tuner, clock, {2: 0.001, 1: 0.0015}, 40)
    assert tuner.best == 2


def test_one_cpu_never_tries_anything():
    tuner = ThreadTuner(1)
    assert tuner.choose() == (1, True)
    tuner.record(1, 10, 0.01, True)
    assert tuner.choose() == (1, False)


def test_importing_charrnn_makes_idle_openmp_threads_sleep_unless_told_otherwise():
    code = "import os, charrnn; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         check=True).stdout
    assert out.strip() == "ACTIVE"
