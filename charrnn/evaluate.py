"""Loss of a model on a token sequence (``evaluate``) and on lines one by one (``score_lines``).

``evaluate`` scores every token after the first once. The text is cut into B chunks that run
side by side. Each chunk (but the first, which starts the text) is first primed on the
``warmup`` tokens before it without scoring them, so every prediction sees at least that much
context, as if the text were read in one pass. With ``max_tokens`` a long text is scored on B
evenly spaced windows instead (training's bounded evaluation, ``--eval-tokens``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.data.batches import as_numpy
from charrnn.data.records import encode_record
from charrnn.data.tokenizer import Tokenizer, scoring_mode
from charrnn.model.lm import RNNLM
from charrnn.runtime.allocator import keep_freed_memory

DEFAULT_EVAL_TOKENS = 250_000
"""Training's evaluations score at most this many validation tokens (``--eval-tokens``), fewer
for vocabularies over 1,024 tokens (``default_eval_tokens``)."""


def default_eval_tokens(vocab_size: int) -> int:
    """250,000 tokens, scaled by 1,024 / vocab_size above 1,024 tokens: the output layer's cost
    per token grows with the vocabulary (a 20,000-word model gets 12,800)."""
    return int(DEFAULT_EVAL_TOKENS * min(1.0, 1024 / max(vocab_size, 1)))


@dataclass
class Score:
    """A model's loss on a text."""

    loss: float
    """Mean nats per token."""
    tokens: int
    chars: int
    left_out: Counter = field(default_factory=Counter)
    """Tokens of the text the model never saw, left out of the score (``unknown='skip'``), counted."""

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.tokens / max(self.chars, 1) / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    def __repr__(self) -> str:
        gone = sum(self.left_out.values())
        left_out = f", {gone:,} unseen left out" if gone else ""
        return (
            f"Score({self.loss:.4f} nats/token, {self.bits_per_char:.4f} bits/char, perplexity {self.perplexity:.2f}; "
            f"{self.tokens:,} tokens, {self.chars:,} chars{left_out})"
        )

    def to_dict(self) -> dict:
        """Plain numbers for JSON: a loss that is not finite (nothing scored, or a model that
        overflows) is None, never NaN or Infinity, which are not JSON."""
        return {
            "loss": _finite(self.loss, 6),
            "bits_per_char": _finite(self.bits_per_char, 6),
            "perplexity": _finite(self.perplexity, 4),
            "tokens": self.tokens,
            "chars": self.chars,
            "left_out": sum(self.left_out.values()),
        }


def _finite(x: float, digits: int) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


