"""Next-token choice (greedy, temperature, top-k, top-p) and the generation loop.

The prompt is fed once; after that each step feeds one sampled token per stream back in,
with the recurrent state kept (``Stepper``), so a token costs the same at any length.
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from charrnn import native
from charrnn.config import check_choice
from charrnn.device import pick_precision
from charrnn.errors import UsageError
from charrnn.model import RNNLM
from charrnn.native_step import NativeLSTM
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
    """Weights of the step: fp32, or bf16 (half the bytes read per token; next-token distributions
    agree to a KL of about 1e-5 nats). auto: bf16 where the device has it, else fp32."""

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
            return torch.bfloat16 if half else torch.float32
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


M64 = (1 << 64) - 1


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def uniform(seed: int, index: int, step: int) -> float:
    """The uniform number in [0, 1) for stream ``index`` at ``step`` (kernels.c computes the same):
    a pure function of its arguments, so sample i of a seed does not depend on how many are drawn."""
    z = _mix((seed + 0x9E3779B97F4A7C15) & M64)
    z = _mix(z ^ ((index * 0xD1B54A32D192ED03) & M64))
    z = _mix((z + step * 0x9E3779B97F4A7C15) & M64)
    return (z >> 11) * 2.0**-53


class Chooser:
    """Draws the next token of every stream from its logits (B, V), one call per step.

    Greedy is the argmax; otherwise an exact draw from softmax(logits / temperature) restricted
    to the top-k and top-p sets, by inverting the cumulative distribution with one uniform number
    per row: token i is chosen when u falls in [cdf[i-1], cdf[i]), which has probability p[i] (and
    never for p[i] = 0). The native kernel does this on CPU; torch ops elsewhere, with the same
    uniform numbers. ``banned`` tokens are never chosen."""

    def __init__(self, cfg: "SampleConfig", banned: list[int] | None = None, step: int = 0):
        self.cfg, self.banned = cfg, list(banned or [])
        self.seed = (cfg.seed if cfg.seed is not None else 0) & M64
        self.lib = native.lib()
        self._ban = torch.tensor(self.banned, dtype=torch.long)
        self.c = native.Sampler(cfg.temperature, cfg.top_p if cfg.top_p is not None else 1.0, cfg.top_k or 0,
                                len(self.banned), self._ban.data_ptr(), self.seed, step, 0)
        self._work = torch.empty(0)

    @property
    def step(self) -> int:
        return self.c.step

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        B, V = logits.shape
        if self.lib is not None and logits.device.type == "cpu":
            logits = logits.float()
            if logits.stride(1) != 1:
                logits = logits.contiguous()
            if self._work.numel() < 4 * V:
                self._work = torch.empty(4 * V)
            out = torch.empty(B, dtype=torch.long)
            self.lib.charrnn_sample(B, V, logits.data_ptr(), logits.stride(0), ctypes.byref(self.c), out.data_ptr(), self._work.data_ptr())
        else:
            if self.banned:
                logits = logits.index_fill(1, self._ban.to(logits.device), float("-inf"))
            u = [uniform(self.seed, b, self.c.step) for b in range(B)]
            out = _choose_torch(logits, self.cfg.temperature, self.cfg.top_k, self.cfg.top_p, u)
        self.c.step += 1
        return out


def _choose_torch(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, u: list[float]) -> torch.Tensor:
    if temperature < 1e-6:  # below this, 1/temperature overflows: the draw is the argmax anyway
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.double(), temperature, top_k, top_p)
    cdf = torch.softmax(logits, dim=-1).cumsum_(dim=-1)  # (B, V)
    total = cdf[:, -1:]
    target = torch.tensor(u, dtype=torch.float64, device=cdf.device)[:, None] * total
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))  # below the top, always
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)


def choose(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    step: int = 0,
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, V), as ``Chooser`` draws it; row b is stream b."""
    cfg = SampleConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return Chooser(cfg, step=step)(logits)


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
    """Yield the next tokens of every stream in chunks (num_samples, n), ``cfg.length`` in all.

    The same seed gives the same tokens; greedy ignores the seed. ``banned`` tokens (the word
    model's <unk>) are never emitted. LSTM sampling on CPU runs in the native kernel where it can
    (``NativeLSTM.supports``), which draws a chunk of tokens per call; chunks grow to about 20 ms
    of work, so text still streams."""
    B, dev = cfg.num_samples, model.emb.weight.device
    chooser = Chooser(cfg, banned)
    ids = torch.tensor(prompt_ids, dtype=torch.long).expand(B, -1)
    dtype = cfg.step_dtype(model)
    if NativeLSTM.supports(model, B, dtype):
        net = NativeLSTM(model, dtype, B)
        net.prefill(ids)
        done, n = 0, 1
        while done < cfg.length:
            n = min(n, cfg.length - done)
            t0 = time.perf_counter()
            yield net.generate(chooser, n)
            done += n
            n = max(1, min(4 * n, 1024, int(0.02 * n / max(time.perf_counter() - t0, 1e-9))))
        return
    stepper = Stepper(model, B, dtype)
    logits = stepper.prefill(ids)
    for i in range(cfg.length):
        nxt = chooser(logits)
        yield nxt[:, None]
        if i + 1 < cfg.length:
            logits = stepper.step(nxt.to(dev))


def banned_tokens(tok: Tokenizer) -> list[int]:
    return [tok.stoi[UNK]] if UNK in tok.stoi and tok.level == "word" else []
