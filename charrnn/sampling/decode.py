"""The next-token rule: greedy, temperature, top-k, top-p, drawn exactly from counter-based
uniform numbers, identically here (torch ops) and in the native kernel (kernels.c)."""

from __future__ import annotations

import ctypes

import torch

from charrnn.config import SampleConfig
from charrnn.sampling.native import build
from charrnn.sampling.native.abi import make_sampler


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Scaled logits (B, V) with tokens outside the top-k / the top-p nucleus set to -inf.

    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p``."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        # Stable: among equal logits the lower index comes first, as in the native kernel.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
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

    def __init__(self, cfg: SampleConfig, banned: list[int] | None = None, step: int = 0):
        self.cfg, self.banned = cfg, list(banned or [])
        self.lib = build.lib()
        self.c, self._keep = make_sampler(cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed, self.banned)
        self.c.step = step
        self._ban = torch.tensor(self.banned, dtype=torch.long)
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
            self.lib.charrnn_sample(
                B, V, logits.data_ptr(), logits.stride(0), ctypes.byref(self.c), out.data_ptr(), self._work.data_ptr()
            )
        else:
            if self.banned:
                logits = logits.index_fill(1, self._ban.to(logits.device), float("-inf"))
            u = [uniform(self.c.seed, b, self.c.step) for b in range(B)]
            out = _choose_torch(logits, self.cfg.temperature, self.cfg.top_k, self.cfg.top_p, u)
        self.c.step += 1
        return out


def _choose_torch(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, u: list[float]
) -> torch.Tensor:
    if not temperature > 0:
        return logits.argmax(dim=-1)
    # Shift by the maximum before scaling, as the kernel does: scaled logits are <= 0 and the most
    # likely token's is 0, so any positive temperature, however tiny, gives the right distribution
    # (down to the argmax, its limit) instead of inf - inf.
    z = logits.double()
    top = z.max(dim=-1, keepdim=True).values
    z = filter_logits(z - torch.where(torch.isfinite(top), top, torch.zeros_like(top)), temperature, top_k, top_p)
    cdf = torch.softmax(z, dim=-1).cumsum_(dim=-1)  # (B, V)
    total = cdf[:, -1:]
    target = torch.tensor(u, dtype=torch.float64, device=cdf.device)[:, None] * total
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))  # below the top, always
    drawn = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # Nothing left to draw from (every token banned, or NaN logits): the argmax, as the kernel does.
    empty = ~(total[:, 0] > 0)
    return torch.where(empty, logits.argmax(dim=-1), drawn) if empty.any() else drawn


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
