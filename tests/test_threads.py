"""The thread tuner: it keeps the count that its own measurements say is faster, and looks again
now and then. Timings here are given, not measured."""

from __future__ import annotations

import os
import subprocess
import sys

from charrnn.runtime.threads import ThreadTuner


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
    seen = run(tuner, clock, {4: 0.001, 1: 0.003}, 6)
    # The first piece pays for warm-ups and is not counted.
    assert seen[:3] == [(4, True), (4, True), (1, True)]
    assert seen[3:] == [(4, False)] * 3
    assert tuner.best == 4


def test_follows_a_change_of_load():
    clock = Clock()
    tuner = ThreadTuner(2, recheck=1.0, max_recheck=8.0, clock=clock)
    run(tuner, clock, {2: 0.001, 1: 0.0015}, 10)
    assert tuner.best == 2
    # Another process takes a core: two threads now wait on each other, one thread is unhurt.
    start = clock.now
    seen = run(tuner, clock, {2: 0.03, 1: 0.0015}, 400)
    assert tuner.best == 1
    assert all(t == 1 or trial for t, trial in seen[2:])  # one slow piece flips the smoothed cost
    # Trials of the losing count get rarer: the wait doubles up to max_recheck.
    trials = sum(1 for s in seen if s == (2, True))
    assert 2 <= trials <= 3 + (clock.now - start) / 8.0
    # The load goes away: two threads win again at the next trial.
    run(tuner, clock, {2: 0.001, 1: 0.0015}, 200)
    assert tuner.best == 2


def test_timed_sets_the_count_and_measures_the_work():
    clock, applied = Clock(), []
    tuner = ThreadTuner(2, clock=clock, apply=applied.append)
    for _ in range(4):
        with tuner.timed(units=3) as threads:
            assert applied[-1] == threads
    assert applied[:3] == [2, 2, 1] and set(tuner.cost) == {1, 2}


def test_one_cpu_never_tries_anything():
    tuner = ThreadTuner(1)
    for _ in range(3):
        threads, _ = tuner.choose()
        assert threads == 1
        tuner.record(1, 10, 0.01)
    assert tuner.choose() == (1, False)


def test_importing_charrnn_makes_idle_openmp_threads_sleep_after_a_short_spin_unless_told_otherwise():
    code = "import os, charrnn; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["PASSIVE", "1000"]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        check=True,
    ).stdout
    assert out.split() == ["ACTIVE", "None"]
