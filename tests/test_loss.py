"""The fused, chunked output layer and cross-entropy (charrnn/model/loss.py) against the plain one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from charrnn.model.lm import RNNLM, ModelShape
from charrnn.model.loss import cross_entropy_sum


def _inputs(n=96, h=24, v=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = (0.3 * torch.randn(v, h, generator=g)).requires_grad_()
    bias = (0.1 * torch.randn(v, generator=g)).requires_grad_()
    targets = torch.randint(v, (n,), generator=g)
    targets[::7] = -100  # positions that predict nothing
    return hidden, weight, bias, targets


def _grads(fn, hidden, weight, bias, targets):
    loss = fn(hidden, weight, bias, targets)
    return (loss.detach(), *torch.autograd.grad(3.0 * loss, (hidden, weight, bias)))


@pytest.mark.parametrize("chunk_elements", [300 * 96, 300 * 10, 300 * 7, 1])
def test_chunked_loss_and_gradients_equal_the_plain_ones(chunk_elements):
    args = _inputs()
    plain = _grads(lambda h, w, b, t: F.cross_entropy(F.linear(h, w, b), t, reduction="sum"), *args)
    fused = _grads(lambda h, w, b, t: cross_entropy_sum(h, w, b, t, chunk_elements), *args)
    for a, b in zip(plain, fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_loss_under_bf16_autocast_stays_close_to_fp32():
    args = _inputs(v=500)
    plain = _grads(lambda h, w, b, t: F.cross_entropy(F.linear(h, w, b), t, reduction="sum"), *args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _grads(lambda h, w, b, t: cross_entropy_sum(h, w, b, t, 500 * 8), *args)
    assert all(g.dtype == torch.float32 for g in fused)
    torch.testing.assert_close(fused[0], plain[0], rtol=2e-2, atol=0)
    for a, b in zip(plain[1:], fused[1:]):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


def test_without_gradients_the_chunked_loss_is_the_plain_sum():
    h, w, b, t = _inputs()
    with torch.no_grad():
        assert torch.allclose(
            cross_entropy_sum(h, w, b, t, 300 * 5), F.cross_entropy(F.linear(h, w, b), t, reduction="sum"), rtol=1e-5
        )


def test_a_large_vocabulary_model_trains_the_same_with_its_logits_in_chunks(monkeypatch):
    """Two identical models, one with the chunk limit lowered so its loss is fused: the same loss
    and the same weights after a few AdamW steps."""
    import charrnn.model.loss

    def run(chunk):
        monkeypatch.setattr(charrnn.model.loss, "CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(cross_entropy_sum, "__defaults__", (chunk,))
        torch.manual_seed(0)
        model = RNNLM(ModelShape(400, "lstm", 1, 32, 16, 0.0))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        x = torch.randint(400, (4, 12))
        losses = []
        for _ in range(3):
            logits, loss, _ = model(x, None, x.roll(-1, 1))
            assert logits is None
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, model.head.weight.detach().clone()

    plain, fused = run(10**9), run(400 * 5)
    assert plain[0] == pytest.approx(fused[0], rel=1e-5)
    torch.testing.assert_close(plain[1], fused[1], rtol=1e-4, atol=1e-5)
