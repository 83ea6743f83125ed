"""The fast inference step: one token in, next-token logits out, O(1) per token.

``nn.LSTM`` called one token at a time spends most of its time in per-call overhead (and in
oneDNN's set-up for batch 1). ``Stepper`` prepares the weights once instead:
- layer 0's input projection is folded into a table: ``emb @ W_ih.T + biases`` (V, G*H), so the
  first layer costs one row lookup plus ``h @ W_hh``;
- deeper LSTM and RNN layers keep ``[x, h]`` side by side in one buffer and do one matrix
  product against ``[W_ih; W_hh]``;
- every intermediate lives in a preallocated buffer, written with ``out=``: no allocation per token.
The prompt goes through the model's own ``nn`` module once (``prefill``), then ``step`` takes over
from its state. The math is the same as ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (tested to float tolerance).
"""

from __future__ import annotations

import torch

from charrnn.model import RNNLM, State


class Stepper:
    def __init__(self, model: RNNLM, batch_size: int = 1):
        s = model.shape
        self.model, self.cell, self.L, self.H, self.B = model, s.cell, s.layers, s.hidden, batch_size
        rnn, dev, H, B = model.rnn, model.emb.weight.device, s.hidden, batch_size
        self.G = {"lstm": 4, "gru": 3, "rnn": 1}[s.cell]
        G = self.G
        with torch.no_grad():
            w_ih = [getattr(rnn, f"weight_ih_l{i}").float() for i in range(s.layers)]
            w_hh = [getattr(rnn, f"weight_hh_l{i}").float() for i in range(s.layers)]
            b_ih = [getattr(rnn, f"bias_ih_l{i}").float() for i in range(s.layers)]
            b_hh = [getattr(rnn, f"bias_hh_l{i}").float() for i in range(s.layers)]
            if self.cell == "lstm":
                # Reorder gates (i, f, g, o) -> (i, f, o, g): one sigmoid over a contiguous 3H slice.
                perm = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]).to(dev)
                w_ih, w_hh = [w[perm] for w in w_ih], [w[perm] for w in w_hh]
                b_ih, b_hh = [b[perm] for b in b_ih], [b[perm] for b in b_hh]
            fold_hh_bias = self.cell != "gru"  # GRU's b_hn sits inside r * (...), so it stays apart
            table_bias = b_ih[0] + (b_hh[0] if fold_hh_bias else 0)
            self.table = (model.emb.weight.float() @ w_ih[0].T + table_bias).contiguous()  # (V, G*H)
            self.whh0 = w_hh[0].T.contiguous()  # (H, G*H)
            self.bhh = [b.contiguous() for b in b_hh]
            if self.cell == "gru":
                self.wih = [None] + [w.T.contiguous() for w in w_ih[1:]]
                self.whh = [w.T.contiguous() for w in w_hh]
                self.bih = b_ih
            else:
                # [x, h] @ [W_ih; W_hh]^T + (b_ih + b_hh) for layers above the first.
                self.wcat = [None] + [torch.cat([wi, wh], 1).T.contiguous() for wi, wh in zip(w_ih[1:], w_hh[1:])]
                self.bcat = [None] + [bi + bh for bi, bh in zip(b_ih[1:], b_hh[1:])]
            self.head_w = model.head.weight.float().T.contiguous()  # (H, V)
            self.head_b = model.head.bias.float().contiguous()
        f32 = dict(device=dev, dtype=torch.float32)
        # xh[l] = [input of layer l | h of layer l]; layer 0's input comes from the table.
        self.xh = [torch.zeros(B, H, **f32)] + [torch.zeros(B, 2 * H, **f32) for _ in range(1, s.layers)]
        self.c = [torch.zeros(B, H, **f32) for _ in range(s.layers)] if self.cell == "lstm" else None
        self.gates = torch.zeros(B, G * H, **f32)
        self.gh = torch.zeros(B, G * H, **f32)
        self.act = torch.zeros(B, 3 * H, **f32)
        self.tmp = torch.zeros(B, H, **f32)
        self.logits = torch.zeros(B, s.vocab_size, **f32)

    def h(self, layer: int) -> torch.Tensor:
        return self.xh[layer][:, -self.H :]

    def set_state(self, state: State) -> None:
        """Take a model-style state: tuple of (layers, B, H)."""
        for l in range(self.L):
            self.h(l).copy_(state[0][l])
            if self.c is not None:
                self.c[l].copy_(state[1][l])

    def get_state(self) -> State:
        h = torch.stack([self.h(l) for l in range(self.L)])
        return (h, torch.stack(self.c)) if self.c is not None else (h,)

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Run (B, T) prompt tokens through the model's own module; return the last logits (B, V)."""
        logits, _, state = self.model(ids.to(self.table.device), None)
        self.set_state(state)
        return self.logits.copy_(logits[:, -1].float())

    @torch.inference_mode()
    def step(self, tok: torch.Tensor) -> torch.Tensor:
        """Advance every stream by its token ``tok`` (B,); return logits (B, V), a buffer reused next step."""
        H, gates = self.H, self.gates
        torch.index_select(self.table, 0, tok, out=gates)
        for l in range(self.L):
            if l == 0:
                x_gates = gates
                if self.cell == "gru":
                    torch.addmm(self.bhh[0], self.h(0), self.whh0, out=self.gh)
                else:
                    gates.addmm_(self.h(0), self.whh0)
            elif self.cell == "gru":
                torch.addmm(self.bih[l], self.xh[l][:, :H], self.wih[l], out=gates)
                torch.addmm(self.bhh[l], self.h(l), self.whh[l], out=self.gh)
            else:
                torch.addmm(self.bcat[l], self.xh[l], self.wcat[l], out=gates)
            out = self.xh[l + 1][:, :H] if l + 1 < self.L else self.h(l)
            if self.cell == "lstm":
                self._lstm(gates, self.c[l], self.h(l))
            elif self.cell == "gru":
                self._gru(x_gates if l == 0 else gates, self.gh, self.h(l))
            else:
                torch.tanh(gates, out=self.tmp)
                self.h(l).copy_(self.tmp)
            if l + 1 < self.L:
                out.copy_(self.h(l))
        return torch.addmm(self.head_b, self.h(self.L - 1), self.head_w, out=self.logits)

    def _lstm(self, gates: torch.Tensor, c: torch.Tensor, h: torch.Tensor) -> None:
        H, act = self.H, self.act
        torch.sigmoid(gates[:, : 3 * H], out=act)
        g = torch.tanh(gates[:, 3 * H :], out=self.tmp)
        c.mul_(act[:, H : 2 * H]).addcmul_(act[:, :H], g)
        torch.tanh(c, out=self.tmp)
        torch.mul(act[:, 2 * H :], self.tmp, out=h)

    def _gru(self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> None:
        H, act = self.H, self.act[:, : 2 * H]
        torch.add(gi[:, : 2 * H], gh[:, : 2 * H], out=act)
        act.sigmoid_()
        n = torch.addcmul(gi[:, 2 * H :], act[:, :H], gh[:, 2 * H :], out=self.tmp).tanh_()
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        h.sub_(n).mul_(act[:, H:]).add_(n)
