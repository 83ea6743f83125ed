"""Threads under contention: training and sampling beside other busy processes, against alone.

OpenMP threads that spin while they wait, and products split across cores that another process
also wants, used to make a run 25-100x slower beside a busy neighbour (issue 11). charrnn now
lets idle threads sleep and picks one thread or all by timing its own steps (charrnn/runtime/threads.py).
This script measures, one case after the other in one run:

- training (`charrnn train` on Tiny Shakespeare, a fixed number of steps, the 90 s default
  shape): tokens/s alone, beside one CPU-bound busy loop, beside two, and two trainings at once;
- sampling (`charrnn sample`, 2x512 LSTM, 2,000 characters, and -N 32): seconds alone and for
  two at once;
- or, with ``--budgeted``, a budgeted run with the defaults alone and beside one busy loop: the
  shape the probe picked, the tokens/s it timed and trained at, and the validation loss.

    python bench/contention.py                      # about three minutes on 2 cores
    python bench/contention.py --before /tmp/old    # the same cases with another checkout's charrnn
    python bench/contention.py --budgeted 60s --before /tmp/old   # what the probe picks beside a busy loop

``--before`` runs the same commands with the charrnn package of another checkout (say
``git archive 0b1469f | tar -x -C /tmp/old``, before this change) for a side-by-side ratio.
Note that the "alone" figures are only as quiet as the machine: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
BUSY = [sys.executable, "-c", "while True: pass"]


def env_for(checkout: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env["PYTHONPATH"] = str(checkout or ROOT)
    return env


def train_cmd(out: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(CORPUS),
        "--max-steps",
        str(steps),
        "--eval-every",
        "100000",
        "--layers",
        "1",
        "--hidden",
        "320",
        "--lr",
        "0.012",
        "--out",
        str(out),
        "--overwrite",
        "--json",
        "--quiet",
    ]


def train_rates(tmp: Path, env: dict, copies: int, busy: int, steps: int) -> list[float]:
    """tokens/s of ``copies`` trainings run at once, beside ``busy`` busy loops."""
    loops = [subprocess.Popen(BUSY) for _ in range(busy)]
    try:
        procs = [
            subprocess.Popen(
                train_cmd(tmp / f"run{i}", steps), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
            for i in range(copies)
        ]
        rates = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                sys.exit(f"charrnn train failed:\n{err}")
            rates.append(json.loads(out.strip().splitlines()[-1])["tokens_per_second"])
        return rates
    finally:
        for p in loops:
            p.kill()
            p.wait()


def sample_seconds(run: Path, env: dict, copies: int, streams: int) -> list[float]:
    """Wall seconds of ``copies`` `charrnn sample` processes started at once."""
    cmd = [
        sys.executable,
        "-m",
        "charrnn",
        "sample",
        "-c",
        str(run),
        "--length",
        "2000",
        "--seed",
        "1",
        "-N",
        str(streams),
    ]
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for _ in range(copies)]
    took = []
    for p in procs:
        p.wait()
        took.append(time.monotonic() - t0)
        if p.returncode != 0:
            sys.exit(f"charrnn sample failed:\n{p.stderr.read().decode()}")
    return took


def budgeted(tmp: Path, env: dict, budget: str, busy: int) -> dict:
    """A budgeted run with the defaults (the probe sizes it, training/probe.py) beside ``busy``
    busy loops: the plan, the tokens/s it timed for its shape and trained at, the best val loss."""
    loops = [subprocess.Popen(BUSY) for _ in range(busy)]
    try:
        cmd = [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(CORPUS),
            "--time-budget",
            budget,
            "--out",
            str(tmp / "budgeted"),
            "--overwrite",
            "--json",
            "--quiet",
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"charrnn train failed:\n{p.stderr}")
        s = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    plan = s.get("plan") or {}
    return {
        "plan": f"{plan.get('layers')}x{plan.get('hidden')} {plan.get('precision')}" if plan else None,
        "timed_tokens_per_s": plan.get("tokens_per_second"),
        "trained_tokens_per_s": round(s["tokens_per_second"]),
        "best_val_loss": round(s["best_val_loss"], 4),
    }


def measure(tmp: Path, checkout: Path | None, steps: int, budget: str | None = None) -> dict:
    env = env_for(checkout)
    if budget:
        return {
            f"--time-budget {budget}": {
                name: budgeted(tmp, env, budget, busy) for name, busy in [("alone", 0), ("beside 1 busy loop", 1)]
            }
        }
    alone = train_rates(tmp, env, 1, 0, steps)[0]
    res = {"train_tokens_per_s": {"alone": round(alone)}}
    for name, copies, busy in [
        ("beside 1 busy loop", 1, 1),
        ("beside 2 busy loops", 1, 2),
        ("two trainings at once", 2, 0),
    ]:
        rates = train_rates(tmp, env, copies, busy, steps)
        res["train_tokens_per_s"][name] = [round(r) for r in rates]
        res["train_tokens_per_s"][name + ", slowdown"] = round(alone / min(rates), 2)
    # A 2x512 model, one step of training: sampling speed does not depend on the weights.
    text = tmp / "t.txt"
    text.write_text("".join(chr(32 + (i * 7) % 65) for i in range(20000)))
    run = tmp / "lstm512"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(text),
            "--max-steps",
            "1",
            "--layers",
            "2",
            "--hidden",
            "512",
            "--out",
            str(run),
            "--overwrite",
            "--quiet",
        ],
        check=True,
        env=env,
    )
    res["sample_2000_chars_seconds"] = {}
    for streams in (1, 32):
        sample_seconds(run, env, 1, streams)  # packs the weights for this stream count once
        alone = statistics.median(sample_seconds(run, env, 1, streams)[0] for _ in range(3))
        both = sample_seconds(run, env, 2, streams)
        res["sample_2000_chars_seconds"][f"-N {streams}"] = {
            "alone": round(alone, 2),
            "two at once": [round(t, 2) for t in both],
            "slowdown": round(max(both) / alone, 2),
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps per run (32 x 64 tokens each)")
    ap.add_argument("--before", type=Path, help="another checkout whose charrnn runs the same cases")
    ap.add_argument(
        "--budgeted",
        metavar="DURATION",
        help="instead: a budgeted default run (the probe picks its shape), alone and beside a busy loop",
    )
    a = ap.parse_args()
    result = {"machine": describe()}
    with tempfile.TemporaryDirectory() as d:
        result["charrnn"] = measure(Path(d), None, a.steps, a.budgeted)
        if a.before:
            result["before"] = measure(Path(d), a.before.resolve(), a.steps, a.budgeted)
    result["load_average_after"] = describe()["load_average_1_5_15min"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
