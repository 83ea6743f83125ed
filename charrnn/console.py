"""Everything a person sees on stderr: messages, errors, and the training progress bar."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from charrnn.training.report import Reporter

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


SAMPLE_LINES = 8


class _ProgressWithSample(Progress):
    """The bar, and under it the latest sample, replaced at each evaluation."""

    sample: Panel | None = None

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.sample is not None:
            yield self.sample


class RichReporter(Reporter):
    """A progress bar (step, loss, val loss, tokens/s, ETA); evaluations also print as log lines."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None
        self.val = "-"
        self.by_time = False

    def message(self, text: str) -> None:
        if not self.quiet:
            stderr.print(text, markup=False)

    def start(self, total_steps: int | None, budget: float | None, step: int) -> None:
        if self.quiet:
            return
        self.by_time = budget is not None and (total_steps is None)
        self.progress = _ProgressWithSample(
            TextColumn("[bold]step {task.fields[step]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        total = budget if self.by_time else total_steps
        self.task = self.progress.add_task("train", total=total, step=step, loss="-", val="-", tps="-")
        self.progress.start()

    def step(self, step: int, loss: float, tokens_per_second: float, elapsed: float) -> None:
        if self.progress is None:
            return
        done = min(elapsed, self.progress.tasks[0].total) if self.by_time else step
        self.progress.update(self.task, completed=done, step=step, loss=f"{loss:.4f}", tps=f"{tokens_per_second:,.0f}")

    def evaluated(self, step: int, score) -> None:
        if self.progress is None:
            return
        self.progress.update(self.task, val=f"{score.loss:.4f}")
        self.progress.console.print(
            f"step {step}: val loss {score.loss:.4f} nats/token, {score.bits_per_char:.4f} bits/char, "
            f"perplexity {score.perplexity:.2f} (on {score.tokens:,} tokens)",
            markup=False,
        )

    def sampled(self, step: int, val_loss: float | None, text: str) -> None:
        """Under the bar on a terminal (the last SAMPLE_LINES lines); elsewhere as a log block."""
        if self.quiet:
            return
        loss = "" if val_loss is None else f", val loss {val_loss:.4f}"
        title = f"sample at step {step}{loss}"
        if self.progress is not None and stderr.is_terminal:
            lines = text.rstrip("\n").split("\n")[-SAMPLE_LINES:]
            self.progress.sample = Panel(
                Text("\n".join(lines), no_wrap=False), title=title, title_align="left", expand=True
            )
            self.progress.refresh()
        else:
            stderr.print(f"{title}:", markup=False)
            stderr.print(Text(text.rstrip("\n") + "\n"), markup=False)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
