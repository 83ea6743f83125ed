"""Loss curves of one or more runs: a PNG (or SVG, PDF) through matplotlib, or a text chart.

A run folder's ``metrics.jsonl`` holds one record per evaluation (step, tokens, seconds,
train_loss, val_loss in nats/token, val_tokens, val_chars); ``config.yaml`` names what the run
was set up with, which labels runs apart when several are compared. No torch here: plotting a
run that is still training costs nothing.

    runs = [load_run("checkpoints/a"), load_run("checkpoints/b")]
    write_image(runs, "curves.png", x="tokens")        # `charrnn plot -o`: the same figure() as
    fig = plot("checkpoints/a", "checkpoints/b")       # charrnn.plot, a Figure a notebook shows
    print(render_text(runs))
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charrnn.errors import CharrnnError, UsageError

X_AXES = {"steps": "steps", "tokens": "tokens", "time": "wall time (s)"}
HINT = "plotting to a file needs matplotlib: pip install 'charrnn[plot]' (or leave out -o for a text chart)"
PYTHON_HINT = "plotting needs matplotlib: pip install 'charrnn[plot]' (in a notebook: %pip install matplotlib)"
LN2 = math.log(2)


@dataclass
class Run:
    """One run folder's evaluations, read from its metrics.jsonl."""

    path: Path
    records: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def bits_per_nat(self) -> float | None:
        """Bits per character for one nat per token: 1/ln 2 scaled by tokens per character of the
        validation split (1/ln 2 for a character model); None when nothing was validated."""
        for r in self.records:
            if r.get("val_tokens") and r.get("val_chars"):
                return r["val_tokens"] / r["val_chars"] / LN2
        return None

    def xs(self, x: str) -> list[float]:
        """The records' positions on the x axis: steps, tokens, or seconds of training across
        resumed commands (each command's clock starts at 0; they are laid end to end)."""
        if x != "time":
            return [float(r["step" if x == "steps" else "tokens"]) for r in self.records]
        out, offset, prev = [], 0.0, 0.0
        for r in self.records:
            s = float(r.get("seconds") or 0.0)
            if s + offset < prev:  # a resumed command: its clock restarted
                offset = prev
            prev = s + offset
            out.append(prev)
        return out

    def curve(self, key: str, x: str) -> tuple[list[float], list[float]]:
        """(x, loss) of the records that hold ``key`` ('train_loss' or 'val_loss')."""
        pts = [(xv, r[key]) for xv, r in zip(self.xs(x), self.records) if isinstance(r.get(key), (int, float))]
        return [p[0] for p in pts], [p[1] for p in pts]

    def best(self, x: str) -> tuple[float, float, int] | None:
        """(x, val loss, step) of the lowest validation loss: the evaluation best.pt was saved at."""
        pts = [
            (v, xv, r["step"])
            for xv, r in zip(self.xs(x), self.records)
            if isinstance(v := r.get("val_loss"), (int, float))
        ]
        if not pts:
            return None
        v, xv, step = min(pts, key=lambda p: p[0])  # the first of equals, as training keeps it
        return xv, v, step


