"""What a run tells whoever watches it: the ``Reporter`` interface. No torch here, so the
console and notebook displays that implement it load without it."""

from __future__ import annotations

from typing import Any


class Reporter:
    """Receives a run's progress; every method does nothing here (a silent run). The CLI's
    ``console.RichReporter`` draws it on stderr."""

    def message(self, text: str) -> None:
        """One line: a choice made, a warning."""

    def start(self, total_steps: int | None, budget: float | None, step: int) -> None:
        """The loop starts at ``step``; it ends after ``total_steps`` (None: no step limit) or
        ``budget`` seconds from the command's start (None: no time limit)."""

    def step(self, step: int, loss: float, tokens_per_second: float, elapsed: float) -> None:
        """The mean training loss (nats/token) of the steps since the last report, the training
        speed, and the seconds since the command started."""

    def evaluated(self, step: int, score: Any) -> None:
        """A validation ``evaluate.Score`` at ``step``."""

    def sampled(self, step: int, val_loss: float | None, text: str) -> None:
        """A sample of the model as it stands at ``step``."""

    def finish(self) -> None:
        """The loop has ended (finished, interrupted or failed)."""
