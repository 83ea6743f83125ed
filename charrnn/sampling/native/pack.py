"""Packing a torch LSTM's weights for the native kernel: the only module of native/ that imports torch.

``pack_model`` takes ``Stepper``'s prepared weights (layer 0's input folded into a table, deeper
layers' ``[W_ih | W_hh]`` side by side, gates ordered i, f, o, g), pads them to the kernel's
blocks and packs them into one blob (see kernels.c and kernel.py); ``cache_pack`` also stores it
for the checkpoint it came from (cache.py). One stream uses
register-tiled products, fp32 or bf16; in fp32 its logits are those of ``nn.LSTM`` to float
tolerance. Several streams share each weight load (AMX tiles, bf16 dot products or fp32
multiply-adds, whichever the CPU has: ``Kernel.supports``).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from charrnn.data.tokenizer import Tokenizer
from charrnn.model.lm import RNNLM
from charrnn.sampling.native import build
from charrnn.sampling.native.cache import save_pack
from charrnn.sampling.native.kernel import Kernel, aligned_buffer, round_up
from charrnn.sampling.torch_step import Stepper


def pack(w: torch.Tensor, bf16: bool) -> torch.Tensor:
    """(R, K) fp32 -> the kernel's blocked layout, R padded to 16 and K to 32 with zeros."""
    R, K = w.shape
    Rp, Kp = round_up(R, 16), round_up(K, 32)
    w = F.pad(w, (0, Kp - K, 0, Rp - R))
    if bf16:
        return w.to(torch.bfloat16).view(Rp // 16, 16, Kp // 2, 2).permute(0, 2, 1, 3).contiguous()
    return w.view(Rp // 16, 16, Kp).permute(0, 2, 1).contiguous()


@torch.no_grad()
def pack_model(model: RNNLM, dtype: torch.dtype) -> tuple[dict[str, Any], bytearray, int]:
    """(header, blob, offset): every array the kernel reads, packed, 64-byte aligned."""
    s, bf16 = model.shape, dtype == torch.bfloat16
    ref = Stepper(model, 1)
    H, rows = s.hidden, round_up(4 * s.hidden, 16)
    arrays = {"table": F.pad(ref.table, (0, rows - 4 * H))}
    for l, lin in enumerate(ref.rec):
        arrays[f"w{l}"] = pack(lin.w, bf16)
        if l > 0:
            arrays[f"b{l}"] = F.pad(lin.b, (0, rows - 4 * H))
    arrays["head_w"] = pack(ref.head.w, False)
    arrays["head_b"] = F.pad(ref.head.b, (0, round_up(s.vocab_size, 16) - s.vocab_size))
    where, nbytes = {}, 0
    for name, t in arrays.items():
        where[name] = (nbytes, t.numel() * t.element_size())
        nbytes = round_up(nbytes + where[name][1], 64)
    blob, offset = aligned_buffer(nbytes)
    base = ctypes.addressof(ctypes.c_char.from_buffer(blob)) + offset
    for name, t in arrays.items():
        t = t.contiguous()
        ctypes.memmove(base + where[name][0], t.data_ptr(), where[name][1])
    header = {
        "layers": s.layers,
        "hidden": H,
        "vocab": s.vocab_size,
        "rows": rows,
        "bf16": bf16,
        "K": [round_up(lin.w.size(1), 32) for lin in ref.rec],
        "arrays": where,
        "nbytes": nbytes,
    }
    return header, blob, offset


class NativeLSTM:
    """A ``Kernel`` over a model's packed weights, with torch views of its logits and state."""

    @staticmethod
    def supports(model: RNNLM, streams: int, dtype: torch.dtype, amx: bool = True) -> bool:
        lib = build.lib()
        if lib is None or model.shape.cell != "lstm" or model.emb.weight.device.type != "cpu":
            return False
        return Kernel.supports(lib, {"bf16": dtype == torch.bfloat16}, streams, amx)

    def __init__(self, model: RNNLM, dtype: torch.dtype = torch.float32, streams: int = 1, packed=None):
        if not self.supports(model, streams, dtype):
            raise ValueError("the native kernel cannot step this model here")
        self.packed = packed or pack_model(model, dtype)
        self.kernel = k = Kernel(build.lib(), *self.packed, streams)
        self.B, self.H = streams, model.shape.hidden
        self.logits = torch.frombuffer(k.logits, dtype=torch.float32).view(-1, k.head_rows)[:streams, : k.V]

    def h(self, layer: int) -> torch.Tensor:
        """The hidden state of ``layer``, (B, H): a view of the kernel's buffer."""
        k = self.kernel
        rows = torch.frombuffer(k.xh[layer], dtype=torch.float32)[: self.B * k.K[layer]].view(self.B, -1)
        return rows[:, : self.H] if layer == 0 else rows[:, self.H : 2 * self.H]

    def c(self, layer: int) -> torch.Tensor:
        return torch.frombuffer(self.kernel.c[layer], dtype=torch.float32).view(self.B, self.H)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed (B, T) prompt tokens from the zero state; return the last logits (B, V)."""
        self.kernel.prefill(ids.tolist())
        return self.logits

    def step(self, toks: torch.Tensor) -> torch.Tensor:
        """Feed one token per stream (B,); return the next-token logits (B, V), a buffer reused next step."""
        self.kernel.step(toks.tolist())
        return self.logits


def cache_pack(
    pack_file: Path | None,
    model: RNNLM,
    tok: Tokenizer | None,
    dtype: torch.dtype,
    streams: int = 1,
    amx: bool = True,
) -> tuple[dict[str, Any], bytearray, int] | None:
    """Pack ``model`` in ``dtype`` with its tokenizer, and cache the pack at ``pack_file`` (a
    ``cache.pack_path`` taken before the weights were read, so a checkpoint rewritten since is
    never paired with older weights); None where the kernel cannot run ``streams`` streams of it."""
    if not NativeLSTM.supports(model, streams, dtype, amx):
        return None
    header, blob, offset = pack_model(model, dtype)
    header["tokenizer"] = tok.to_dict() if tok is not None else None
    if pack_file is not None:
        save_pack(pack_file, header, blob, offset)
    return header, blob, offset
