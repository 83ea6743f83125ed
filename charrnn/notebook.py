"""Training progress in a notebook (Jupyter, JupyterLab, Colab, VS Code), and the HTML cards
that ``CharRNN`` and ``TrainResult`` show there.

``NotebookReporter`` draws one output that it replaces in place: IPython's
``display(view, display_id=True)`` and then ``handle.update(view)``, where ``view`` has an HTML
form (``_repr_html_``) and a text form (``__repr__``). Why not rich's Jupyter support or
tqdm.auto: both draw with ipywidgets, and with or without them they leave nothing useful in a
saved notebook (tried: nbclient executing each, ipywidgets 8.1 installed and not; see
docs/notebook.md). rich's Live saves an ``Output()`` widget and an empty ``<pre>``, and without
ipywidgets warns and shows nothing; tqdm.notebook saves its first frame ("0%| 0/20") as the
widget's text, and without ipywidgets tqdm.auto falls back to a stream of carriage returns on
stderr. A display handle needs no package beyond IPython, updates live wherever Jupyter's
messages are understood, and what is saved is the last frame as HTML and text, which GitHub,
nbconvert and a terminal show as they are.

Nothing here imports IPython until a notebook is there to show things (``in_notebook``).
"""

from __future__ import annotations

import html
import math
import sys
import time
from collections.abc import Iterable
from typing import Any

from charrnn.training.report import Reporter

