"""Defaults sized from the corpus and the time budget, so `charrnn train FILE --time-budget T`
turns T into the lowest validation loss it can. Every choice is a default only: a flag or the
YAML config overrides it. See bench/RESULTS.md for the measurements behind the numbers."""

from __future__ import annotations

import math

from charrnn.config import RunConfig


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def autosize(cfg: RunConfig, n_train: int, vocab_size: int, device: str, shape_from: dict | None = None) -> list[str]:
    """Fill every ``None`` in ``cfg`` in place; return one line per choice made, for the log."""
    m, d, t = cfg.model, cfg.data, cfg.train
    notes = []
    chose = []
    if shape_from:
        m.cell, m.layers, m.hidden, m.embed = (shape_from[k] for k in ("cell", "layers", "hidden", "embed"))
        if m.dropout is None:
            m.dropout = shape_from["dropout"]
    if m.layers is None or m.hidden is None:
        layers, hidden = _size(n_train, t.time_budget, device)
        if m.layers is None:
            m.layers = layers
            chose.append(f"layers={layers}")
        if m.hidden is None:
            m.hidden = hidden
            chose.append(f"hidden={hidden}")
    if m.embed is None:
        m.embed = min(m.hidden, _round(4 * math.sqrt(vocab_size) + 32, 32))
        chose.append(f"embed={m.embed}")
    if m.dropout is None:
        # Little data per parameter overfits: char-rnn's advice, made automatic.
        params = 8 * m.layers * m.hidden * m.hidden
        m.dropout = 0.0 if n_train > 20 * params else (0.1 if n_train > 4 * params else 0.2)
        chose.append(f"dropout={m.dropout}")
    if d.seq_len is None:
        d.seq_len = 128 if d.batching == "stream" else 256
        chose.append(f"seq_len={d.seq_len}")
    if d.batch_size is None:
        fit = max(1, (n_train - 1 - d.seq_len) // (2 * d.seq_len))
        d.batch_size = max(1, min(128 if device == "cpu" else 256, fit))
        chose.append(f"batch_size={d.batch_size}")
    if t.lr is None:
        t.lr = 3e-3 if m.hidden <= 512 else 2e-3
        chose.append(f"lr={t.lr:g}")
    if chose:
        notes.append("auto settings: " + ", ".join(chose))
    return notes


def _size(n_train: int, budget: float | None, device: str) -> tuple[int, int]:
    """(layers, hidden) for the corpus size, capped by what the budget can train."""
    # char-rnn's advice: parameters on the order of the corpus' tokens.
    hidden = _round(math.sqrt(max(n_train, 1) / 16), 64)
    hidden = min(max(hidden, 64), 1024)
    if budget is not None and device == "cpu":
        cap = 256 if budget <= 120 else 512
        hidden = min(hidden, cap)
    return 2, hidden
