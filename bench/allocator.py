"""Training steps with glibc's malloc defaults and with charrnn's thresholds (allocator.py), side
by side: tokens/s and page faults per step.

Each setting runs in its own process, the settings alternating ``--repeats`` times. Per shape a
fresh model, 32 x 64 tokens, bf16 autocast, locked dropout 0.1, gradient clipping and a fused
AdamW step as in training, the state carried from step to step; the median of ``--steps`` steps
after five. Prints the CPU, the load average and one JSON row per process.

    python bench/allocator.py [--steps 25] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import torch
from charrnn.runtime.allocator import keep_freed_memory
from charrnn.model.lm import RNNLM, ModelShape
took = keep_freed_memory() if sys.argv[1] == "charrnn" else False
row = {"setting": sys.argv[1], "thresholds_set": took}
for layers, hidden in ((2, 320), (2, 384), (2, 512), (1, 320)):
    torch.manual_seed(0)
    model = RNNLM(ModelShape(65, "lstm", layers, hidden, 64, 0.1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, state, times = torch.randint(65, (32, 64)), None, []
    for i in range(5 + int(sys.argv[2])):
        if i == 5:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss, state = model(x, state, x)
        state = tuple(s.detach() for s in state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    steps = times[5:]
    row[f"{layers}x{hidden}"] = {
        "tokens_per_second": round(32 * 64 / sorted(steps)[len(steps) // 2]),
        "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // len(steps),
    }
row["max_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps(row))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(json.dumps({"machine": describe()}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    for _ in range(args.repeats):
        for setting in ("glibc", "charrnn"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, setting, str(args.steps)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
