"""The model's recurrent layers: a CPU stack run layer by layer equals the module's own call."""

from __future__ import annotations

import pytest
import torch

from charrnn.model.lm import RNNLM, ModelShape


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_layer_by_layer_equals_the_multi_layer_module(cell):
    torch.manual_seed(0)
    model = RNNLM(ModelShape(30, cell, 3, 24, 12, 0.0))
    idx = torch.randint(30, (4, 9))
    state = tuple(torch.randn(3, 4, 24) for _ in range(2 if cell == "lstm" else 1))
    out, new = model._recurrent(model.emb(idx), state)
    ref, ref_new = model.rnn(model.emb(idx), state if cell == "lstm" else state[0])
    ref_new = ref_new if isinstance(ref_new, tuple) else (ref_new,)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(new, ref_new):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # gradients too, and a zero state when none is given
    logits, _, _ = model(idx)
    zeros = tuple(torch.zeros_like(s) for s in state)
    torch.testing.assert_close(logits, model.head(model.rnn(model.emb(idx), zeros if cell == "lstm" else zeros[0])[0]))
    loss = model(idx, state, idx)[1]
    grads = torch.autograd.grad(loss, list(model.rnn.parameters()))
    emb = model.emb(idx)
    ref_out = model.rnn(emb, state if cell == "lstm" else state[0])[0]
    ref_loss = torch.nn.functional.cross_entropy(model.head(ref_out).flatten(0, 1), idx.flatten())
    for a, b in zip(grads, torch.autograd.grad(ref_loss, list(model.rnn.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_between_layers_only_while_training():
    torch.manual_seed(0)
    model = RNNLM(ModelShape(30, "lstm", 2, 16, 8, 0.5))
    idx = torch.randint(30, (2, 7))
    model.eval()
    a, b = model(idx)[0], model(idx)[0]
    assert torch.equal(a, b)
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


def test_dropout_mask_is_locked_over_time_steps():
    """One mask per sequence and feature, the same at every step (variational dropout)."""
    torch.manual_seed(0)
    model = RNNLM(ModelShape(30, "lstm", 1, 16, 8, 0.5)).train()
    x = torch.ones(3, 50, 16)
    dropped = model._drop(x)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # the same mask at every step
    kept = dropped[:, 0] != 0
    assert torch.all(dropped[:, 0][kept] == 2.0)  # kept features scaled by 1 / (1 - p)
    assert 0 < int(kept.sum()) < kept.numel()
    assert not torch.equal(kept[0], kept[1])  # sequences draw their own masks
    assert torch.equal(model.eval()._drop(x), x)
