"""Loss of a model on a whole token sequence: every token after the first is scored once.

The text is cut into B chunks that run side by side. Each chunk (but the first, which
starts the text) is first primed on the ``warmup`` tokens before it without scoring them,
so every prediction sees at least that much context, as if the text were read in one pass.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charrnn.model import RNNLM


@dataclass
class Score:
    loss: float
    """Mean nats per token."""
    tokens: int
    chars: int

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.tokens / max(self.chars, 1) / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    def to_dict(self) -> dict:
        return {
            "loss": round(self.loss, 6),
            "bits_per_char": round(self.bits_per_char, 6),
            "perplexity": round(self.perplexity, 4),
            "tokens": self.tokens,
            "chars": self.chars,
        }


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
