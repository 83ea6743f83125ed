"""Loss of a model on a token sequence (``evaluate``) and on lines one by one (``score_lines``).

``evaluate`` scores every token after the first once. The text is cut into B chunks that run
side by side. Each chunk (but the first, which starts the text) is first primed on the
``warmup`` tokens before it without scoring them, so every prediction sees at least that much
context, as if the text were read in one pass.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from charrnn.model import RNNLM
from charrnn.tokenizer import Tokenizer, scoring_mode


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
    ids: torch.Tensor,
    token_chars: list[int] | torch.Tensor,
    batch_size: int = 64,
    seq_len: int = 256,
    warmup: int = 256,
    autocast=None,
) -> Score:
    """``token_chars[i]`` is the length in characters of token i, for bits per character."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = ids.to(device=device, dtype=torch.long)
    n_pred = len(ids) - 1
    if n_pred < 1:
        return Score(float("nan"), 0, 0)
    B = max(1, min(batch_size, n_pred // max(warmup, 1)))
    L = math.ceil(n_pred / B)
    pad = B * L - n_pred
    x = F.pad(ids[:-1], (0, pad)).view(B, L)
    y = F.pad(ids[1:], (0, pad), value=-100).view(B, L)
    # Bound the logits held at once (B x T x V floats) for large vocabularies.
    seq_len = max(8, min(seq_len, 2**24 // (B * model.shape.vocab_size)))
    ctx = autocast or nullcontext()
    with ctx:
        state = model.zero_state(B, device)
        if B > 1 and warmup > 0:
            # L >= warmup, so every chunk but the first has a full warmup before it.
            prime = torch.stack([ids[j * L - warmup : j * L] for j in range(1, B)])
            _, _, primed = model(prime, None)
            state = tuple(torch.cat([z[:, :1], p.to(z.dtype)], dim=1) for z, p in zip(state, primed))
        total = torch.zeros((), dtype=torch.float64, device=device)
        for t in range(0, L, seq_len):
            logits, _, state = model(x[:, t : t + seq_len], state)
            total += F.cross_entropy(logits.float().flatten(0, 1), y[:, t : t + seq_len].flatten(), reduction="sum", ignore_index=-100)
    model.train(was_training)
    chars = int(torch.as_tensor(token_chars, device=device)[ids[1:]].sum())
    return Score(float(total) / n_pred, n_pred, chars)


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
        return {"line": self.line, "loss": self.loss if finite else None,
                "bits_per_char": self.bits_per_char if finite else None, "tokens": self.tokens,
                "left_out": sum(self.left_out.values())}


@torch.inference_mode()
def score_sequences(model: RNNLM, seqs: list[list[int]], autocast=None, batch: int = 256) -> list[tuple[float, int]]:
    """(summed loss in nats, tokens predicted) of each sequence on its own, from the zero state:
    every token after the first is predicted. Sequences of similar length share a batch of at most
    ``batch`` sequences and about 2^24 logits; a sequence of fewer than two tokens gets (0.0, 0)."""
    device = next(model.parameters()).device
    out = [(0.0, 0)] * len(seqs)
    order = sorted((i for i in range(len(seqs)) if len(seqs[i]) >= 2), key=lambda i: len(seqs[i]))
    with autocast or nullcontext():
        for idx in _line_batches(order, [len(s) for s in seqs], batch, model.shape.vocab_size):
            rows = [torch.tensor(seqs[i], dtype=torch.long) for i in idx]
            T = max(len(r) for r in rows) - 1
            x = torch.stack([F.pad(r[:-1], (0, T - len(r) + 1)) for r in rows]).to(device)
            y = torch.stack([F.pad(r[1:], (0, T - len(r) + 1), value=-100) for r in rows]).to(device)
            logits, _, _ = model(x, None)  # (B, T, V)
            nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none", ignore_index=-100).sum(1)
            for j, i in enumerate(idx):
                out[i] = (float(nll[j]), len(rows[j]) - 1)
    return out


def score_records(model: RNNLM, seqs: list[list[int]], token_chars: list[int], autocast=None) -> Score:
    """The mean loss over records, each scored on its own from its start token (``records.py``)."""
    scored = score_sequences(model, seqs, autocast)
    n = sum(k for _, k in scored)
    chars = sum(token_chars[t] for s in seqs for t in s[1:])
    return Score(sum(l for l, _ in scored) / max(n, 1), n, chars)


def score_lines(
    model: RNNLM, tok: Tokenizer, lines: list[str], unknown: str = "auto", autocast=None,
    bounds: tuple[list[int], list[int]] | None = None,
) -> list[LineScore]:
    """Each line on its own, between the ids ``bounds`` (default: as if it followed a newline, and
    with its closing newline): its tokens and its end are scored. ``unknown``: see
    ``tokenizer.scoring_mode``; unseen tokens left out are counted per line. Raises
    UnknownTokenError for unseen tokens when ``unknown`` is 'error'."""
    unknown = scoring_mode(tok, unknown)
    nl = tok.encode("\n", unknown="skip")
    head, tail = bounds or (nl, nl)
    results = [LineScore(line.removesuffix("\r"), None, None, 0) for line in lines]
    encoded = []
    for line, r in zip(lines, results):
        ids, r.left_out = tok.encode_counted(line, unknown)
        encoded.append(head + ids + tail)
    chars = tok.char_lengths()
    for r, seq, (loss, n) in zip(results, encoded, score_sequences(model, encoded, autocast)):
        if n:
            sc = Score(loss / n, n, sum(chars[t] for t in seq[1:]))
            r.loss, r.bits_per_char, r.tokens = round(sc.loss, 6), round(sc.bits_per_char, 6), n
    return results


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
