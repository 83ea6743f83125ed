"""The fast inference step computes exactly what the model's own nn.LSTM/GRU/RNN forward does,
with the native LSTM cell and without it (the ``engine`` fixture)."""

from __future__ import annotations

import pytest
import torch

from charrnn.model.lm import RNNLM, ModelShape
from charrnn.sampling.torch_step import Stepper

ATOL = 1e-5
V, T = 23, 30


def make_model(cell: str, layers: int, hidden: int = 32, embed: int = 16, seed: int = 0) -> RNNLM:
    torch.manual_seed(seed)
    model = RNNLM(ModelShape(vocab_size=V, cell=cell, layers=layers, hidden=hidden, embed=embed, dropout=0.2))
    with torch.no_grad():
        # Larger, non-zero weights and biases than the init, so every gate and bias term matters.
        for name, p in model.named_parameters():
            if name.startswith("rnn."):
                p.add_(torch.randn_like(p) * 0.3)
        model.head.bias.normal_(0, 0.5)
    return model.eval()  # dropout off: Stepper has none


CASES = [(cell, layers, batch) for cell in ("lstm", "gru", "rnn") for layers in (1, 2) for batch in (1, 3)]


@pytest.mark.parametrize("cell, layers, batch", CASES)
def test_step_logits_equal_forward_logits(cell, layers, batch, engine):
    model = make_model(cell, layers)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(V, (batch, T), generator=g)
    with torch.no_grad():
        ref, _, ref_state = model(ids)
    stepper = Stepper(model, batch)
    for t in range(T):
        got = stepper.step(ids[:, t]).clone()
        torch.testing.assert_close(got, ref[:, t], atol=ATOL, rtol=0, msg=lambda m, t=t: f"t={t}: {m}")
    # The carried state matches the module's final state too.
    for got_s, ref_s in zip(stepper.get_state(), ref_state):
        torch.testing.assert_close(got_s, ref_s, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell, layers, batch", CASES)
def test_prefill_then_step_equals_forward(cell, layers, batch, engine):
    model = make_model(cell, layers, seed=2)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(V, (batch, T), generator=g)
    with torch.no_grad():
        ref, _, _ = model(ids)
    stepper = Stepper(model, batch)
    split_at = 11
    last = stepper.prefill(ids[:, :split_at])
    torch.testing.assert_close(last, ref[:, split_at - 1], atol=ATOL, rtol=0)
    for t in range(split_at, T):
        torch.testing.assert_close(stepper.step(ids[:, t]), ref[:, t], atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_set_state_continues_from_a_given_state(cell):
    model = make_model(cell, 2, seed=4)
    ids = torch.randint(V, (3, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref, _, _ = model(ids)
        _, _, state = model(ids[:, :8])
    stepper = Stepper(model, 3)
    stepper.set_state(state)
    for t in range(8, 20):
        torch.testing.assert_close(stepper.step(ids[:, t]), ref[:, t], atol=ATOL, rtol=0)


def test_batch_rows_are_independent():
    """Row 0 of a batch-3 stepper gives the same logits as a batch-1 stepper on the same tokens."""
    model = make_model("lstm", 2, seed=6)
    ids = torch.randint(V, (3, 15), generator=torch.Generator().manual_seed(7))
    one, three = Stepper(model, 1), Stepper(model, 3)
    for t in range(15):
        a = one.step(ids[:1, t]).clone()
        b = three.step(ids[:, t]).clone()
        torch.testing.assert_close(a[0], b[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch", [1, 3])
def test_bf16_weights_stay_close_to_fp32(cell, batch, engine):
    """dtype=bfloat16 stores the matrices in bf16 (state and logits stay fp32): close, not exact."""
    model = make_model(cell, 2, seed=8)
    ids = torch.randint(V, (batch, T), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref, _, _ = model(ids)
    stepper = Stepper(model, batch, dtype=torch.bfloat16)
    for t in range(T):
        out = stepper.step(ids[:, t])
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref[:, t], atol=0.05, rtol=0)
