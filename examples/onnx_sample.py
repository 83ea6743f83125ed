"""Sample a charrnn ONNX export with onnxruntime and numpy alone: no torch, no charrnn.

    charrnn export -c checkpoints/shakespeare --format onnx --precision fp32 --out shakespeare-onnx
    python examples/onnx_sample.py shakespeare-onnx --prompt "ROMEO:" --length 300 --temp 0.7 --seed 1

writes what `charrnn sample -c checkpoints/shakespeare --precision fp32 --no-echo` writes for the
same seed and options (tests/test_export_onnx.py checks it): the same tokenizer, the same start
of a sample, the same counter-based random numbers and the same decoding rule (charrnn's
kernels.c, ``sample_row``), step for step. The two can part only where a drawn number falls
within float rounding of a boundary of the distribution.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

M64 = (1 << 64) - 1


def mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def uniform(seed: int, index: int, step: int) -> float:
    """The number in [0, 1) that stream ``index`` draws at ``step`` (charrnn_uniform)."""
    z = mix((seed + 0x9E3779B97F4A7C15) & M64)
    z = mix(z ^ ((index * 0xD1B54A32D192ED03) & M64))
    z = mix((z + step * 0x9E3779B97F4A7C15) & M64)
    return (z >> 11) * 2.0**-53


def choose(
    logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None, banned: list[int], u: float
) -> int:
    """One token from logits (V,) float32, as charrnn's sampler draws it with the number ``u``."""
    z = logits.astype(np.float32).copy()
    z[banned] = -np.inf
    best = int(np.argmax(z))  # the first of equal maxima
    if not temperature > 0 or not np.isfinite(z[best]):
        return best
    # Shifted by the maximum in double, divided by T, rounded to float.
    z = ((z.astype(np.float64) - float(z[best])) / temperature).astype(np.float32)
    V = len(z)
    if top_k and top_k < V:
        kth = np.partition(z, V - top_k)[V - top_k]  # the k-th largest; ties with it are kept
        z[z < kth] = -np.inf
    w = np.where(np.isneginf(z), 0.0, np.exp(z.astype(np.float64))).astype(np.float32)  # expf, correctly rounded
    cdf = np.cumsum(w.astype(np.float64))  # running sums in double, in token order
    total = float(cdf[-1])
    if top_p is not None and top_p < 1:
        kept = np.flatnonzero(w > 0)
        order = kept[np.argsort(-w[kept], kind="stable")]  # most likely first, lower id first on ties
        before = np.concatenate([[0.0], np.cumsum(w[order].astype(np.float64))[:-1]])
        keep = before < top_p * total
        w[order[~keep]] = 0
        total = float(np.cumsum(w[order[keep]].astype(np.float64))[-1])
        cdf = np.cumsum(w.astype(np.float64))
    target = u * total
    i = int(np.searchsorted(cdf, target, side="right"))  # the first token whose cumulative sum passes it
    return i if i < V else int(np.flatnonzero(w > 0)[-1])


class Tokenizer:
    """tokenizer.json: text to ids (characters, or words by the rule's regular expression)."""

    def __init__(self, path: Path):
        self.d = json.loads(path.read_text(encoding="utf-8"))
        self.vocab = self.d["vocab"]
        self.stoi = {t: i for i, t in enumerate(self.vocab)}
        self.words = re.compile(self.d["word_pattern"]) if self.d["level"] == "word" else None

    def encode(self, text: str) -> list[int]:
        pieces = self.words.findall(text) if self.words else list(text)
        missing = sorted({p for p in pieces if p not in self.stoi})
        if missing:
            sys.exit(f"onnx_sample: the model never saw {missing[:8]}")
        return [self.stoi[p] for p in pieces]

    def prompt_ids(self, prompt: str, label: str | None) -> list[int]:
        """Where a sample starts: a record's start (of the label), or the prompt (a newline if empty)."""
        d = self.d
        if d["end_id"] is not None:
            start = d["end_id"] if label is None else d["labels"][label]
            return [start] + self.encode(prompt)
        return self.encode(prompt) or [d["start_id"]]


def sample(
    folder: Path,
    prompt: str = "",
    length: int = 500,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: str | None = None,
    label: str | None = None,
) -> str:
    """The text after ``prompt``, as `charrnn sample --no-echo` writes it (without its final newline)."""
    tok = Tokenizer(folder / "tokenizer.json")
    state_info = tok.d["state"]
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    zeros = np.zeros((state_info["layers"], 1, state_info["hidden"]), np.float32)
    state = {name: zeros for name in state_info["inputs"][1:]}

    def step(ids: list[int]) -> np.ndarray:
        out = sess.run(None, {"tokens": np.array([ids], dtype=np.int64), **state})
        state.update(zip(state_info["inputs"][1:], out[1:]))
        return out[0][0]

    logits = step(tok.prompt_ids(prompt, label))  # the prompt in one call
    text = ""
    for t in range(length):
        token = choose(logits, temperature, top_k, top_p, tok.d["banned"], uniform(seed, 0, t))
        if token == tok.d["end_id"]:  # a record ends here
            break
        text += tok.vocab[token]
        if stop and stop in text:
            return text[: text.index(stop)]
        logits = step([token])
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="the folder charrnn export --format onnx wrote")
    p.add_argument("--prompt", default="")
    p.add_argument("--length", type=int, default=500)
    p.add_argument("--temp", type=float, default=0.8)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", help="end where this text appears (\\n for a newline)")
    p.add_argument("--label", help="a labelled records model: a record of this label")
    a = p.parse_args()
    stop = a.stop.replace("\\n", "\n").replace("\\t", "\t") if a.stop else None
    text = sample(a.folder, a.prompt, a.length, a.temp, a.top_k, a.top_p, a.seed, stop, a.label)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")  # as the CLI ends its output


if __name__ == "__main__":
    main()