def load_run(path: str | Path) -> Run:
    """A run from its folder (or any file in it). Raises CharrnnError when there is no
    metrics.jsonl or it holds no evaluation. A line cut short (a run writing right now) is skipped."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        what = "does not exist" if not p.exists() else "has no metrics.jsonl"
        raise CharrnnError(
            f"{path} {what}; give a run folder made by `charrnn train` (such as checkpoints/<corpus name>)"
        )
    records = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), int):
            # A loss that is not a finite number (NaN, 1e999 read as infinity) is no point to draw.
            records.append({k: v for k, v in r.items() if not (isinstance(v, float) and not math.isfinite(v))})
    if not records:
        raise CharrnnError(f"{metrics} holds no evaluation yet; plot it after the first one")
    config: dict[str, Any] = {}
    if (folder / "config.yaml").is_file():
        from charrnn.config import load_yaml

        try:
            config = load_yaml(folder / "config.yaml")
        except UsageError:
            config = {}
    return Run(folder, records, config, folder.name or str(folder))


def label_runs(runs: list[Run]) -> None:
    """Label each run by its folder name and, when several are compared, by up to three settings
    in which they differ (``hidden=256 dropout=0.2``)."""
    names = [r.path.name or str(r.path) for r in runs]
    if len(set(names)) < len(names):  # same folder names in different places: use the paths
        names = [str(r.path) for r in runs]
    flat = [_flatten(r.config) for r in runs]
    keys = [k for k in (flat[0] if flat else {}) if k not in ("out", "corpus")]
    differ = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1] if len(runs) > 1 else []
    for run, name, f in zip(runs, names, flat):
        extra = " ".join(f"{k}={f.get(k)}" for k in differ[:3])
        run.label = f"{name} ({extra})" if extra else name


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for section in config.values() if isinstance(section, dict) for k, v in section.items()}


def _check_x(x: str) -> None:
    if x not in X_AXES:
        raise UsageError(f"--x must be one of {', '.join(X_AXES)}, not {x!r}")


def _bits_scale(runs: list[Run]) -> float | None:
    """The one factor from nats/token to bits/char shared by every run, or None when the runs'
    tokens differ in length (characters against words): then the y axis shows bits/char itself."""
    scales = {round(s, 6) for r in runs if (s := r.bits_per_nat)}
    return scales.pop() if len(scales) == 1 else None


def figure(runs: list[Run], x: str = "steps", width: int = 800, height: int = 500, dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` pixels: train (dashed) and validation
    (solid) loss against ``x`` (steps, tokens or time), one colour per run, the best evaluation of
    each marked, bits/char on the right axis. It belongs to no pyplot state (nothing to close), and
    a notebook shows it inline (``LossCurves._repr_png_``). Raises CharrnnError with the install
    hint when matplotlib is missing, UsageError for a bad ``x`` or size."""
    _check_x(x)
    if width < 100 or height < 100:
        raise UsageError(f"--size must be at least 100x100 pixels, not {width}x{height}")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise CharrnnError(PYTHON_HINT) from None
    scale = _bits_scale(runs)
    per_token = scale is not None  # else every curve is drawn in bits/char
    fig = _loss_curves_class()(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        k = 1.0 if per_token else (run.bits_per_nat or 1 / LN2)
        tx, ty = run.curve("train_loss", x)
        vx, vy = run.curve("val_loss", x)
        best = run.best(x)
        # The best evaluation's figures go in the legend: a note beside the star would cross the curves.
        label = f"{run.label}: best {best[1] * k:.3f} at step {best[2]}" if best else run.label
        if tx:
            ax.plot(tx, [v * k for v in ty], "--", color=color, alpha=0.7, linewidth=1.2)
        ax.plot(vx, [v * k for v in vy], "-o", color=color, markersize=3, linewidth=1.6, label=label)
        if best:
            ax.plot([best[0]], [best[1] * k], marker="*", markersize=14, color=color, markeredgecolor="black", zorder=5)
    ax.plot([], [], "--", color="gray", label="train (dashed)")
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel("loss (nats/token)" if per_token else "bits/char")
    if per_token:
        ax.secondary_yaxis("right", functions=(lambda v: v * scale, lambda v: v / scale)).set_ylabel("bits/char")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("validation (solid) and training (dashed) loss; \u2605 best checkpoint", fontsize=10)
    fig.tight_layout()
    return fig


@functools.cache
def _loss_curves_class() -> type:
    """``Figure`` with a ``_repr_png_``, so that IPython shows it inline even where pyplot was
    never imported (IPython's own figure formatter is registered only once pyplot loads the
    inline backend; where it is, it takes precedence and draws the same PNG)."""
    from matplotlib.figure import Figure

    class LossCurves(Figure):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=self.dpi)
            return buf.getvalue()

    return LossCurves


def write_image(
    runs: list[Run], out: str | Path, x: str = "steps", width: int = 800, height: int = 500, dpi: int = 100
) -> None:
    """``figure(runs, x, width, height)`` written to ``out`` (its suffix picks PNG, SVG or PDF),
    atomically. Raises CharrnnError with the install hint when matplotlib is missing, UsageError
    for a suffix matplotlib cannot write."""
    try:
        import matplotlib  # noqa: F401  (the command line's own hint)
    except ImportError:
        raise CharrnnError(HINT) from None
    fig = figure(runs, x, width, height, dpi)
    from charrnn.files import atomic_write

    fmt = Path(out).suffix.lstrip(".").lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UsageError(f"cannot write .{fmt} images; name the output .png, .svg or .pdf")

    def save(f) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi)
        f.write(buf.getvalue())

    atomic_write(out, save, sync=False)


