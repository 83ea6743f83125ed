"""`score` and `info`: what a checkpoint says about a text, and about itself."""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from charrnn.checkpoint import load_model
from charrnn.data import read_corpus
from charrnn.errors import CharrnnError
from charrnn.evaluate import Score, evaluate
from charrnn.device import Env, pick_device, pick_precision


def _setup(checkpoint: str | None, device: str, precision: str):
    dev = pick_device(device)
    model, tok, ckpt = load_model(checkpoint, dev)
    env = Env(dev, pick_precision(precision, dev))
    return model, tok, env


def score_text(file: str, checkpoint: str | None, unknown: str = "auto", device: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """Loss on the whole text, every token after the first scored once (see ``evaluate``)."""
    model, tok, env = _setup(checkpoint, device, precision)
    text, _ = read_corpus(file)
    ids = torch.tensor(tok.encode(text, unknown=unknown), dtype=torch.long)
    if len(ids) < 2:
        raise CharrnnError(f"{file} has {len(ids)} token(s): nothing to score (the first token has no context)")
    return evaluate(model, ids, tok.char_lengths(), autocast=env.autocast()).to_dict()


def score_lines(
    file: str, checkpoint: str | None, unknown: str = "auto", device: str = "auto", precision: str = "auto", batch: int = 256
) -> Iterator[dict[str, Any]]:
    """Each line on its own, as if it followed a newline: its tokens and its closing newline are scored."""
    model, tok, env = _setup(checkpoint, device, precision)
    text, _ = read_corpus(file)
    # Newlines only: str.splitlines() would also split on form feeds and other separators.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    nl = tok.encode("\n", unknown="skip")
    encoded = [nl + tok.encode(line, unknown=unknown) + nl for line in lines]
    chars = torch.tensor(tok.char_lengths())
    results = [{"line": line.removesuffix("\r"), "loss": None, "bits_per_char": None, "tokens": 0} for line in lines]
    # Lines of similar length share a batch; a line needs two tokens to score one.
    order = sorted((i for i in range(len(lines)) if len(encoded[i]) >= 2), key=lambda i: len(encoded[i]))
    with torch.inference_mode(), env.autocast():
        for idx in _batches(order, [len(e) for e in encoded], batch, model.shape.vocab_size):
            seqs = [torch.tensor(encoded[i], dtype=torch.long) for i in idx]
            T = max(len(s) for s in seqs) - 1
            x = torch.stack([F.pad(s[:-1], (0, T - len(s) + 1)) for s in seqs]).to(env.device)
            y = torch.stack([F.pad(s[1:], (0, T - len(s) + 1), value=-100) for s in seqs]).to(env.device)
            logits, _, _ = model(x, None)
            nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none", ignore_index=-100).sum(1)
            for j, i in enumerate(idx):
                n = len(seqs[j]) - 1
                sc = Score(float(nll[j]) / n, n, int(chars[seqs[j][1:]].sum()))
                results[i].update(loss=round(sc.loss, 6), bits_per_char=round(sc.bits_per_char, 6), tokens=n)
    yield from results


def _batches(order: list[int], lengths: list[int], most: int, vocab_size: int) -> Iterator[list[int]]:
    """Runs of ``order`` (sorted by length) of at most ``most`` lines and about 2^24 logits."""
    run: list[int] = []
    for i in order:
        if run and (len(run) >= most or (len(run) + 1) * lengths[i] * vocab_size > 2**24):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


def describe(checkpoint: str | None) -> dict[str, Any]:
    model, tok, ckpt = load_model(checkpoint, "cpu")
    shape = ckpt["shape"]
    best = ckpt.get("best_val_loss")
    return {
        "checkpoint": ckpt["path"],
        "corpus": ckpt.get("corpus"),
        "level": tok.level,
        "vocab_size": len(tok),
        "cell": shape["cell"],
        "layers": shape["layers"],
        "hidden": shape["hidden"],
        "embed": shape["embed"],
        "dropout": shape["dropout"],
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(non_embedding=True),
        "steps": ckpt.get("step"),
        "tokens_seen": ckpt.get("tokens_seen"),
        "best_val_loss": None if best is None or not math.isfinite(best) else round(best, 6),
        "charrnn_version": ckpt.get("charrnn_version"),
        "config": ckpt.get("config"),
    }
