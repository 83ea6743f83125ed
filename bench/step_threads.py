"""One training step under three OpenMP settings, side by side: what the wait policy and the
thread count do on a machine where other processes are busy.

Each setting runs in its own process (the policy is read when torch loads): torch's defaults
(idle threads spin; torch imported before charrnn could set anything), idle threads sleeping
(``OMP_WAIT_POLICY=PASSIVE``, what importing charrnn first sets), and one thread. Prints the
median step time of a 1x320 LSTM, 32 x 64 tokens, bf16 autocast, and the load average.

    python bench/step_threads.py [--steps 20] [--repeats 2]
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
import os, sys, time
import torch  # before charrnn: the OpenMP runtime reads the environment now
from charrnn.model.lm import RNNLM, ModelShape
if sys.argv[1] == "1":
    torch.set_num_threads(1)
torch.manual_seed(0)
m = RNNLM(ModelShape(65, "lstm", 1, 320, 64, 0.0))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
x = torch.randint(65, (32, 64))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss, _ = m(x, None, x)
    opt.zero_grad(); loss.backward(); opt.step()
step(); step()
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
print(sorted(times)[len(times) // 2])
"""

SETTINGS = {
    "torch defaults (threads spin), all threads": ({}, "all"),
    "OMP_WAIT_POLICY=PASSIVE, all threads": ({"OMP_WAIT_POLICY": "PASSIVE"}, "all"),
    "PASSIVE + GOMP_SPINCOUNT=1000, all threads": ({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}, "all"),
    "PASSIVE + GOMP_SPINCOUNT=3000, all threads": ({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"}, "all"),
    "one thread": ({}, "1"),
}
BUSY = [sys.executable, "-c", "while True: pass"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound busy loops running beside the steps")
    a = ap.parse_args()
    result = {"machine": describe(), "busy_loops": a.busy, "median_step_ms": {name: [] for name in SETTINGS}}
    busy = [subprocess.Popen(BUSY) for _ in range(a.busy)]
    try:
        _run(a, result)
    finally:
        for b in busy:
            b.kill()
    result["load_average_after"] = describe()["load_average_1_5_15min"]
    print(json.dumps(result, indent=2))


def _run(a, result) -> None:
    for _ in range(a.repeats):
        for name, (extra, threads) in SETTINGS.items():
            env = {
                k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
            } | extra
            out = subprocess.run(
                [sys.executable, "-c", CHILD, threads, str(a.steps)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            result["median_step_ms"][name].append(round(1000 * float(out.stdout.strip()), 1))


if __name__ == "__main__":
    main()
