"""The time budget and the learning-rate schedule.

A budget covers the whole command, from the process start: the trainer stops taking steps
when the time left is what the final evaluation and save need (estimated, then measured), so
the command ends on time; the schedule's progress then follows the clock rather than steps.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque

from charrnn.errors import UsageError

BUDGET_SCALE = "CHARRNN_BUDGET_SCALE"


def budget_scale() -> float:
    """What every time budget is multiplied by: the environment variable CHARRNN_BUDGET_SCALE, 1
    when unset. It runs a notebook or script written for real budgets in seconds, unchanged (CI
    executes docs/tutorial.ipynb this way); the CLI and the library both obey it. Raises
    UsageError unless it is a number above 0."""
    raw = os.environ.get(BUDGET_SCALE, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not 0 < scale < math.inf:
        raise UsageError(f"{BUDGET_SCALE} must be a number above 0 (0.1 makes every time budget a tenth), not {raw!r}")
    return scale


def lr_at(step: int, progress: float, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then linear decay to ``peak * min_ratio`` at progress 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (1 - (1 - min_ratio) * min(max(progress, 0.0), 1.0))


DEFAULT_WARMUP = 50


def warmup_steps(warmup: int | None, max_steps: int | None) -> int:
    """The warmup a run gets: ``warmup`` when given; else DEFAULT_WARMUP steps, but at most a
    fifth of a step limit, so a short run (--max-steps 50) is not all warmup."""
    if warmup is not None:
        return warmup
    return min(DEFAULT_WARMUP, max(1, max_steps // 5)) if max_steps else DEFAULT_WARMUP


class Budget:
    """When to stop and where the schedule stands. ``deadline`` is a time.monotonic() value (None:
    no time limit); ``max_steps`` a step count (None: no step limit); ``elapsed_before`` the
    seconds a resumed run already trained."""

    def __init__(self, deadline: float | None, max_steps: int | None, elapsed_before: float, save_guess: float):
        self.deadline, self.max_steps, self.elapsed_before = deadline, max_steps, elapsed_before
        self.eval_seconds: float | None = None
        self.eval_chunk_seconds = 0.0
        """One (B, T) pass of evaluation: an evaluation cut short by the deadline takes at least two."""
        self.save_seconds = save_guess
        self.step_times: deque[float] = deque(maxlen=50)
        self.loop_start = time.monotonic()

    def median_step(self) -> float:
        return sorted(self.step_times)[len(self.step_times) // 2] if self.step_times else 0.05

    def reserve(self, val_tokens: int, tokens_per_step: int) -> float:
        """Seconds to keep for the final evaluation and save."""
        ev = self.eval_seconds
        if ev is None:
            # Before the first evaluation, guess: a forward pass costs about a third of a training step.
            ev = val_tokens / tokens_per_step * self.median_step() / 3 + 0.3
        # The margin covers the interpreter's exit, which unloading torch makes slow.
        return 1.15 * ev + 1.5 * self.save_seconds + 0.6

    def can_take_one_step(self) -> bool:
        """Whether one more step still fits before the shortest final evaluation and the save."""
        need = self.median_step() + 2 * self.eval_chunk_seconds + 1.5 * self.save_seconds + 0.6
        return self.deadline is None or time.monotonic() + need < self.deadline

    def eval_deadline(self) -> float | None:
        """When an evaluation must stop to leave time for the save after it."""
        return None if self.deadline is None else self.deadline - 1.5 * self.save_seconds - 0.6

    def check(self, step: int, val_tokens: int, tokens_per_step: int) -> tuple[bool, float]:
        """(out of time, schedule progress in [0, 1]) before taking step ``step``."""
        progress = step / self.max_steps if self.max_steps else 0.0
        if self.deadline is None:
            return False, progress
        now = time.monotonic()
        reserve = self.reserve(val_tokens, tokens_per_step)
        left = self.deadline - self.loop_start - reserve
        progress = max(progress, (self.elapsed_before + now - self.loop_start) / max(self.elapsed_before + left, 1e-6))
        return now + reserve >= self.deadline, progress

    def auto_eval_every(self, step: int) -> int:
        """About four evaluations over what is left of the run, from the steps timed so far."""
        expected = (
            (self.deadline - time.monotonic()) / self.median_step() if self.deadline is not None else float("inf")
        )
        if self.max_steps is not None:
            expected = min(expected, self.max_steps - step)
        return max(1, int(expected / 4))
