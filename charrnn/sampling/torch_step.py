"""The fast inference step: one token in, next-token logits out, O(1) per token.

``nn.LSTM`` called one token at a time spends most of its time in per-call overhead. ``Stepper``
prepares the weights once instead:
- layer 0's input projection is folded into a table, ``emb @ W_ih.T + biases`` (V, G*H), so the
  first layer costs one row lookup plus ``h @ W_hh.T``;
- deeper LSTM and RNN layers keep ``[x, h]`` side by side in one buffer and do one product
  against ``[W_ih, W_hh]``;
- every intermediate, and every view of one, is made once: no allocation or slicing per token.
The prompt goes through the model's own ``nn`` module once (``prefill``); ``step`` takes over
from its state. In fp32 the math is that of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (tested to float
tolerance). ``dtype=torch.bfloat16`` stores the big matrices in bf16 (half the bytes read per
token) while the state, gates and logits stay fp32.

Sampling an LSTM on CPU uses the native kernel's whole step instead (``native/kernel.py``); ``Stepper``
serves GPUs, GRU and RNN cells, fp32 batches, and machines without a C compiler (its LSTM cell
still runs natively where the kernel is built). ``NativeLSTM`` takes its prepared weights.
"""

from __future__ import annotations

import torch

from charrnn.model.lm import RNNLM, State
from charrnn.sampling.native import build


