"""Corpora of any size: tokenizing speed, memory, time to the first step, seconds per evaluation.

Makes a synthetic corpus (words drawn from a Zipf law over 60,000 made-up words, sentences,
lines, a little punctuation and non-ASCII) under /tmp, then, for each level asked for:

1. tokenizes it cold (a fresh token cache) in a child process: MB/s and peak RSS;
2. finds it again (cache hit): seconds;
3. runs ``charrnn train big.txt --time-budget B`` on the cold cache: exit code, wall time against
   the budget, steps, time from the command's start to the first step, seconds per evaluation
   (bounded, --eval-tokens default), peak RSS;
4. runs the same command again (cache hit): time to the first step.

Everything it writes (corpus, cache, run folders) is deleted at the end.

    python bench/corpus_scale.py --size 100M --levels char word --budget 60s
    python bench/corpus_scale.py --size 1G --levels char --budget 5m
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_corpus(path: Path, size: int, seed: int = 0) -> None:
    """``size`` bytes of sentence-like text, written in blocks."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    lengths = rng.integers(2, 11, 60_000)
    words = ["".join(rng.choice(letters, n)) for n in lengths]
    words[:8] = ["don't", "well-known", "3.14", "café", "naïve", "it's", "e-mail", "1,000"]
    words = np.array(words, dtype=object)
    ranks = np.arange(1, len(words) + 1)
    p = 1 / ranks**1.07
    p /= p.sum()
    blocks = []
    for _ in range(8):
        idx = rng.choice(len(words), 700_000, p=p)
        ws = words[idx]
        ends = rng.random(len(ws))
        out, line = [], 0
        for w, e in zip(ws.tolist(), ends.tolist()):
            out.append(w)
            line += len(w) + 1
            if e < 0.06:
                out.append(". " if line < 70 else ".\n")
                line = 0 if line >= 70 else line
            elif e < 0.1:
                out.append(", ")
            else:
                out.append(" ")
        blocks.append("".join(out).encode("utf-8"))
    written = 0
    with open(path, "wb") as f:
        while written < size:
            block = blocks[int(rng.integers(len(blocks)))][: size - written]
            f.write(block)
            written += len(block)


def measured(cmd: list[str], env: dict[str, str]) -> dict:
    """Runs ``cmd`` under a small wrapper that reports the peak RSS of it and its children."""
    wrapper = (
        "import os, resource, subprocess, sys, time\n"
        "t0 = time.monotonic()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "wall = time.monotonic() - t0\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "import json; print(json.dumps({'rc': r.returncode, 'wall': wall, 'rss_mb': peak, "
        "'out': r.stdout.decode()[-4000:], 'err': r.stderr.decode()[-2000:]}))\n"
    )
    r = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True)
    return json.loads(r.stdout)


TOKENIZE = (
    "import json, sys, time\n"
    "from charrnn.data import corpus\n"
    "t = time.monotonic()\n"
    "c = corpus.load(sys.argv[1], level=sys.argv[2], max_vocab=int(sys.argv[3]) or None)\n"
    "print(json.dumps({'seconds': time.monotonic() - t, 'tokens': len(c.ids), 'vocab': len(c.tokenizer),"
    " 'dtype': str(c.ids.dtype), 'cached': c.cached, 'bytes': c.nbytes}))\n"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="100M", help="corpus size: 100M, 1G, ...")
    ap.add_argument("--levels", nargs="+", default=["char", "word"])
    ap.add_argument("--budget", default="60s", help="--time-budget of the training runs")
    ap.add_argument("--hit-budget", default="30s", help="--time-budget of the cache-hit training run")
    ap.add_argument("--max-vocab", type=int, default=20000, help="word level")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the corpus and cache (debugging)")
    args = ap.parse_args()
    size = int(float(args.size[:-1]) * {"K": 1e3, "M": 1e6, "G": 1e9}[args.size[-1].upper()])

    work = Path(tempfile.mkdtemp(prefix="charrnn-corpus-scale-"))
    env = dict(os.environ, CHARRNN_CACHE=str(work / "cache"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    charrnn = [sys.executable, "-m", "charrnn"]
    try:
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"CPU: {cpu}, {os.cpu_count()} cores; corpus {size / 1e6:,.0f} MB")
        t = time.monotonic()
        big = work / "big.txt"
        make_corpus(big, size)
        print(f"made {big} in {time.monotonic() - t:.1f}s")
        for level in args.levels:
            mv = str(args.max_vocab if level == "word" else 0)
            shutil.rmtree(work / "cache", ignore_errors=True)
            cold = measured([sys.executable, "-c", TOKENIZE, str(big), level, mv], env)
            info = json.loads(cold["out"])
            hit = json.loads(measured([sys.executable, "-c", TOKENIZE, str(big), level, mv], env)["out"])
            print(
                f"[{level}] tokenize cold: {info['seconds']:.1f}s = {size / 1e6 / info['seconds']:.1f} MB/s, "
                f"peak RSS {cold['rss_mb']:.0f} MB, {info['tokens']:,} tokens, vocab {info['vocab']:,} ({info['dtype']}); "
                f"cache hit: {hit['seconds']:.2f}s"
            )
            if args.no_train:
                continue
            flags = ["--level", level, "--quiet", "--json"] + (["--max-vocab", mv] if level == "word" else [])
            for label, budget, fresh in (("cold cache", args.budget, True), ("cache hit", args.hit_budget, False)):
                if fresh:
                    shutil.rmtree(work / "cache", ignore_errors=True)
                out = work / f"run-{level}-{label.replace(' ', '-')}"
                r = measured([*charrnn, "train", str(big), "--time-budget", budget, "--out", str(out), *flags], env)
                if r["rc"] != 0:
                    print(
                        f"[{level}] train --time-budget {budget} ({label}): exit {r['rc']} in {r['wall']:.1f}s: {r['err'].strip()[-300:]}"
                    )
                    continue
                s = json.loads(r["out"].strip().splitlines()[-1])
                print(
                    f"[{level}] train --time-budget {budget} ({label}): exit 0, wall {r['wall']:.1f}s "
                    f"(the command's own clock: {s['seconds']:.1f}s), "
                    f"first step after {s['setup_seconds']:.1f}s (tokenizing {s['tokenize_seconds']:.1f}s), "
                    f"{s['steps']} steps, {s['tokens_per_second']:,.0f} tok/s, evaluation {s['eval_seconds']}s, "
                    f"best val {s['best_val_loss']}, peak RSS {r['rss_mb']:.0f} MB; at its end the run had "
                    f"{s['budget_left_seconds']}s of the budget left (save {s['save_seconds']}s, "
                    f"samples {s['sample_seconds']}s)"
                )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
