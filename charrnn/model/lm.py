"""The language model: embedding -> N recurrent layers -> linear head over the vocabulary.

The model does no I/O. Its recurrent state is always a tuple of (layers, B, H) tensors:
``(h, c)`` for an LSTM, ``(h,)`` for a GRU or a plain RNN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from charrnn.model.loss import cross_entropy_sum

State = tuple[torch.Tensor, ...]

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass
class ModelShape:
    """Everything needed to rebuild the network from a checkpoint."""

    vocab_size: int
    cell: str
    layers: int
    hidden: int
    embed: int
    dropout: float


class RNNLM(nn.Module):
    """A recurrent language model over a vocabulary of ``shape.vocab_size`` tokens."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.emb = nn.Embedding(shape.vocab_size, shape.embed)
        self.rnn = _CELLS[shape.cell](
            shape.embed,
            shape.hidden,
            num_layers=shape.layers,
            dropout=shape.dropout if shape.layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(shape.hidden, shape.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.emb.weight, std=0.1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        if self.shape.cell == "lstm":
            # Forget gates start open (bias 1), so early gradients survive long sequences.
            H = self.shape.hidden
            for layer in range(self.shape.layers):
                getattr(self.rnn, f"bias_ih_l{layer}").data[H : 2 * H].fill_(1.0)
                getattr(self.rnn, f"bias_hh_l{layer}").data[H : 2 * H].zero_()

    def forward(
        self, idx: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """Next-token logits for every position, or the loss against ``targets``.

        ``idx``: token ids (B, T), int64. ``state``: the recurrent state to start from, a tuple of
        (layers, B, H) tensors (``(h, c)`` for an LSTM, ``(h,)`` otherwise), None for zeros.
        ``targets``: the next ids (B, T), -100 where nothing is predicted, or None. Returns
        ``(logits, loss, state)``: without targets the logits (B, T, V) in nats (unnormalised
        log-probabilities) and loss None; with targets logits None (a large vocabulary's are
        never held whole, see loss.py) and the mean cross-entropy over the predicted positions in
        nats/token; and the state after the last position."""
        out, new = self._recurrent(self._drop(self.emb(idx)), state)  # (B, T, H)
        out = self._drop(out)
        if targets is None:
            return self.head(out), None, new
        # The mean over predicted positions; a batch of padding only (-100 targets: a rank whose
        # record streams ran out) has loss 0 and no gradient, where the plain mean gives NaN.
        flat = targets.flatten()
        total = cross_entropy_sum(out.flatten(0, 1), self.head.weight, self.head.bias, flat)
        return None, total / (flat != -100).sum().clamp(min=1), new

    def advance(self, idx: torch.Tensor, state: State | None = None) -> State:
        """The state after reading ``idx`` (B, T) from ``state`` (None: zeros), without the
        output layer: priming costs no (B, T, V) logits."""
        return self._recurrent(self._drop(self.emb(idx)), state)[1]

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Locked (variational) dropout of ``x`` (B, T, D) while training: one mask per sequence
        and feature, the same at every time step (Gal and Ghahramani 2016, "A Theoretically
        Grounded Application of Dropout in Recurrent Neural Networks"; AWD-LSTM's LockedDropout),
        the usual dropout of recurrent language models. It draws T times fewer random numbers: on
        a 2-core CPU, masks per element took 18% of a 2x320 training step (bench/RESULTS.md)."""
        p = self.shape.dropout
        if not self.training or p == 0.0:
            return x
        return x * x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1.0 - p).div_(1.0 - p)

    def _recurrent(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The recurrent layers over ``x`` (B, T, E): their output (B, T, H) and final state.

        On a CPU a stack of layers runs one layer at a time through the same kernel
        (``torch.lstm`` and kin, the functions ``nn.LSTM`` calls), with locked dropout
        (``_drop``) between layers: a 2x320 LSTM trained 5-10% faster that way than as one
        multi-layer call with the same losses (bench/RESULTS.md, "Where a training step goes"),
        and in fp32 without dropout the outputs are bit-identical. Elsewhere
        (cuDNN) the module's own multi-layer call, whose dropout between layers is per element."""
        cell, L = self.shape.cell, self.shape.layers
        if L == 1 or x.device.type != "cpu":
            rnn_state = None if state is None else (state if cell == "lstm" else state[0])
            out, new = self.rnn(x, rnn_state)
            return out, (tuple(new) if isinstance(new, tuple) else (new,))
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        finals: list[list[torch.Tensor]] = [[] for _ in state]
        for l in range(L):
            if l:
                x = self._drop(x)
            params = [getattr(self.rnn, f"{n}_l{l}") for n in names]
            if cell == "lstm":
                x, h, c = torch.lstm(
                    x, (state[0][l : l + 1], state[1][l : l + 1]), params, True, 1, 0.0, self.training, False, True
                )
                layer_state = (h, c)
            else:
                run = torch.gru if cell == "gru" else torch.rnn_tanh
                x, h = run(x, state[0][l : l + 1], params, True, 1, 0.0, self.training, False, True)
                layer_state = (h,)
            for kept, s in zip(finals, layer_state):
                kept.append(s)
        return x, tuple(torch.cat(kept) for kept in finals)

    @torch.no_grad()
    def load_parent(self, weights: dict[str, torch.Tensor]) -> None:
        """Load a parent model's weights for fine-tuning. Where this model's vocabulary is larger
        (tokens appended, see ``Tokenizer.grown``), the new embedding and output rows start at the
        mean of the parent's rows, so a new token begins as an average known one."""
        weights = dict(weights)
        for name in ("emb.weight", "head.weight", "head.bias"):
            old, want = weights[name], self.state_dict()[name]
            if old.shape[0] < want.shape[0]:
                extra = old.mean(dim=0, keepdim=True).expand(want.shape[0] - old.shape[0], *old.shape[1:])
                weights[name] = torch.cat([old, extra])
        self.load_state_dict(weights)

    def zero_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        n = 2 if self.shape.cell == "lstm" else 1
        z = torch.zeros(self.shape.layers, batch_size, self.shape.hidden, device=device)
        return tuple(z.clone() for _ in range(n))

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.emb.weight.numel() if non_embedding else n

    def shape_dict(self) -> dict:
        return asdict(self.shape)


def detach(state: State) -> State:
    return tuple(s.detach() for s in state)