class _Linear:
    """``out = x @ W.T + b`` into a preallocated fp32 buffer, for batch 1 (matrix-vector) or B."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None, x: torch.Tensor, out: torch.Tensor, dtype: torch.dtype):
        self.w, self.b, self.x, self.out = w.to(dtype).contiguous(), b, x, out
        self.cast = dtype != torch.float32
        self.vector = x.size(0) == 1
        if self.cast:
            self.xc = torch.empty(x.shape, dtype=dtype, device=x.device)
            self.tmp = torch.empty(out.shape, dtype=dtype, device=x.device)
        if self.vector:
            self.x1, self.out1 = x[0], out[0]
            if self.cast:
                self.xc1, self.tmp1 = self.xc[0], self.tmp[0]
        self.wt = self.w.t()

    def __call__(self, accumulate: bool = False) -> None:
        """``accumulate``: add to what ``out`` holds (and ignore ``b``)."""
        if self.cast:
            self.xc.copy_(self.x)
            if self.vector:
                torch.mv(self.w, self.xc1, out=self.tmp1)
            else:
                torch.mm(self.xc, self.wt, out=self.tmp)
            if accumulate:
                self.out.add_(self.tmp)
            else:
                torch.add(self.b, self.tmp, out=self.out)
        elif self.vector:
            if accumulate:
                self.out1.addmv_(self.w, self.x1)
            else:
                torch.addmv(self.b, self.w, self.x1, out=self.out1)
        elif accumulate:
            self.out.addmm_(self.x, self.wt)
        else:
            torch.addmm(self.b, self.x, self.wt, out=self.out)


class Stepper:
    def __init__(self, model: RNNLM, batch_size: int = 1, dtype: torch.dtype = torch.float32):
        s = model.shape
        self.model, self.cell, self.L, self.H, self.B = model, s.cell, s.layers, s.hidden, batch_size
        rnn, dev, H, B = model.rnn, model.emb.weight.device, s.hidden, batch_size
        G = self.G = {"lstm": 4, "gru": 3, "rnn": 1}[s.cell]
        f32 = dict(device=dev, dtype=torch.float32)
        with torch.no_grad():
            w_ih = [getattr(rnn, f"weight_ih_l{i}").float() for i in range(s.layers)]
            w_hh = [getattr(rnn, f"weight_hh_l{i}").float() for i in range(s.layers)]
            b_ih = [getattr(rnn, f"bias_ih_l{i}").float() for i in range(s.layers)]
            b_hh = [getattr(rnn, f"bias_hh_l{i}").float() for i in range(s.layers)]
            if self.cell == "lstm":
                # Gates (i, f, g, o) -> (i, f, o, g): one sigmoid over a contiguous 3H slice.
                perm = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]).to(
                    dev
                )
                w_ih, w_hh = [w[perm] for w in w_ih], [w[perm] for w in w_hh]
                b_ih, b_hh = [b[perm] for b in b_ih], [b[perm] for b in b_hh]
            # GRU's hidden bias of the candidate sits inside r * (...), so it cannot fold into the table.
            table_bias = b_ih[0] + (b_hh[0] if self.cell != "gru" else 0)
            self.table = (model.emb.weight.float() @ w_ih[0].T + table_bias).contiguous()  # (V, G*H)

            # xh[l] = [input of layer l | h of layer l]; layer 0's input comes from the table.
            self.xh = [torch.zeros(B, H, **f32)] + [torch.zeros(B, 2 * H, **f32) for _ in range(1, s.layers)]
            self.hs = [x[:, -H:] for x in self.xh]
            self.next_in = [self.xh[l + 1][:, :H] for l in range(s.layers - 1)]
            self.c = [torch.zeros(B, H, **f32) for _ in range(s.layers)] if self.cell == "lstm" else None
            self.gates = torch.zeros(B, G * H, **f32)
            self.gh = torch.zeros(B, G * H, **f32)
            self.act = torch.zeros(B, 3 * H, **f32)
            self.tmp = torch.zeros(B, H, **f32)
            self.logits = torch.zeros(B, s.vocab_size, **f32)

            self.rec: list[_Linear] = []  # the recurrent product of each layer
            self.inp: list[_Linear | None] = [None]  # GRU's input product of layers above the first
            for l in range(s.layers):
                if l == 0:
                    bias = b_hh[0] if self.cell == "gru" else None
                    out = self.gh if self.cell == "gru" else self.gates
                    self.rec.append(_Linear(w_hh[0], bias, self.hs[0], out, dtype))
                elif self.cell == "gru":
                    self.inp.append(_Linear(w_ih[l], b_ih[l], self.next_in[l - 1], self.gates, dtype))
                    self.rec.append(_Linear(w_hh[l], b_hh[l], self.hs[l], self.gh, dtype))
                else:
                    w = torch.cat([w_ih[l], w_hh[l]], 1)
                    self.rec.append(_Linear(w, b_ih[l] + b_hh[l], self.xh[l], self.gates, dtype))
            # The head reads few bytes; fp32 keeps the logits exact.
            self.head = _Linear(
                model.head.weight.float(), model.head.bias.float(), self.hs[-1], self.logits, torch.float32
            )

        # On CPU the LSTM cell runs in the native kernel (one call instead of six torch ops).
        self.native = build.lib() if self.cell == "lstm" and dev.type == "cpu" else None
        if self.native is not None:
            self._cells = [
                (
                    B,
                    H,
                    self.gates.data_ptr(),
                    G * H,
                    self.c[l].data_ptr(),
                    H,
                    self.hs[l].data_ptr(),
                    self.hs[l].stride(0),
                    self.next_in[l].data_ptr() if l + 1 < s.layers else None,
                    2 * H,
                    torch.get_num_threads(),
                )
                for l in range(s.layers)
            ]
        a, g = self.act, self.gates
        self.i, self.f, self.o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H]
        self.ifo_pre, self.g_pre = g[:, : 3 * H], g[:, 3 * H :]
        self.rz, self.z, self.r = a[:, : 2 * H], a[:, H : 2 * H], a[:, :H]
        self.gi_rz, self.gi_n = g[:, : 2 * H], g[:, 2 * H :]
        self.gh_rz, self.gh_n = self.gh[:, : 2 * H], self.gh[:, 2 * H :]

    def set_state(self, state: State) -> None:
        """Take a model-style state: a tuple of (layers, B, H)."""
        for l in range(self.L):
            self.hs[l].copy_(state[0][l])
            if self.c is not None:
                self.c[l].copy_(state[1][l])
        for l in range(self.L - 1):
            self.next_in[l].copy_(self.hs[l])

    def get_state(self) -> State:
        h = torch.stack([h.clone() for h in self.hs])
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
        torch.index_select(self.table, 0, tok, out=self.gates)
        for l in range(self.L):
            h = self.hs[l]
            if self.cell == "lstm":
                self.rec[l](accumulate=l == 0)
                if self.native is not None:
                    self.native.charrnn_lstm_cell(*self._cells[l])  # writes the next layer's input too
                    continue
                self._lstm(self.c[l], h)
            elif self.cell == "gru":
                if l > 0:
                    self.inp[l]()
                self.rec[l]()
                self._gru(h)
            else:
                self.rec[l](accumulate=l == 0)
                torch.tanh(self.gates, out=h)
            if l + 1 < self.L:
                self.next_in[l].copy_(h)
        self.head()
        return self.logits

    def _lstm(self, c: torch.Tensor, h: torch.Tensor) -> None:
        torch.sigmoid(self.ifo_pre, out=self.act)
        torch.tanh(self.g_pre, out=self.tmp)
        c.mul_(self.f).addcmul_(self.i, self.tmp)
        torch.tanh(c, out=self.tmp)
        torch.mul(self.o, self.tmp, out=h)

    def _gru(self, h: torch.Tensor) -> None:
        torch.add(self.gi_rz, self.gh_rz, out=self.rz).sigmoid_()
        n = torch.addcmul(self.gi_n, self.r, self.gh_n, out=self.tmp).tanh_()
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        h.sub_(n).mul_(self.z).add_(n)