@torch.inference_mode()
def evaluate(
    model: RNNLM,
    ids,
    token_chars: list[int] | torch.Tensor | np.ndarray,
    batch_size: int = 64,
    seq_len: int = 256,
    warmup: int = 256,
    autocast=None,
    max_tokens: int | None = None,
    deadline: float | None = None,
) -> Score:
    """Loss on ``ids`` ((n,) integers: a tensor, a numpy array or a token cache's memmap, read
    (B, seq_len) window by window, so memory does not grow with n). ``token_chars[i]`` is the
    length in characters of token i, for bits per character.

    Every prediction is scored once, unless ``max_tokens`` is given and the text has more
    predictions: then ``batch_size`` windows of ``max_tokens // batch_size`` tokens, evenly spaced
    from the start of the text to its end (the same ones every time), are scored. ``deadline``
    (time.monotonic()) cuts every window short after the (B, seq_len) chunk that passes it, so an
    evaluation never overruns a time budget by more than one chunk. ``Score.tokens`` says how
    many predictions were scored."""
    keep_freed_memory()  # each chunk's buffers come back from the heap (allocator.py)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    arr = as_numpy(ids)
    n_pred = len(arr) - 1
    if n_pred < 1:
        return Score(float("nan"), 0, 0)
    if max_tokens is None or n_pred <= max_tokens:
        B = max(1, min(batch_size, n_pred // max(warmup, 1)))
        L = math.ceil(n_pred / B)
        starts = [j * L for j in range(B)]
    else:
        B = max(1, min(batch_size, max_tokens))
        L = max_tokens // B
        starts = [j * (n_pred - L) // (B - 1) for j in range(B)] if B > 1 else [0]
    # Every window but the first (which starts the text) is primed on the tokens before it.
    prime_len = min([warmup, *starts[1:]])
    # Bound the logits held at once (B x T x V floats) for large vocabularies.
    seq_len = max(8, min(seq_len, 2**24 // (B * model.shape.vocab_size)))
    chars_of = np.asarray(token_chars.cpu() if isinstance(token_chars, torch.Tensor) else token_chars, np.int64)
    ctx = autocast or nullcontext()
    total = torch.zeros((), dtype=torch.float64, device=device)
    scored = chars = 0
    with ctx:
        state = model.zero_state(B, device)
        if B > 1 and prime_len > 0:
            prime = torch.from_numpy(np.stack([arr[s - prime_len : s] for s in starts[1:]]).astype(np.int64))
            primed = model.advance(prime.to(device))
            state = tuple(torch.cat([z[:, :1], p.to(z.dtype)], dim=1) for z, p in zip(state, primed))
        for t in range(0, L, seq_len):
            T = min(seq_len, L - t)
            x = np.zeros((B, T), np.int64)
            y = np.full((B, T), -100, np.int64)
            for j, s in enumerate(starts):
                a, b = s + t, min(s + t + T, s + L, n_pred)
                if b > a:
                    x[j, : b - a] = arr[a:b]
                    y[j, : b - a] = arr[a + 1 : b + 1]
            real = y[y >= 0]
            scored += len(real)
            chars += int(chars_of[real].sum())
            logits, _, state = model(torch.from_numpy(x).to(device), state)
            total += F.cross_entropy(
                logits.float().flatten(0, 1),
                torch.from_numpy(y).to(device).flatten(),
                reduction="sum",
                ignore_index=-100,
            )
            if deadline is not None and time.monotonic() > deadline:
                break
    model.train(was_training)
    return Score(float(total) / scored, scored, chars)


@torch.inference_mode()
def chunk_seconds(model: RNNLM, batch_size: int = 64, seq_len: int = 256, autocast=None) -> float:
    """Seconds of one (batch_size, seq_len) forward pass, the unit ``evaluate`` works in (the
    faster of two, after a short untimed pass): a budget's estimate before the first evaluation."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    seq_len = max(8, min(seq_len, 2**24 // (batch_size * model.shape.vocab_size)))
    x = torch.zeros(batch_size, seq_len, dtype=torch.long, device=device)
    times = []
    with autocast or nullcontext():
        model(x[:, :8], None)
        for _ in range(2):  # the faster of two: the one less disturbed by other work on the machine
            t0 = time.perf_counter()
            logits, _, _ = model(x, None)
            float(logits[0, 0, 0])  # wait for the device
            times.append(time.perf_counter() - t0)
    model.train(was_training)
    return min(times)


def chunks(tokens: int, batch_size: int = 64, seq_len: int = 256, warmup: int = 256) -> int:
    """About how many (batch_size, seq_len) passes ``evaluate`` makes for ``tokens`` predictions."""
    return math.ceil(tokens / (batch_size * seq_len)) + (1 if tokens > batch_size * warmup else 0)


@dataclass
class LineScore:
    """One line's score: ``loss`` in nats/token and ``bits_per_char`` (None when the line has too
    few tokens to score), over ``tokens`` predicted tokens."""

    line: str
    loss: float | None
    bits_per_char: float | None
    tokens: int
    left_out: Counter = field(default_factory=Counter)
    """Unseen tokens of the line left out of its score (``unknown='skip'``), counted."""

    def to_dict(self) -> dict:
        finite = self.loss is not None and math.isfinite(self.loss) and math.isfinite(self.bits_per_char)
        return {
            "line": self.line,
            "loss": self.loss if finite else None,
            "bits_per_char": self.bits_per_char if finite else None,
            "tokens": self.tokens,
            "left_out": sum(self.left_out.values()),
        }


@torch.inference_mode()
def score_sequences(
    model: RNNLM, seqs: list[list[int]], autocast=None, batch: int = 256, skip: list[int] | None = None
) -> list[tuple[float, int]]:
    """(summed loss in nats, tokens predicted) of each sequence on its own, from the zero state:
    every token after the first is predicted, but for the first ``skip[i]`` predictions of
    sequence i (a prompt's tokens: read as context, not scored). Sequences of similar length share
    a batch of at most ``batch`` sequences and about 2^24 logits; a sequence of fewer than two
    tokens gets (0.0, 0). The model runs in eval mode (no dropout) and is left in the mode it was in."""
    device = next(model.parameters()).device
    out = [(0.0, 0)] * len(seqs)
    order = sorted((i for i in range(len(seqs)) if len(seqs[i]) >= 2), key=lambda i: len(seqs[i]))
    was_training = model.training
    model.eval()
    with autocast or nullcontext():
        for idx in _line_batches(order, [len(s) for s in seqs], batch, model.shape.vocab_size):
            rows = [torch.tensor(seqs[i], dtype=torch.long) for i in idx]
            T = max(len(r) for r in rows) - 1
            x = torch.stack([F.pad(r[:-1], (0, T - len(r) + 1)) for r in rows]).to(device)
            y = torch.stack([F.pad(r[1:], (0, T - len(r) + 1), value=-100) for r in rows])
            if skip is not None:
                for j, i in enumerate(idx):
                    y[j, : skip[i]] = -100
            y = y.to(device)
            logits, _, _ = model(x, None)  # (B, T, V)
            nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none", ignore_index=-100).sum(1)
            for j, i in enumerate(idx):
                out[i] = (float(nll[j]), int((y[j] != -100).sum()))
    model.train(was_training)
    return out


def spaced_records(lengths: list[int], max_tokens: int | None) -> list[int]:
    """Indices of evenly spaced records whose predictions (length - 1 each) total at most
    ``max_tokens``, the same every time; every record when they all fit (or ``max_tokens`` is
    None). A records run's evaluations score these, as ``evaluate`` scores evenly spaced windows."""
    preds = [max(n - 1, 0) for n in lengths]
    total = sum(preds)
    if max_tokens is None or total <= max_tokens:
        return list(range(len(lengths)))
    k = max(1, int(len(lengths) * max_tokens / max(total, 1)))
    while True:
        picked = sorted({i * len(lengths) // k for i in range(k)})
        if sum(preds[i] for i in picked) <= max_tokens or k == 1:
            return picked
        k = max(1, int(k * 0.95))


def score_records(model: RNNLM, seqs: list[list[int]], token_chars: list[int], autocast=None) -> Score:
    """The mean loss over records, each scored on its own from its start token (``records.py``)."""
    scored = score_sequences(model, seqs, autocast)
    n = sum(k for _, k in scored)
    chars = sum(token_chars[t] for s in seqs for t in s[1:])
    return Score(sum(l for l, _ in scored) / max(n, 1), n, chars)


def score_lines(
    model: RNNLM,
    tok: Tokenizer,
    lines: list[str],
    unknown: str = "auto",
    autocast=None,
) -> list[LineScore]:
    """Each line on its own: as if it followed a newline, with its closing newline, or on a
    records model as a record from its start token to its end token; its tokens and its end are
    scored. ``unknown``: see ``tokenizer.scoring_mode``; unseen tokens left out are counted per
    line. Raises UnknownTokenError for unseen tokens when ``unknown`` is 'error'."""
    unknown = scoring_mode(tok, unknown)
    nl = tok.encode("\n", unknown="skip")
    results = [LineScore(line.removesuffix("\r"), None, None, 0) for line in lines]
    encoded = []
    for line, r in zip(lines, results):
        if tok.end_id is not None:
            seq, r.left_out = encode_record(tok, line, None, unknown)
        else:
            ids, r.left_out = tok.encode_counted(line, unknown)
            seq = nl + ids + nl
        encoded.append(seq)
    chars = tok.char_lengths()
    for r, seq, (loss, n) in zip(results, encoded, score_sequences(model, encoded, autocast)):
        if n:
            sc = Score(loss / n, n, sum(chars[t] for t in seq[1:]))
            r.loss, r.bits_per_char, r.tokens = round(sc.loss, 6), round(sc.bits_per_char, 6), n
    return results


def split_lines(text: str) -> list[str]:
    """``text`` cut at newlines only (str.splitlines would also cut at form feeds and other
    separators), without the empty line after a final newline: what per-line scoring scores."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _line_batches(order: list[int], lengths: list[int], most: int, vocab_size: int) -> Iterator[list[int]]:
    """Runs of ``order`` (sorted by length) of at most ``most`` lines and about 2^24 logits."""
    run: list[int] = []
    for i in order:
        if run and (len(run) >= most or (len(run) + 1) * lengths[i] * vocab_size > 2**24):
            yield run
            run = []
        run.append(i)
    if run:
        yield run
