"""The output layer and its cross-entropy, fused and computed a chunk of positions at a time, so a
large vocabulary's logits never exist all at once.

A word-level model with 20,000 words trained on 32 x 64 positions has (2048, 20000) logits: 164 MB
in fp32, and autograd keeps several such tensors (the logits, their fp32 copy, the log-softmax
saved for backward, the gradient), which took a 100 MB corpus' run to 1.9 GB. Here the forward
pass computes each chunk's logits, its loss and at once its gradients (softmax minus the one-hot
target: the gradient of cross-entropy with respect to the logits), and keeps only the gradients
of the inputs; backward scales them. The memory is one chunk's logits. This is the fused
linear cross-entropy of Liger Kernel and of Apple's Cut Cross-Entropy (Wijmans et al., 2024), on
plain torch products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 2**22
"""Logits computed at once (positions x vocabulary): 16 MB in fp32. Below it the plain path."""


def cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    targets: torch.Tensor,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """The summed cross-entropy, in nats, of ``hidden @ weight.T + bias`` against ``targets``.

    ``hidden``: (N, H) outputs of the last layer; ``weight``: (V, H); ``bias``: (V,);
    ``targets``: (N,) ids, -100 where a position predicts nothing. Returns a scalar. Under
    autocast the products run in its dtype and the softmax in fp32, as
    ``F.cross_entropy(F.linear(...).float(), ...)`` does. With N x V above ``chunk_elements``
    the fused chunked path above (it computes the gradients even where none are wanted: only
    training passes targets); otherwise the plain one."""
    if hidden.shape[0] * weight.shape[0] <= chunk_elements:
        return F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, reduction="sum")
    return _FusedLinearCrossEntropy.apply(hidden, weight, bias, targets, max(1, chunk_elements // weight.shape[0]))


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows):
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for i in range(0, hidden.shape[0], rows):
            h, t = hidden[i : i + rows], targets[i : i + rows]
            logits = F.linear(h, weight, bias)  # (n, V), autocast's dtype where it is on
            probs = logits.float()
            valid = t != -100
            safe = t.clamp(min=0)
            lse = torch.logsumexp(probs, dim=1)
            total += ((lse - probs.gather(1, safe[:, None])[:, 0]) * valid).sum()
            # d loss / d logits = softmax - one_hot(target), zero where nothing is predicted
            probs.sub_(lse[:, None]).exp_()
            probs[torch.arange(len(t), device=t.device), safe] -= 1.0
            probs.mul_(valid[:, None])
            g = probs.to(logits.dtype)
            grad_hidden[i : i + rows] = (g @ weight.to(g.dtype)).to(hidden.dtype)
            grad_weight += (g.t() @ h.to(g.dtype)).float()
            grad_bias += probs.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), grad_bias.to(bias.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return grad_hidden * grad_total, grad_weight * grad_total, grad_bias * grad_total, None, None
