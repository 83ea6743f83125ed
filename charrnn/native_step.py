"""LSTM streams stepped by the native kernel: weights packed once, no Python per token.

Takes ``Stepper``'s prepared weights (layer 0's input folded into a table, deeper layers'
``[W_ih | W_hh]`` side by side, gates ordered i, f, o, g), pads them to the kernel's blocks and
packs them (see kernels.c). One stream uses matrix-vector products, fp32 or bf16; in fp32 its
logits are those of ``nn.LSTM`` to float tolerance. Several streams need bf16 weights and AMX
tiles (``NativeLSTM.supports``), where one product serves every stream.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from charrnn import native
from charrnn.model import RNNLM
from charrnn.step import Stepper


def _up(n: int, m: int) -> int:
    return -(-n // m) * m


def pack(w: torch.Tensor, bf16: bool) -> torch.Tensor:
    """(R, K) fp32 -> the kernel's blocked layout, R padded to 16 and K to 32 with zeros."""
    R, K = w.shape
    Rp, Kp = _up(R, 16), _up(K, 32)
    w = F.pad(w, (0, Kp - K, 0, Rp - R))
    if bf16:
        return w.to(torch.bfloat16).view(Rp // 16, 16, Kp // 2, 2).permute(0, 2, 1, 3).contiguous()
    return w.view(Rp // 16, 16, Kp).permute(0, 2, 1).contiguous()


def _ptrs(ts: list[torch.Tensor | None]):
    return (ctypes.c_void_p * len(ts))(*[t.data_ptr() if t is not None else None for t in ts])


class NativeLSTM:
    @staticmethod
    def supports(model: RNNLM, streams: int, dtype: torch.dtype) -> bool:
        lib = native.lib()
        if lib is None or model.shape.cell != "lstm" or model.emb.weight.device.type != "cpu":
            return False
        return streams == 1 or (dtype == torch.bfloat16 and lib.amx)

    def __init__(self, model: RNNLM, dtype: torch.dtype = torch.float32, streams: int = 1):
        if not self.supports(model, streams, dtype):
            raise ValueError("the native kernel cannot step this model here")
        s = model.shape
        self.lib, self.model, self.V, self.H, self.L, self.B = native.lib(), model, s.vocab_size, s.hidden, s.layers, streams
        bf16 = dtype == torch.bfloat16
        Bp = 1 if streams == 1 else _up(streams, 16)
        ref = Stepper(model, 1)
        H, rows, Vp = s.hidden, _up(4 * s.hidden, 16), _up(self.V, 16)
        self.table = F.pad(ref.table, (0, rows - 4 * H)).contiguous()
        self.w = [pack(lin.w, bf16) for lin in ref.rec]
        self.K = [_up(lin.w.size(1), 32) for lin in ref.rec]
        self.bias = [None] + [F.pad(lin.b, (0, rows - 4 * H)).contiguous() for lin in ref.rec[1:]]
        self.head_w = pack(ref.head.w, False)
        self.head_b = F.pad(ref.head.b, (0, Vp - self.V)).contiguous()
        # 32 spare zeros: the head reads the last layer's h through a K padded to 32.
        self.xh = [torch.zeros(Bp * k + 32) for k in self.K]
        self.c = [torch.zeros(streams, H) for _ in range(s.layers)]
        self.gates = torch.zeros(Bp, rows)
        self.logits_buf = torch.zeros(Bp, Vp)
        self.logits = self.logits_buf[:streams, : self.V]
        self.scratch = torch.zeros(Bp * max(self.K))
        self.work = torch.zeros(4 * self.V)
        self._keep = (_ptrs(self.w), (ctypes.c_int32 * s.layers)(*self.K), _ptrs(self.bias), _ptrs(self.xh), _ptrs(self.c))
        w, K, bias, xh, c = self._keep
        self.net = native.Net(
            s.layers, H, self.V, int(bf16), torch.get_num_threads(), rows, Vp, streams, Bp, int(streams > 1),
            self.table.data_ptr(), w, K, bias, self.head_w.data_ptr(), self.head_b.data_ptr(), _up(H, 32),
            xh, c, self.gates.data_ptr(), self.logits_buf.data_ptr(), self.scratch.data_ptr(), self.work.data_ptr(),
        )

    def h(self, layer: int) -> torch.Tensor:
        """The hidden state of ``layer``, (B, H): a view of the kernel's buffer."""
        rows = self.xh[layer][: self.B * self.K[layer]].view(self.B, self.K[layer])
        return rows[:, : self.H] if layer == 0 else rows[:, self.H : 2 * self.H]

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Run (B, T) prompt tokens through the model's own module; return the last logits (B, V)."""
        logits, _, (h, c) = self.model(ids, None)
        for l in range(self.L):
            self.h(l).copy_(h[l])
            self.c[l].copy_(c[l])
            if l + 1 < self.L:
                self.xh[l + 1][: self.B * self.K[l + 1]].view(self.B, -1)[:, : self.H].copy_(h[l])
        return self.logits.copy_(logits[:, -1].float())

    def step(self, toks: torch.Tensor) -> torch.Tensor:
        """Feed one token per stream (B,); return the next-token logits (B, V), a buffer reused next step."""
        toks = toks.to(torch.long).contiguous()
        self.lib.charrnn_lstm_step(ctypes.byref(self.net), toks.data_ptr())
        return self.logits

    def generate(self, chooser, n: int) -> torch.Tensor:
        """Draw n tokens per stream with ``chooser``'s settings, feeding each back in: (B, n)."""
        out = torch.empty(self.B, n, dtype=torch.long)
        self.lib.charrnn_lstm_generate(ctypes.byref(self.net), ctypes.byref(chooser.c), n, out.data_ptr())
        return out
