"""What keeping all threads costs a training run beside a busy process.

Training switches between one thread and all only where both compute the same numbers
(charrnn/training/loop.py, ``thread_count_changes_nothing``); elsewhere it keeps all threads, so
that the same seed trains the same model. This script measures that case on any CPU by forcing
it: Tiny Shakespeare, one 320-wide LSTM layer, 400 steps, tokens/s with the tuner and with all
threads fixed, three runs each (medians), beside N CPU-bound busy loops.

    python bench/thread_cost.py --busy 0
    python bench/thread_cost.py --busy 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
RUN = r"""
import sys, tempfile, charrnn
from charrnn.training import loop
if sys.argv[1] == "fixed":
    loop.thread_count_changes_nothing = lambda run, most: False
with tempfile.TemporaryDirectory() as out:
    r = charrnn.train(sys.argv[2], out=out, layers=1, hidden=320, max_steps=400, eval_every=100000, device="cpu",
                      sample_every=0)
print(r.tokens_per_second)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=1, help="CPU-bound busy loops beside the runs")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    report = {"machine": describe(), "busy_loops": a.busy}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        rates: dict[str, list[float]] = {"tuned": [], "fixed": []}
        for _ in range(a.runs):
            for mode in rates:
                r = subprocess.run(
                    [sys.executable, "-c", RUN, mode, str(CORPUS)], capture_output=True, text=True, check=True
                )
                rates[mode].append(round(float(r.stdout.split()[-1])))
    finally:
        for b in busy:
            b.kill()
    report |= {mode: {"tokens_per_second": v, "median": statistics.median(v)} for mode, v in rates.items()}
    report["fixed_over_tuned"] = round(report["fixed"]["median"] / report["tuned"]["median"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