def render_text(runs: list[Run], x: str = "steps", width: int = 72, height: int = 14) -> str:
    """A text chart of the same curves (run i's validation points are its letter, A, B, ...;
    its training points the lower-case letter; ``*`` marks a best checkpoint), then one line per
    run: evaluations, best validation loss and its step, the last losses. No matplotlib needed."""
    _check_x(x)
    scale = _bits_scale(runs)
    unit = "nats/token" if scale is not None else "bits/char"
    width, height = max(width - 10, 20), max(height, 5)
    series = []  # (x, y, character), drawn in order: train, then validation, then the best
    for i, run in enumerate(runs):
        k = 1.0 if scale is not None else (run.bits_per_nat or 1 / LN2)
        letter = chr(ord("A") + i % 26)
        tx, ty = run.curve("train_loss", x)
        vx, vy = run.curve("val_loss", x)
        series += [(a, b * k, letter.lower()) for a, b in zip(tx, ty)]
        series += [(a, b * k, letter) for a, b in zip(vx, vy)]
        best = run.best(x)
        if best:
            series.append((best[0], best[1] * k, "*"))
    lines = []
    if series:
        x0, x1 = min(s[0] for s in series), max(s[0] for s in series)
        y0, y1 = min(s[1] for s in series), max(s[1] for s in series)
        grid = [[" "] * width for _ in range(height)]
        for a, b, ch in series:
            col = 0 if x1 == x0 else round((a - x0) / (x1 - x0) * (width - 1))
            row = 0 if y1 == y0 else round((y1 - b) / (y1 - y0) * (height - 1))
            grid[row][col] = ch
        for r, row in enumerate(grid):
            tick = f"{y1:8.3f} " if r == 0 else f"{y0:8.3f} " if r == height - 1 else " " * 9
            lines.append(tick + "|" + "".join(row).rstrip())
        lines.append(" " * 9 + "+" + "-" * width)
        left, right = _num(x0, x), _num(x1, x)
        lines.append(" " * 10 + left + right.rjust(width - len(left)))
        lines.append(f"{'':10}{X_AXES[x]}; loss in {unit}; A, B, ...: validation, a, b, ...: training, *: best")
    for i, run in enumerate(runs):
        letter = chr(ord("A") + i % 26)
        best = run.best(x)
        last = run.records[-1]
        bits = f", {best[1] * run.bits_per_nat:.3f} bits/char" if best and run.bits_per_nat else ""
        best_text = f"best val {best[1]:.4f}{bits} at step {best[2]}" if best else "no validation"
        train = last.get("train_loss")
        train_text = f", last train {train:.4f}" if isinstance(train, (int, float)) else ""
        lines.append(
            f"{letter} {run.label}: {len(run.records)} evaluations, {best_text}{train_text} (step {last['step']})"
        )
    return "\n".join(lines)


def _num(v: float, x: str) -> str:
    if x == "time":
        return f"{v:.0f}s"
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def plot(*runs: Any, x: str = "steps", width: int = 800, height: int = 500) -> Any:
    """The loss curves of one or more runs, overlaid, as a matplotlib ``Figure`` (what ``charrnn
    plot -o`` writes; a notebook shows it inline; ``.savefig(path)`` keeps it). ``runs``: run
    folders (or files in them), ``TrainResult``s of ``charrnn.train``, or a list of these. ``x``:
    steps, tokens or time. Raises CharrnnError for a folder with no evaluation yet, and with the
    install hint when matplotlib is missing; UsageError for no run or a bad ``x`` or size."""
    flat = [r for item in runs for r in (item if isinstance(item, (list, tuple)) else [item])]
    if not flat:
        raise UsageError("give plot() a run folder (such as checkpoints/<corpus name>) or a TrainResult")
    loaded = [load_run(getattr(r, "out", r)) for r in flat]
    label_runs(loaded)
    return figure(loaded, x, width, height)
