"""Defaults sized from the corpus, the time budget and the device, so that
`charrnn train FILE --time-budget T` turns T into the lowest validation loss it can.

Every choice is only a default: a flag or the YAML config overrides it, and the trainer
prints what it chose. When minutes are scarce, one wide LSTM layer trained with many small,
fast steps (32 streams of 64 tokens, a high learning rate) beats deeper nets and bigger
batches: the number of updates matters more than the tokens per update. More time buys a wider
layer, then a second one. A run that would overfit (a corpus small for the model, read many
times over) gets dropout and a heavier weight decay (``regularised``). The experiments behind
each number are in bench/RESULTS.md, "Experiments behind the defaults".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from charrnn.config import RunConfig

# CPU plans by time budget where nothing is timed (a GRU or RNN, under torchrun, a budget under
# the probe's minimum): (up to seconds, layers, hidden); their peak rates are ``lr_for``'s. Past a
# few minutes a second layer pays for its cost (bench/RESULTS.md, "Layer count by budget").
CPU_PLANS = [
    (60, 1, 256),
    (240, 1, 320),
    (math.inf, 2, 320),
]


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def autosize(
    cfg: RunConfig,
    n_train: int,
    vocab_size: int,
    device: str,
    shape_from: dict | None = None,
    epochs: float | None = None,
) -> tuple[RunConfig, list[str]]:
    """A copy of ``cfg`` with every ``None`` of the model, batches and optimizer filled, and one
    line saying what was chosen (none when nothing was). ``shape_from``: the shape of a model the
    run continues (resume, fine-tuning), which wins. ``epochs``: the passes over the ``n_train``
    training tokens the run is planned to make (a measured plan's ``Plan.epochs``); None: from
    --max-steps or --epochs when given, else not known (the regularisation then follows the
    corpus size alone)."""
    cfg = copy.deepcopy(cfg)
    m, d, t = cfg.model, cfg.data, cfg.train
    chose = []
    if shape_from:
        m.cell, m.layers, m.hidden, m.embed = (shape_from[k] for k in ("cell", "layers", "hidden", "embed"))
        if m.dropout is None:
            m.dropout = shape_from["dropout"]
    layers, hidden = _plan(n_train, t.time_budget, device)
    if m.layers is None:
        m.layers = layers
        chose.append(f"layers={layers}")
    if m.hidden is None:
        m.hidden = hidden
        chose.append(f"hidden={hidden}")
    if m.embed is None:
        m.embed = embed_for(m.hidden, vocab_size)
        chose.append(f"embed={m.embed}")
    want_batch, want_seq = batch_shape(device)
    if d.seq_len is None:
        # A tiny corpus needs at least one stream of two chunks.
        d.seq_len = max(1, min(want_seq, (n_train - 1) // 2))
        chose.append(f"seq_len={d.seq_len}")
    if d.batch_size is None:
        # Enough streams to keep the cores busy, few enough for many updates; a small corpus caps it.
        fit = max(1, (n_train - 1 - d.seq_len) // (2 * d.seq_len))
        d.batch_size = max(1, min(want_batch, fit))
        chose.append(f"batch_size={d.batch_size}")
    if epochs is None and (limit := step_limit_tokens(n_train, d.batch_size * d.seq_len, t.max_steps, t.epochs)):
        epochs = limit / max(n_train, 1)
    if m.dropout is None:
        m.dropout = dropout_for(n_train, m.layers, m.hidden, m.embed, vocab_size, epochs)
        chose.append(f"dropout={m.dropout}")
    if t.weight_decay is None:
        t.weight_decay = weight_decay_for(n_train, m.layers, m.hidden, m.embed, vocab_size, epochs)
        chose.append(f"weight_decay={t.weight_decay:g}")
    if t.lr is None:  # for the shape that runs, whichever of its layers and width were given
        t.lr = plan_lr(m.hidden, device)
        chose.append(f"lr={t.lr:g}")
    return cfg, ["auto settings: " + ", ".join(chose)] if chose else []


def step_limit_tokens(
    n_train: int | None, tokens_per_step: int, max_steps: int | None, epochs: float | None
) -> float | None:
    """The training tokens a step limit (--max-steps, --epochs over ``n_train`` tokens) allows;
    None without one (a time budget's passes are known once its steps are timed: ``Plan.epochs``)
    or where --epochs is the only limit and ``n_train`` is not known."""
    limits = [max_steps * tokens_per_step] if max_steps else []
    if epochs and n_train is not None:
        limits.append(epochs * n_train)
    return min(limits) if limits else None


ENOUGH_DATA = 1.5
"""Training tokens per parameter above which a model gets no dropout and the lighter weight decay."""
OVERFIT_EXPOSURE = 12.0
"""The ``exposure`` up to which a run gets no dropout and the lighter weight decay, however small
the corpus is for the model: it stops before it would overfit (bench/RESULTS.md,
"Regularisation: dropout and weight decay from exposure")."""


def tokens_per_parameter(n_train: int, layers: int, hidden: int, embed: int, vocab_size: int) -> float:
    """Training tokens per weight of the recurrent layers and the head: how much data the model
    has to fit, the quantity the regularisation defaults follow."""
    return n_train / _fitted_weights(layers, hidden, embed, vocab_size)


def _fitted_weights(layers: int, hidden: int, embed: int, vocab_size: int) -> int:
    """The recurrent layers' and the head's weights, about (the regularisation rules' count)."""
    return 4 * layers * hidden * (hidden + embed) + hidden * vocab_size


def exposure(n_train: int, layers: int, hidden: int, embed: int, vocab_size: int, epochs: float) -> float:
    """Passes over the corpus times the model's parameters per training token: how often a run
    could have fitted each token with weights of its own, what overfitting grows with (more
    passes, or a bigger model for the data)."""
    return epochs * _fitted_weights(layers, hidden, embed, vocab_size) / max(n_train, 1)


def regularised(
    n_train: int, layers: int, hidden: int, embed: int, vocab_size: int, epochs: float | None = None
) -> bool:
    """Whether a run would overfit without dropout and the heavier weight decay: 1.5 training
    tokens per parameter or fewer (``ENOUGH_DATA``), and an ``exposure`` over OVERFIT_EXPOSURE
    for its ``epochs`` passes over them (None: not known, so assumed)."""
    if tokens_per_parameter(n_train, layers, hidden, embed, vocab_size) > ENOUGH_DATA:
        return False
    return epochs is None or exposure(n_train, layers, hidden, embed, vocab_size, epochs) > OVERFIT_EXPOSURE


def dropout_for(
    n_train: int, layers: int, hidden: int, embed: int, vocab_size: int, epochs: float | None = None
) -> float:
    """Little data per parameter overfits (char-rnn's advice, made automatic) once the run
    repeats it often enough (``regularised``): then 0.1 above 0.4 training tokens per parameter,
    else 0.2; otherwise 0."""
    if not regularised(n_train, layers, hidden, embed, vocab_size, epochs):
        return 0.0
    return 0.1 if tokens_per_parameter(n_train, layers, hidden, embed, vocab_size) > 0.4 else 0.2


def weight_decay_for(
    n_train: int, layers: int, hidden: int, embed: int, vocab_size: int, epochs: float | None = None
) -> float:
    """AdamW weight decay: 0.1, and 0.2 where ``dropout_for`` turns dropout on (``regularised``):
    0.2 wins in long runs that repeat their corpus and loses in short ones (bench/RESULTS.md,
    "Regularisation")."""
    return 0.2 if regularised(n_train, layers, hidden, embed, vocab_size, epochs) else 0.1


def embed_for(hidden: int, vocab_size: int) -> int:
    """Characters need few dimensions; a word vocabulary needs more."""
    return min(hidden, _round(4 * math.sqrt(vocab_size) + 32, 32))


LR_AT_320 = 0.0216
"""The CPU's peak rate for a 320-wide layer, one or a stack of them; ``lr_for`` scales it as
1/hidden. A stack wants the rate of one layer of its width (bench/RESULTS.md, "Peak learning
rate": Tiny Shakespeare, 1x256 to 2x384, 90 s to 10 minutes, two seeds)."""
LR_MAX = 0.027
"""The cap for narrow layers (1/hidden would reach it below 256 wide)."""


def lr_for(hidden: int) -> float:
    """The peak learning rate of a CPU run's AdamW for LSTM layers ``hidden`` wide, one or a
    stack (32 x 64 batches): wider layers want a lower rate, LR_AT_320 x 320 / hidden, at most
    LR_MAX (1x384 and 2x384: 0.018; 1x256: 0.027). Six
    significant digits, so config.yaml reads 0.018, not 0.018000000000000002."""
    return _digits(min(LR_MAX, LR_AT_320 * 320 / hidden))


def _digits(x: float) -> float:
    return float(f"{x:.6g}")


GPU_LR_SCALE = 1.87
"""A GPU's 64 x 128 batches hold 4x the tokens of a CPU's 32 x 64 and take a higher peak rate
(the linear scaling rule, Goyal et al. 2017, "Accurate, Large Minibatch SGD"). Measured on the
CPU at the GPU's batch shape, since the loss a token buys does not depend on the device
(bench/RESULTS.md, "GPU learning-rate scale"); not yet measured on a GPU."""


def plan_lr(hidden: int, device: str) -> float:
    """The peak rate for layers ``hidden`` wide on ``device`` ("cpu", "cuda", "mps"): ``lr_for``
    on a CPU, where it was measured; GPU_LR_SCALE times that for a GPU's bigger batches."""
    return _digits(lr_for(hidden) * (1.0 if device == "cpu" else GPU_LR_SCALE))


def batch_shape(device: str) -> tuple[int, int]:
    """(streams, tokens per stream) of a step when not given: 32 x 64 on a CPU, where many small
    updates win (bench/RESULTS.md, "Batch shape 32 x 64"); 64 x 128 on a GPU, which runs wide
    products cheaply."""
    return (32, 64) if device == "cpu" else (64, 128)


def corpus_hidden(n_train: int) -> int:
    """char-rnn's advice: parameters on the order of the corpus' tokens (~4 H^2 per LSTM layer)."""
    return min(max(_round(math.sqrt(max(n_train, 1) / 4), 64), 64), 1024)


def _plan(n_train: int, budget: float | None, device: str) -> tuple[int, int]:
    """(layers, hidden): from the budget on a CPU; from the corpus size otherwise."""
    by_corpus = corpus_hidden(n_train)
    if device == "cpu":
        limit = budget if budget is not None else math.inf
        _, layers, hidden = next(p for p in CPU_PLANS if limit <= p[0])
        return layers, min(hidden, by_corpus)
    # A GPU runs wide matrix products cheaply: two layers sized by the corpus.
    return 2, min(max(by_corpus, 256), 1024)


def non_embedding_params(layers: int, hidden: int, vocab: int, embed: int) -> int:
    """Parameters of an LSTM language model but its embedding table: the size in the loss model."""
    rnn = sum(4 * hidden * ((embed if l == 0 else hidden) + hidden) + 8 * hidden for l in range(layers))
    return rnn + hidden * vocab + vocab


def fit_loss_model(rows: list[tuple[float, float, float]]) -> tuple[dict[str, float], float]:
    """Fit the loss model (``predicted_loss``) to (N params, D tokens, loss) rows: the exponents
    on a grid, E, A, B by least squares. Returns (the model, the rms error in nats)."""
    import numpy as np

    N, D, L = (np.array(c, dtype=float) for c in zip(*rows))
    best = None
    for alpha in np.arange(0.05, 2.01, 0.025):
        for beta in np.arange(0.05, 2.01, 0.025):
            X = np.stack([np.ones_like(N), N**-alpha, D**-beta], axis=1)
            coef, *_ = np.linalg.lstsq(X, L, rcond=None)
            if coef[1] < 0 or coef[2] < 0:
                continue
            err = float(np.sqrt(np.mean((X @ coef - L) ** 2)))
            if best is None or err < best[1]:
                best = (
                    {
                        "E": round(float(coef[0]), 4),
                        "A": round(float(coef[1]), 1),
                        "alpha": round(float(alpha), 3),
                        "B": round(float(coef[2]), 1),
                        "beta": round(float(beta), 3),
                    },
                    err,
                )
    return best


# ---------------------------------------------------------------- sizing by measurement

# Widths a budgeted CPU run may choose among, narrowest first (probe.py times them), and the
# budget beyond which they have two layers. The layer count is a table, not the loss model's:
# two layers trail one layer of the same cost in short runs and win at 10 minutes, with too few
# points to model where they cross (bench/sweeps/loss_vs_tokens.jsonl; bench/RESULTS.md).
WIDTHS = [128, 192, 256, 320, 384, 512]
TWO_LAYERS_BEYOND = 240.0
# Widths a budgeted GPU run may choose among, always two layers (the GPU default's depth).
GPU_WIDTHS = [256, 384, 512, 768, 1024]


def candidates(seconds: float, device: str = "cpu") -> list[tuple[int, int]]:
    """(layers, hidden) shapes worth timing for a run with ``seconds`` left on ``device``,
    smallest first."""
    if device != "cpu":
        return [(2, h) for h in GPU_WIDTHS]
    layers = 1 if seconds <= TWO_LAYERS_BEYOND else 2
    return [(layers, h) for h in WIDTHS]


# Validation loss (nats/char) reached after D training tokens by a model of N non-embedding
# parameters with the full schedule: L = E + A / N**alpha + B / D'**beta, D' the tokens' worth
# once epochs repeat (``effective_tokens``), fitted to the one-layer rows of
# bench/sweeps/loss_vs_tokens.jsonl (Tiny Shakespeare, 32 x 64 batches, rms error 0.0103 nats) by
# `python bench/loss_sweep.py --fit`. Two-layer shapes are scored at their size.
LOSS_MODEL = {"E": 1.3225, "A": 7678.7, "alpha": 0.9, "B": 3304.4, "beta": 0.65}
REPEAT_DECAY = 15.4
"""R*: the repeated epochs over which a token's worth decays by 1/e (Muennighoff et al. 2023,
"Scaling Data-Constrained Language Models", their fitted R_D*)."""
# Of the seconds left when the plan is made, the share that goes to training steps (evaluations,
# saves and the exit take the rest).
TRAIN_SHARE = 0.85


@dataclass
class Plan:
    """A measured choice: shape, precision, peak lr, the tokens/s timed for it, the loss predicted."""

    layers: int
    hidden: int
    precision: str
    lr: float
    tokens_per_second: float
    predicted_loss: float
    measured: dict[tuple[int, int, str], float] | None = None
    epochs: float | None = None
    """Passes over the training tokens the run will make, as the regularisation was decided on
    (``regularised``): what the shape's timed steps without dropout buy in the time left. None:
    the corpus size was not given."""

    def to_dict(self) -> dict:
        timed = {f"{l}x{h} {p}": round(r) for (l, h, p), r in (self.measured or {}).items()}
        return {
            "layers": self.layers,
            "hidden": self.hidden,
            "precision": self.precision,
            "lr": self.lr,
            "tokens_per_second": round(self.tokens_per_second),
            "predicted_loss": round(self.predicted_loss, 4),
            "epochs": None if self.epochs is None else round(self.epochs, 1),
            "timed_tokens_per_second": timed,
        }

    def describe(self) -> str:
        timed = ", ".join(f"{l}x{h} {p} {r / 1000:.0f}k" for (l, h, p), r in (self.measured or {}).items())
        passes = "" if self.epochs is None else f", about {self.epochs:.0f} passes over the corpus"
        return (
            f"measured plan: {self.layers}x{self.hidden} LSTM, {self.precision}, lr {self.lr:g}, "
            f"{self.tokens_per_second:,.0f} tokens/s{passes}, predicted val loss {self.predicted_loss:.3f}"
            + (f" (timed tokens/s: {timed})" if timed else "")
        )


def effective_tokens(tokens: float, unique: float | None) -> float:
    """What ``tokens`` of training are worth when the corpus holds only ``unique`` of them (None:
    as many as trained on): D' = U + U R* (1 - exp(-R / R*)) for R = D / U - 1 repeated epochs
    (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", eq. 5; ``REPEAT_DECAY``
    is R*). The first epoch counts in full, the later ones ever less, so a run that would repeat
    its corpus many times gains more from a bigger model than from more steps."""
    if unique is None or tokens <= unique:
        return tokens
    repeats = tokens / unique - 1.0
    return unique + unique * REPEAT_DECAY * (1.0 - math.exp(-repeats / REPEAT_DECAY))


def predicted_loss(
    params: float, tokens: float, model: dict[str, float] = LOSS_MODEL, unique: float | None = None
) -> float:
    """The loss model at N = ``params`` after ``tokens`` of training on a corpus of ``unique``
    training tokens (None: no epoch repeats), in nats/token (see LOSS_MODEL)."""
    d = effective_tokens(max(tokens, 1.0), unique)
    return model["E"] + model["A"] * params ** -model["alpha"] + model["B"] * d ** -model["beta"]


def best_precision(measured: dict[tuple[int, int, str], float], layers: int, hidden: int) -> str | None:
    """The precision timed fastest for the shape: bf16 (fp16 on a GPU) only where it measured
    faster than fp32."""
    rates = {p: r for (l, h, p), r in measured.items() if (l, h) == (layers, hidden)}
    if not rates:
        return None
    return max(rates, key=lambda p: (rates[p], p == "fp32"))


def predicted_plan_loss(
    measured: dict[tuple[int, int, str], float],
    layers: int,
    hidden: int,
    seconds: float,
    vocab: int,
    embed: int,
    max_tokens: float | None = None,
    unique: float | None = None,
) -> float:
    """The loss predicted for a measured shape trained for TRAIN_SHARE of ``seconds``, or on
    ``max_tokens`` when a step limit (--max-steps, --epochs) ends the run sooner, on a corpus of
    ``unique`` training tokens (None: not repeated)."""
    tokens = planned_tokens(measured[(layers, hidden, best_precision(measured, layers, hidden))], seconds, max_tokens)
    return predicted_loss(non_embedding_params(layers, hidden, vocab, embed), tokens, unique=unique)


def planned_tokens(tokens_per_second: float, seconds: float, max_tokens: float | None = None) -> float:
    """The training tokens a run at ``tokens_per_second`` sees in TRAIN_SHARE of ``seconds``, or
    ``max_tokens`` when a step limit ends it sooner."""
    tokens = tokens_per_second * TRAIN_SHARE * max(seconds, 0.0)
    return tokens if max_tokens is None else min(tokens, max_tokens)


def choose_plan(
    measured: dict[tuple[int, int, str], float],
    seconds: float,
    vocab: int,
    embed=None,
    max_tokens: float | None = None,
    unique: float | None = None,
    device: str = "cpu",
) -> Plan:
    """The plan with the lowest predicted loss after ``seconds`` (what is left of the budget),
    from training tokens/s measured per (layers, hidden, precision), or of ``max_tokens`` when a
    step limit binds first; ``unique``: the corpus' training tokens (None: no epoch repeats).
    ``embed(hidden)``: the embedding width (default ``embed_for``); ``device`` sets the lr
    (``plan_lr``). Pure: it times nothing. Raises ValueError when nothing was measured."""
    if not measured:
        raise ValueError("choose_plan needs at least one measured candidate")
    plans = []
    for layers, hidden in dict.fromkeys((l, h) for l, h, _ in measured):
        e = embed(hidden) if embed else embed_for(hidden, vocab)
        p = best_precision(measured, layers, hidden)
        loss = predicted_plan_loss(measured, layers, hidden, seconds, vocab, e, max_tokens, unique)
        plans.append(Plan(layers, hidden, p, plan_lr(hidden, device), measured[(layers, hidden, p)], loss, measured))
    return min(plans, key=lambda plan: plan.predicted_loss)
