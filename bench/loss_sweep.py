"""Loss reached for tokens seen, per model size: the data behind the sizing model
(charrnn/training/autosize.py, ``LOSS_MODEL``).

Each run trains Tiny Shakespeare (nanoGPT's split) for a fixed number of steps of 32 x 64
characters with the full schedule (warmup, linear decay to the end), so its final validation
loss is what a time budget that buys that many tokens reaches, on any machine: tokens, not
seconds, are what this measures, and a busy machine only makes it slower. Rows are appended to
bench/sweeps/loss_vs_tokens.jsonl, each with its corpus' training tokens (``unique_tokens``);
``--fit`` refits the model from every row there, their tokens counted at what repeated epochs
are worth (``autosize.effective_tokens``).

    python bench/loss_sweep.py --runs 1x128:600 1x256:2000 2x256:600
    python bench/loss_sweep.py --fit
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
ROWS = ROOT / "bench" / "sweeps" / "loss_vs_tokens.jsonl"


def run(layers: int, hidden: int, steps: int, tmp: Path) -> dict:
    from charrnn.data.batches import split
    from charrnn.training.plan.autosize import lr_for, non_embedding_params

    lr = lr_for(hidden)
    cmd = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(CORPUS),
        "--max-steps",
        str(steps),
        "--layers",
        str(layers),
        "--hidden",
        str(hidden),
        "--lr",
        str(lr),
        "--dropout",
        "0",
        "--batch-size",
        "32",
        "--seq-len",
        "64",
        "--eval-every",
        "1000000",
        "--out",
        str(tmp / "run"),
        "--overwrite",
        "--json",
        "--quiet",
    ]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    s = json.loads(out.stdout.strip().splitlines()[-1])
    train_chars = len(split(CORPUS.read_text(encoding="utf-8"), 0.1)[0])  # characters are the tokens
    return {
        "layers": layers,
        "hidden": hidden,
        "params": non_embedding_params(layers, hidden, 65, 64),
        "tokens": s["tokens"],
        "unique_tokens": train_chars,
        "val_loss": round(s["final_val_loss"], 4),
        "lr": lr,
        "steps": steps,
        "tokens_per_second": s["tokens_per_second"],
        "wall_seconds": round(time.monotonic() - t0, 1),
        "source": "bench/loss_sweep.py",
        "cpu": describe()["cpu"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=[], help="LAYERSxHIDDEN:STEPS ...")
    ap.add_argument("--fit", action="store_true", help="fit the loss model to every row and print it")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for spec in a.runs:
            shape, steps = spec.split(":")
            layers, hidden = map(int, shape.split("x"))
            row = run(layers, hidden, int(steps), Path(d))
            print(json.dumps(row), flush=True)
            with open(ROWS, "a") as f:
                f.write(json.dumps(row) + "\n")
    if a.fit:
        from charrnn.training.plan.autosize import effective_tokens, fit_loss_model

        rows = [json.loads(l) for l in ROWS.read_text().splitlines() if l.strip()]
        one = [r for r in rows if r["layers"] == 1]  # see WIDTHS in autosize.py for two layers
        model, rms = fit_loss_model(
            [(r["params"], effective_tokens(r["tokens"], r["unique_tokens"]), r["val_loss"]) for r in one]
        )
        print(json.dumps({"rows": len(one), "model": model, "rms_error": round(rms, 4)}))


if __name__ == "__main__":
    main()
