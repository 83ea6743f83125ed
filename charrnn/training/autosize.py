"""Defaults sized from the corpus, the time budget and the device, so that
`charrnn train FILE --time-budget T` turns T into the lowest validation loss it can.

Every choice is only a default: a flag or the YAML config overrides it, and the trainer
prints what it chose. The numbers come from measurements on a 2-core CPU (bench/RESULTS.md):
when minutes are scarce, one wide LSTM layer trained with many small, fast steps (32 streams
of 64 tokens, a high learning rate) beats deeper nets and bigger batches, because the number
of updates matters more than the tokens per update; more time buys a wider layer, then a
second one. Weight decay 0.1 (in ``TrainConfig``) gained 0.03-0.05 nats at 90 s.
"""

from __future__ import annotations

import math

from charrnn.config import RunConfig

# CPU plans by time budget: (up to seconds, layers, hidden, peak lr), measured on tinyshakespeare
# (bench/RESULTS.md). Past a few minutes a second layer pays for its cost.
CPU_PLANS = [
    (60, 1, 256, 1.5e-2),
    (240, 1, 320, 1.2e-2),
    (math.inf, 2, 320, 1e-2),
]


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def autosize(cfg: RunConfig, n_train: int, vocab_size: int, device: str, shape_from: dict | None = None) -> list[str]:
    """Fill every ``None`` in ``cfg`` in place; return one line per choice made, for the log."""
    m, d, t = cfg.model, cfg.data, cfg.train
    chose = []
    if shape_from:
        m.cell, m.layers, m.hidden, m.embed = (shape_from[k] for k in ("cell", "layers", "hidden", "embed"))
        if m.dropout is None:
            m.dropout = shape_from["dropout"]
    layers, hidden, lr = _plan(n_train, t.time_budget, device)
    if m.layers is None:
        m.layers = layers
        chose.append(f"layers={layers}")
    if m.hidden is None:
        m.hidden = hidden
        chose.append(f"hidden={hidden}")
    if m.embed is None:
        # Characters need few dimensions; a word vocabulary needs more.
        m.embed = min(m.hidden, _round(4 * math.sqrt(vocab_size) + 32, 32))
        chose.append(f"embed={m.embed}")
    if m.dropout is None:
        # Little data per parameter overfits (char-rnn's advice, made automatic).
        params = 4 * m.layers * m.hidden * (m.hidden + m.embed) + m.hidden * vocab_size
        ratio = n_train / params
        m.dropout = 0.0 if ratio > 1.5 else (0.1 if ratio > 0.4 else 0.2)
        chose.append(f"dropout={m.dropout}")
    if d.seq_len is None:
        # A tiny corpus needs at least one stream of two chunks.
        d.seq_len = max(1, min(64 if device == "cpu" else 128, (n_train - 1) // 2))
        chose.append(f"seq_len={d.seq_len}")
    if d.batch_size is None:
        # Enough streams to keep the cores busy, few enough for many updates; a small corpus caps it.
        want = 32 if device == "cpu" else 64
        fit = max(1, (n_train - 1 - d.seq_len) // (2 * d.seq_len))
        d.batch_size = max(1, min(want, fit))
        chose.append(f"batch_size={d.batch_size}")
    if t.lr is None:
        t.lr = lr if m.hidden == hidden else _lr_for(m.hidden)
        chose.append(f"lr={t.lr:g}")
    return ["auto settings: " + ", ".join(chose)] if chose else []


def _lr_for(hidden: int) -> float:
    """Wider layers want a lower peak rate: the plans' rates, extended as 1/hidden."""
    return min(1.5e-2, 1.2e-2 * 320 / hidden)


def _plan(n_train: int, budget: float | None, device: str) -> tuple[int, int, float]:
    """(layers, hidden, lr): from the budget on a CPU; from the corpus size otherwise."""
    # char-rnn's advice: parameters on the order of the corpus' tokens (~4 H^2 per LSTM layer).
    by_corpus = min(max(_round(math.sqrt(max(n_train, 1) / 4), 64), 64), 1024)
    if device == "cpu":
        limit = budget if budget is not None else math.inf
        _, layers, hidden, lr = next(p for p in CPU_PLANS if limit <= p[0])
        if by_corpus < hidden:
            hidden, lr = by_corpus, _lr_for(by_corpus)
        return layers, hidden, lr
    # A GPU runs wide matrix products cheaply: two layers sized by the corpus.
    hidden = min(max(by_corpus, 256), 1024)
    return 2, hidden, 3e-3 if hidden <= 512 else 2e-3
