"""How far bf16 step weights move the next-token distribution, on a trained checkpoint.

Feeds a text through the model's own fp32 forward and through the native kernel with bf16
weights (one stream, and 32 streams on AMX tiles where the CPU has them), and prints the mean
and largest KL(fp32 || bf16) over every position, in nats.

    python bench/bf16_kl.py -c checkpoints/shakespeare --text ../shared/corpora/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse

import torch

from charrnn.checkpoint import load_model
from charrnn.sampling.native import build as native
from charrnn.sampling.native.pack import NativeLSTM


def kl_rows(ref_logits: torch.Tensor, got_logits: torch.Tensor) -> torch.Tensor:
    p = torch.log_softmax(ref_logits.double(), -1)
    q = torch.log_softmax(got_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--chars", type=int, default=4000, help="positions per stream")
    args = ap.parse_args()
    model, tok, _ = load_model(args.checkpoint)
    text = open(args.text, encoding="utf-8").read()
    ids = torch.tensor(tok.encode(text[-args.chars * 32 :], unknown="skip")[: args.chars * 32]).view(32, -1)
    with torch.no_grad():
        ref, _, _ = model(ids)
    results = {}
    streams = [1, 32] if native.lib() is not None and native.lib().amx else [1]
    for B in streams:
        net = NativeLSTM(model, torch.bfloat16, B)
        kls = []
        for t in range(ids.size(1)):
            logits = net.step(ids[:B, t])
            kls.append(kl_rows(ref[:B, t], logits))
        kl = torch.stack(kls)
        results[f"{B} stream{'s' if B > 1 else ''}"] = (kl.mean().item(), kl.max().item(), kl.numel())
    for name, (mean, worst, n) in results.items():
        print(f"bf16 weights, {name}: KL mean {mean:.2e} nats, max {worst:.2e} over {n} positions")


if __name__ == "__main__":
    main()
