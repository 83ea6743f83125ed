"""Where a training step's time goes, and how close the LSTM kernels run to the machine's peak.

Takes training steps as `charrnn train` does on a CPU (allocator thresholds, bf16 autocast,
locked dropout, a carried state, gradient clipping at 5 and a fused AdamW step) on random tokens
of a 65-character vocabulary, then profiles ``--steps`` of them with torch.profiler. Prints the
CPU, the median step time, the ops that take the most of it, and the recurrent kernels' speed:
a layer's forward is 2 x B x T x 4H x (input + H) FLOPs and its backward twice that (the input
and the weight gradients), against the bf16 matrix-product peak measured in the same run (a
2048-square product, as bench/train_budget.py measures it).

    python bench/step_profile.py                       # 2x320, the 10-minute plan on the EPYC
    python bench/step_profile.py --layers 1 --hidden 320 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import charrnn  # noqa: F401  (first: it sets the OpenMP wait policy before torch loads)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402
from train_budget import matmul_peak  # noqa: E402

from charrnn.model.lm import RNNLM, ModelShape, detach  # noqa: E402
from charrnn.runtime.allocator import keep_freed_memory  # noqa: E402
from charrnn.runtime.device import Env  # noqa: E402

VOCAB = 65


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=320)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--steps", type=int, default=20, help="profiled steps (after 30 unprofiled, then 40 timed)")
    a = ap.parse_args()
    print(json.dumps({"machine": describe()}), flush=True)

    keep_freed_memory()
    torch.manual_seed(0)
    B, T, H, L, E = a.batch_size, a.seq_len, a.hidden, a.layers, a.embed
    model = RNNLM(ModelShape(VOCAB, "lstm", L, H, E, a.dropout)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.2, fused=True)
    state = model.zero_state(B)
    env = Env(torch.device("cpu"), a.precision)  # bf16 autocast as training has it, or none for fp32

    def step() -> None:
        nonlocal state
        x, y = torch.randint(VOCAB, (B, T)), torch.randint(VOCAB, (B, T))
        with env.autocast():
            _, loss, carried = model(x, state, y)
        state = detach(carried)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    for _ in range(30):
        step()
    times = []
    for _ in range(40):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    share = {e.key: round(e.self_cpu_time_total / total, 4) for e in rows[:12]}

    def seconds(*names: str) -> float:
        return sum(e.self_cpu_time_total for e in rows if e.key in names) / 1e6 / a.steps

    fwd_flops = sum(2 * B * T * 4 * H * ((E if l == 0 else H) + H) for l in range(L))
    fwd = seconds("aten::mkldnn_rnn_layer", "aten::_thnn_fused_lstm_cell")
    bwd = seconds("aten::mkldnn_rnn_layer_backward", "aten::_thnn_fused_lstm_cell_backward_impl")
    peak = matmul_peak(torch.bfloat16 if a.precision == "bf16" else torch.float32)
    report = {
        "shape": f"{L}x{H} lstm, embed {E}, {B} x {T} tokens, {a.precision}, dropout {a.dropout}",
        "median_step_ms": round(median * 1e3, 2),
        "tokens_per_second": round(B * T / median),
        "self_time_share": share,
        "recurrent_share": round((fwd + bwd) * a.steps * 1e6 / total, 3),
        "forward_GFLOPs": round(fwd_flops / fwd / 1e9) if fwd else None,
        "backward_GFLOPs": round(2 * fwd_flops / bwd / 1e9) if bwd else None,
        f"{a.precision}_peak_GFLOPs": round(peak / 1e9),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