UPDATE_EVERY = 0.5
"""Seconds between redraws for training-loss reports; evaluations, samples and messages redraw at once."""
BAR_WIDTH = 30
PRE = "font-family:monospace;margin:0.2em 0"
"""Inline style of the text blocks: some renderers (nbconvert's lab template) draw a bare <pre> in a proportional font."""
SHOWN_EVALUATIONS = 10
"""The evaluations table keeps the most recent ones (metrics.jsonl has them all)."""
SHOWN_SAMPLES = 4
"""Samples kept in view: the first (what an untrained model writes) and the most recent ones."""


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (Jupyter, JupyterLab, Colab, VS Code): an IPython
    shell with a kernel behind it, not IPython in a terminal."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it; never import it just to ask
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def clock(seconds: float) -> str:
    """0:07, 1:58, 1:02:03."""
    s = max(0, round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A text bar, the same in HTML and plain text (no CSS to be stripped by a renderer)."""
    full = round(min(max(fraction, 0.0), 1.0) * width)
    return "\u2588" * full + "\u2591" * (width - full)


def card_html(title: str, rows: Iterable[tuple[str, str]], note: str = "") -> str:
    """A small two-column table: what a notebook shows for a model or a run."""
    body = "".join(
        f'<tr><th style="text-align:left">{html.escape(k)}</th><td style="text-align:left">{html.escape(v)}</td></tr>'
        for k, v in rows
    )
    foot = f"<div><small>{html.escape(note)}</small></div>" if note else ""
    return f"<div><b>{html.escape(title)}</b><table>{body}</table>{foot}</div>"


class TrainingView:
    """A frame of a run's progress: what ``NotebookReporter`` displays, in HTML and as text."""

    def __init__(self, state: dict[str, Any]):
        self.s = state

    def _status(self) -> tuple[str, str, str]:
        """(headline, bar line, figures line)."""
        s = self.s
        frac, left = s["fraction"], s["left"]
        if s["result"] is not None and s["result"].interrupted:
            r = s["result"]
            head = f"interrupted at step {r.steps:,} after {clock(r.seconds)}; saved {r.checkpoint}: resume=True continues it"
        elif s["result"] is not None:
            r = s["result"]
            how = "stopped early" if r.extra.get("stopped_early") else "trained"
            best = "n/a" if r.best_val_loss is None else f"{r.best_val_loss:.4f}"
            head = f"{how}: {r.steps:,} steps in {clock(r.seconds)}, best val loss {best}; saved {r.checkpoint}"
            frac = 1.0
        elif s["ended"]:
            head = f"stopped at step {s['step']:,} after {clock(s['elapsed'])}"
        else:
            head = f"training: step {s['step']:,}" + (f" of {s['total']:,}" if s["total"] else "")
        when = f"{clock(s['elapsed'])} elapsed" + ("" if left is None or s["ended"] else f", {clock(left)} left")
        figures = [f"loss {s['loss']}", f"val loss {s['val']}", f"{s['tps']} tokens/s"]
        return head, f"{bar(frac)} {frac:4.0%}  {when}", "  \u00b7  ".join(figures)

    def __repr__(self) -> str:
        head, line, figures = self._status()
        out = [head, line, figures, *self.s["messages"]]
        if self.s["evaluations"]:
            out += ["", f"{'step':>8}  {'train loss':>10}  {'val loss':>9}  {'bits/char':>9}"]
            out += [f"{e['step']:>8,}  {e['train']:>10}  {e['val']:>9}  {e['bpc']:>9}" for e in self.s["evaluations"]]
        for smp in self.s["samples"]:
            out += ["", f"{smp['title']}:", smp["text"]]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        head, line, figures = self._status()
        e = html.escape
        parts = [f"<div><b>{e(head)}</b></div>", f'<pre style="{PRE}">{e(line)}</pre>', f"<div>{e(figures)}</div>"]
        parts += [f"<div><small>{e(m)}</small></div>" for m in self.s["messages"]]
        if self.s["evaluations"]:
            rows = "".join(
                f"<tr><td>{r['step']:,}</td><td>{r['train']}</td><td>{r['val']}</td><td>{r['bpc']}</td></tr>"
                for r in self.s["evaluations"]
            )
            parts.append(
                f"<table><tr><th>step</th><th>train loss</th><th>val loss</th><th>bits/char</th></tr>{rows}</table>"
            )
        for smp in self.s["samples"]:
            parts.append(
                f'<div><i>{e(smp["title"])}</i></div><pre style="{PRE};white-space:pre-wrap">{e(smp["text"])}</pre>'
            )
        return '<div class="charrnn-progress">' + "".join(parts) + "</div>"


class NotebookReporter(Reporter):
    """A run's progress as one notebook output that updates in place: step, training and
    validation loss, tokens/s, time elapsed and left, the evaluations so far and the samples
    taken at them. ``show(view)`` displays a view and returns a handle with ``update(view)``
    (default: IPython's ``display(view, display_id=True)``)."""

    def __init__(self, show: Any = None):
        self._show = show
        self.handle = None
        self.last_draw = 0.0
        self.origin: float | None = None  # time.monotonic() of the command's start, once a step says
        self.started_at = time.monotonic()
        self.total: int | None = None
        self.budget: float | None = None
        self.first_step = 0
        self.state: dict[str, Any] = {
            "step": 0,
            "total": None,
            "loss": "-",
            "val": "-",
            "tps": "-",
            "fraction": 0.0,
            "elapsed": 0.0,
            "left": None,
            "messages": [],
            "evaluations": [],
            "samples": [],
            "ended": False,
            "result": None,
        }
        self._evaluations: list[dict[str, Any]] = []
        self._samples: list[dict[str, str]] = []
        self._train_loss = "-"

    # -- Reporter

    def message(self, text: str) -> None:
        self.state["messages"].append(text)
        self._draw(force=True)

    def start(self, total_steps: int | None, budget: float | None, step: int) -> None:
        self.total, self.budget, self.first_step = total_steps, budget, step
        self.started_at = time.monotonic()
        self.state.update(step=step, total=total_steps)
        self._draw(force=True)

    def step(self, step: int, loss: float, tokens_per_second: float, elapsed: float) -> None:
        self.origin = time.monotonic() - elapsed
        self._train_loss = f"{loss:.4f}"
        self.state.update(step=step, loss=self._train_loss, tps=f"{tokens_per_second:,.0f}")
        self._draw()

    def evaluated(self, step: int, score: Any) -> None:
        bpc = score.bits_per_char
        self.state["val"] = f"{score.loss:.4f}"
        self._evaluations.append(
            {
                "step": step,
                "train": self._train_loss,
                "val": f"{score.loss:.4f}",
                "bpc": f"{bpc:.4f}" if math.isfinite(bpc) else "-",
            }
        )
        self.state["evaluations"] = self._evaluations[-SHOWN_EVALUATIONS:]
        self._draw(force=True)

    def sampled(self, step: int, val_loss: float | None, text: str) -> None:
        loss = "" if val_loss is None else f", val loss {val_loss:.4f}"
        self._samples.append({"title": f"sample at step {step:,}{loss}", "text": text.strip("\n")})
        kept = (
            self._samples
            if len(self._samples) <= SHOWN_SAMPLES
            else [self._samples[0], *self._samples[1 - SHOWN_SAMPLES :]]
        )
        self.state["samples"] = kept
        self._draw(force=True)

    def finish(self) -> None:
        self.state["ended"] = True
        self._draw(force=True)

    # -- the end, told by charrnn.train

    def done(self, result: Any) -> None:
        """The run's ``TrainResult``: the headline becomes its summary."""
        self.state["result"] = result
        self._draw(force=True)

    # -- drawing

    def _times(self) -> tuple[float, float, float | None]:
        """(elapsed since the command started, fraction done, seconds left or None)."""
        now = time.monotonic()
        elapsed = now - (self.origin if self.origin is not None else self.started_at)
        fractions, left = [], []
        if self.budget:
            fractions.append(elapsed / self.budget)
            left.append(self.budget - elapsed)
        if self.total:
            done = self.state["step"] - self.first_step
            fractions.append(self.state["step"] / self.total)
            loop = now - self.started_at
            if done > 0:
                left.append((self.total - self.state["step"]) * loop / done)
        return elapsed, max(fractions, default=0.0), min(left) if left else None

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_draw < UPDATE_EVERY:
            return
        self.last_draw = now
        if not self.state["ended"]:
            elapsed, fraction, left = self._times()
            self.state.update(elapsed=elapsed, fraction=fraction, left=None if left is None else max(left, 0.0))
        view = TrainingView({**self.state, "messages": list(self.state["messages"])})
        if self.handle is None:
            self.handle = (self._show or _display)(view)
        else:
            self.handle.update(view)


def _display(view: Any) -> Any:
    from IPython.display import display

    return display(view, display_id=True)
