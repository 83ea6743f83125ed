"""The language model: embedding -> N recurrent layers -> linear head over the vocabulary.

The model does no I/O. Its recurrent state is always a tuple of (layers, B, H) tensors:
``(h, c)`` for an LSTM, ``(h,)`` for a GRU or a plain RNN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

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
        self.drop = nn.Dropout(shape.dropout)
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
        """Next-token logits for every position.

        ``idx``: token ids (B, T), int64. ``state``: the recurrent state to start from, a tuple of
        (layers, B, H) tensors (``(h, c)`` for an LSTM, ``(h,)`` otherwise), None for zeros.
        ``targets``: the next ids (B, T), or None. Returns ``(logits, loss, state)``: logits
        (B, T, V) in nats (unnormalised log-probabilities), the mean cross-entropy over all B*T
        positions in nats/token (None without targets), and the state after the last position."""
        x = self.drop(self.emb(idx))  # (B, T, E)
        rnn_state = None if state is None else (state if self.shape.cell == "lstm" else state[0])
        out, new = self.rnn(x, rnn_state)  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        loss = None
        if targets is not None:
            # The mean over predicted positions; a batch of padding only (-100 targets: a rank whose
            # record streams ran out) has loss 0 and no gradient, where the plain mean gives NaN.
            flat = targets.flatten()
            total = F.cross_entropy(logits.float().flatten(0, 1), flat, reduction="sum")
            loss = total / (flat != -100).sum().clamp(min=1)
        return logits, loss, (tuple(new) if isinstance(new, tuple) else (new,))

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
