"""Validation loss per minute of compute on Tiny Shakespeare, with the CLI's default settings.

Runs `charrnn train ../shared/corpora/tinyshakespeare.txt --time-budget T` (the default 10%
validation split is exactly the last 10% of characters, nanoGPT's split; training sees the
first 90% only), times the whole command, then scores the last 10% with `charrnn score`.
Also measures the bf16 and fp32 matrix-product peaks in the same run and reports the model's
training throughput as 6 x non-embedding parameters x tokens/s against them. Prints the CPU
model and the plan the run chose (the shapes and precisions it timed, see training/probe.py).

    python bench/train_budget.py --budget 90s
    python bench/train_budget.py --budget 10m
    python bench/train_budget.py --budget 90s --nanogpt /path/to/nanoGPT   # side by side

With --nanogpt (a checkout of karpathy/nanoGPT, not part of this project), its README's CPU
configuration trains on the same split (data written in its format to a temporary folder) for
its 2000 iterations, and its final checkpoint is scored on the whole validation text with the
same chunked, context-primed evaluation charrnn uses.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import charrnn  # noqa: F401  (first: it sets the OpenMP wait policy before torch loads)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def cli(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"charrnn {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_charrnn(text: str, budget: str, tmp: Path, extra: list[str]) -> dict:
    n_train = int(len(text) * 0.9)
    val = tmp / "val.txt"
    val.write_text(text[n_train:], encoding="utf-8")
    run = tmp / "run"
    t0 = time.monotonic()
    summary = cli(["train", str(CORPUS), "--time-budget", budget, "--out", str(run), "--json", "--quiet", *extra])
    wall = time.monotonic() - t0
    score = cli(["score", str(val), "-c", str(run), "--json"])
    score32 = cli(["score", str(val), "-c", str(run), "--json", "--precision", "fp32"])
    info = cli(["info", str(run), "--json"])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "summary": summary,
        "wall_seconds": round(wall, 1),
        "score": score,
        "score_fp32": score32,
        "info": info,
        "history": history,
    }


def run_nanogpt(path: Path, text: str, tmp: Path) -> dict:
    """nanoGPT's README CPU configuration on the same 90/10 character split."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = int(len(text) * 0.9)
    data = tmp / "data" / "tinyshakespeare_char"
    data.mkdir(parents=True)
    import numpy as np

    np.array([stoi[c] for c in text[:n]], dtype=np.uint16).tofile(data / "train.bin")
    np.array([stoi[c] for c in text[n:]], dtype=np.uint16).tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    out_dir = tmp / "nanogpt_out"
    (tmp / "configurator.py").symlink_to(path / "configurator.py")  # train.py reads it from the cwd
    cmd = [
        sys.executable,
        str(path / "train.py"),
        str(path / "config" / "train_shakespeare_char.py"),
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        "--block_size=64",
        "--batch_size=12",
        "--n_layer=4",
        "--n_head=4",
        "--n_embd=128",
        "--max_iters=2000",
        "--lr_decay_iters=2000",
        "--dropout=0.0",
        "--dataset=tinyshakespeare_char",
        f"--out_dir={out_dir}",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    last_eval = [l for l in proc.stdout.splitlines() if "val loss" in l][-1]
    # Score its checkpoint on the whole validation text: chunks of its context length.
    sys.path.insert(0, str(path))
    from model import GPT, GPTConfig  # nanoGPT's own module, from the given checkout

    ckpt = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    val = torch.tensor([stoi[c] for c in text[n:]], dtype=torch.long)
    T, total, count = 64, 0.0, 0
    with torch.no_grad():
        # Windows with stride T/2, each scoring its second half: every token once (but a
        # tail shorter than T/2), each with at least T/2 of context.
        starts = list(range(0, len(val) - T, T // 2))
        for i in range(0, len(starts), 256):
            s = starts[i : i + 256]
            x = torch.stack([val[j : j + T] for j in s])
            y = torch.stack([val[j + 1 : j + T + 1] for j in s])
            logits, _ = model(x, y)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            for r, j in enumerate(s):
                part = slice(0, T) if j == 0 else slice(T // 2, T)
                total += float(nll[r, part].sum())
                count += nll[r, part].numel()
    return {"wall_seconds": round(wall, 1), "last_log": last_eval.strip(), "val_loss_whole": round(total / count, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="90s")
    ap.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout to run side by side")
    ap.add_argument("--skip-charrnn", action="store_true", help="run only the nanoGPT reference")
    ap.add_argument("--keep", type=Path, help="copy charrnn's run folder here (to sample or plot it afterwards)")
    ap.add_argument("extra", nargs="*", help="extra flags for charrnn train (after --)")
    a = ap.parse_args()
    text = CORPUS.read_text(encoding="utf-8")
    result = {
        "machine": describe(),
        "budget": a.budget,
        "bf16_peak_GFLOPs": round(matmul_peak(torch.bfloat16) / 1e9),
        "fp32_peak_GFLOPs": round(matmul_peak(torch.float32) / 1e9),
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if a.nanogpt:
            result["nanogpt_cpu_config"] = run_nanogpt(a.nanogpt.resolve(), text, tmp)
        if a.skip_charrnn:
            print(json.dumps(result, indent=2))
            return
        r = run_charrnn(text, a.budget, tmp, a.extra)
        if a.keep:
            shutil.copytree(tmp / "run", a.keep, dirs_exist_ok=True)
        s, info = r["summary"], r["info"]
        flops = 6 * info["non_embedding_parameters"] * s["tokens_per_second"]
        result["charrnn"] = {
            "val_loss": r["score"]["loss"],
            "val_loss_fp32_eval": r["score_fp32"]["loss"],
            "wall_seconds": r["wall_seconds"],
            "model": f"{info['layers']}x{info['hidden']} {info['cell']}, {info['non_embedding_parameters']:,} non-embedding params",
            "config": {k: info["config"][k] for k in ("data", "model")}
            | {k: info["config"]["train"].get(k) for k in ("lr", "weight_decay")},
            "plan": s.get("plan") or "no probe (a budget under 20 s, a GRU or RNN, or torchrun)",
            "steps": s["steps"],
            "tokens_per_second": s["tokens_per_second"],
            "model_GFLOPs": round(flops / 1e9),
            "fraction_of_bf16_peak": round(flops / (result["bf16_peak_GFLOPs"] * 1e9), 3),
            # The run's own evaluations: (step, seconds, train loss, val loss on its split)
            "evaluations": [(h["step"], h["seconds"], h.get("train_loss"), h.get("val_loss")) for h in r["history"]],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
