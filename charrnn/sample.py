"""Next-token choice (greedy, temperature, top-k, top-p) and the generation loop.

The prompt is fed once; after that each step feeds one sampled token per stream back in,
with the recurrent state kept (``Stepper``), so a token costs the same at any length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from charrnn.config import check_choice
from charrnn.device import pick_precision
from charrnn.errors import UsageError
from charrnn.model import RNNLM
from charrnn.step import Stepper
from charrnn.tokenizer import UNK, Tokenizer


@dataclass
class SampleConfig:
    length: int = 500
    """Tokens to generate per sample."""
    temperature: float = 1.0
    """0 means greedy."""
    top_k: int | None = None
    top_p: float | None = None
    num_samples: int = 1
    seed: int | None = None
    precision: str = "auto"
    """Weights of the step: fp32, or bf16 (next-token distributions agree to a KL of about 1e-5
    nats). auto: bf16 for 8 or more streams where the device has it (about 2x faster there),
    fp32 for fewer (no faster in bf16 on our CPU, so exactness wins)."""

    def __post_init__(self) -> None:
        if self.length < 0:
            raise UsageError(f"--length must be >= 0, not {self.length}")
        if not 0 <= self.temperature < math.inf:
            raise UsageError(f"--temp must be a number >= 0, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError(f"--top-k must be >= 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.num_samples < 1:
            raise UsageError(f"--num-samples must be >= 1, not {self.num_samples}")
        check_choice("--precision", self.precision, ("auto", "fp32", "bf16"))

    def step_dtype(self, model: RNNLM) -> torch.dtype:
        if self.precision == "auto":
            # Where training would autocast (bf16 CPUs, CUDA), half-width weights are supported.
            half = pick_precision("auto", model.emb.weight.device) != "fp32"
            return torch.bfloat16 if half and self.num_samples >= 8 else torch.float32
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Scaled logits (B, V) with tokens outside the top-k / the top-p nucleus set to -inf.

    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p``."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop = mass_before >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def choose(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, V): argmax when temperature is 0, else an exact
    draw from softmax(logits / temperature) restricted to the top-k and top-p sets.

    The draw inverts the cumulative distribution with one uniform number per row: token i is
    chosen when u falls in [cdf[i-1], cdf[i]), which has probability p[i] (and never for p[i] = 0).
    It is several times cheaper than ``torch.multinomial`` for a single row."""
    if temperature < 1e-6:  # below this, 1/temperature overflows: the draw is the argmax anyway
        return logits.argmax(dim=-1)
    if top_k is not None or top_p is not None:
        logits = filter_logits(logits, temperature, top_k, top_p)
    elif temperature != 1:
        logits = logits * (1.0 / temperature)
    cdf = torch.softmax(logits, dim=-1).cumsum_(dim=-1)  # (B, V)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=cdf.device).mul_(total)
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total, always
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def encode_prompt(tok: Tokenizer, prompt: str, unknown: str = "error") -> list[int]:
    ids = tok.encode(prompt, unknown=unknown)
    if not ids:
        # No prompt: start as a document would, after a newline where the model knows one.
        start = "\n" if "\n" in tok.stoi else None
        ids = [tok.stoi[start] if start else 0]
    return ids


def generate(
    model: RNNLM,
    prompt_ids: list[int],
    cfg: SampleConfig,
    banned: list[int] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every stream, (num_samples,), ``cfg.length`` times.

    The same seed gives the same tokens; greedy ignores the seed. ``banned`` tokens
    (the word model's <unk>) are never emitted."""
    B = cfg.num_samples
    stepper = Stepper(model, B, cfg.step_dtype(model))
    gen = torch.Generator(device=stepper.table.device)
    gen.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    ids = torch.tensor(prompt_ids, dtype=torch.long).expand(B, -1)
    logits = stepper.prefill(ids)
    ban = torch.tensor(banned or [], dtype=torch.long, device=logits.device)
    for _ in range(cfg.length):
        if len(ban):
            logits.index_fill_(1, ban, float("-inf"))
        nxt = choose(logits, cfg.temperature, cfg.top_k, cfg.top_p, gen)
        yield nxt
        logits = stepper.step(nxt)


def banned_tokens(tok: Tokenizer) -> list[int]:
    return [tok.stoi[UNK]] if UNK in tok.stoi and tok.level == "word" else []
