"""What a checkpoint and its run folder hold, as ``charrnn info`` shows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charrnn.checkpoint.io import load, step_files
from charrnn.errors import CharrnnError


def describe(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What ``charrnn info`` says of a loaded checkpoint: corpus, tokens, shape, parameters,
    steps, tokens seen, best validation loss (nats/token), the run's settings, and the
    checkpoints of its run folder (``list_run``)."""
    import math

    shape, weights = ckpt["shape"], ckpt["model"]
    params = sum(t.numel() for t in weights.values())
    best = ckpt.get("best_val_loss")
    return {
        "checkpoint": ckpt["path"],
        "corpus": ckpt.get("corpus"),
        "corpus_sha": ckpt.get("corpus_sha"),
        "level": ckpt["tokenizer"]["level"],
        "vocab_size": len(ckpt["tokenizer"]["vocab"]),
        "cell": shape["cell"],
        "layers": shape["layers"],
        "hidden": shape["hidden"],
        "embed": shape["embed"],
        "dropout": shape["dropout"],
        "parameters": params,
        "non_embedding_parameters": params - weights["emb.weight"].numel(),
        "steps": ckpt.get("step"),
        "tokens_seen": ckpt.get("tokens_seen"),
        "best_val_loss": None if best is None or not math.isfinite(best) else round(best, 6),
        "charrnn_version": ckpt.get("charrnn_version"),
        "config": ckpt.get("config"),
        "checkpoints": list_run(Path(ckpt["path"]).parent),
    }


def list_run(folder: str | Path) -> list[dict[str, Any]]:
    """A run folder's checkpoints, oldest step first: name, step, the validation loss of the
    evaluation it was saved at (nats/token; None where there was none, as for a last.pt saved on
    Ctrl-C), and size in bytes. Files that cannot be read are left out."""
    folder = Path(folder)
    rows = []
    names = [p.name for p in step_files(folder).values()] + [
        n for n in ("best.pt", "last.pt") if (folder / n).is_file()
    ]
    for name in names:
        try:
            ckpt = load(folder / name, mmap=True)
        except CharrnnError:
            continue
        step = ckpt.get("step")
        val = next((r.get("val_loss") for r in reversed(ckpt.get("history") or []) if r.get("step") == step), None)
        rows.append({"name": name, "step": step, "val_loss": val, "bytes": (folder / name).stat().st_size})
    order = {"best.pt": 1, "last.pt": 2}
    return sorted(rows, key=lambda r: (r["step"] if r["step"] is not None else -1, order.get(r["name"], 0)))
