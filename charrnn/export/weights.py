"""The shared weight file, ``model.safetensors``: a checkpoint's weights and everything needed to
use them, readable with the ``safetensors`` library's numpy API (no torch) and by ``charrnn.js``.

Tensors: the model's state_dict under its own names (``emb.weight``, ``rnn.weight_ih_l0``,
``rnn.weight_hh_l0``, ``rnn.bias_ih_l0``, ``rnn.bias_hh_l0``, ... per layer, ``head.weight``,
``head.bias``), in PyTorch's layout and gate order (LSTM i f g o, GRU r z n), fp16 (the
default: half the bytes) or fp32.

Metadata (safetensors allows string -> string; the structured values are JSON):
- ``format`` "charrnn", ``format_version`` "1", ``charrnn_version``, ``precision`` (fp16 or fp32);
- ``shape``: the ModelShape (vocab_size, cell, layers, hidden, embed, dropout);
- ``tokenizer``: ``Tokenizer.to_dict()`` (level, vocab, and the word rule for word models);
- ``records`` (lines, paragraphs, jsonl:FIELD, csv:COLUMN), ``label_field`` and ``labels`` (a JSON
  list) for records models;
- ``info``: name (the run folder's), corpus, steps, tokens_seen, best_val_loss (nats/token on
  the validation split), parameters;
- ``unicode`` (word models): the Unicode version of the Python that wrote the file and the code
  points its ``re`` module counts as ``\\w`` and ``\\d``, so that another language splits a
  prompt into the same words (see ``unicode_classes``).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.errors import UsageError

FORMAT, FORMAT_VERSION = "charrnn", "1"
FP16_MAX = 65504.0


@dataclass
class Source:
    """What every export is made of: a checkpoint's weights as fp32 numpy arrays (state_dict
    names and order), its shape and tokenizer as plain dicts, and what describes the run."""

    tensors: dict[str, np.ndarray]
    shape: dict[str, Any]
    tokenizer: dict[str, Any]
    info: dict[str, Any]
    records: str | None = None
    label_field: str | None = None
    labels: list[str] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> Source:
        """From a loaded checkpoint dict (``charrnn.checkpoint.load``)."""
        from charrnn.checkpoint import tokenizer

        tensors = {name: t.detach().float().cpu().numpy() for name, t in ckpt["model"].items()}
        tok = tokenizer(ckpt)  # with the records kind, which says what sampling may never emit
        data = (ckpt.get("config") or {}).get("data") or {}
        path = Path(ckpt.get("path") or "model.pt")
        best = ckpt.get("best_val_loss")
        info = {
            "name": run_name(path),
            "corpus": ckpt.get("corpus"),
            "steps": ckpt.get("step"),
            "tokens_seen": ckpt.get("tokens_seen"),
            "best_val_loss": None if best is None or not np.isfinite(best) else round(float(best), 6),
            "parameters": int(sum(a.size for a in tensors.values())),
        }
        return cls(
            tensors,
            dict(ckpt["shape"]),
            tok.to_dict(),
            info,
            data.get("records"),
            data.get("label_field"),
            sorted(tok.labels),
        )

    def arrays(self, precision: str) -> dict[str, np.ndarray]:
        """The tensors in ``precision`` (fp16: rounded to nearest even, as torch's ``.half()``).
        Raises UsageError where a weight is too large for fp16."""
        if precision == "fp32":
            return dict(self.tensors)
        for name, a in self.tensors.items():
            big = float(np.abs(a).max(initial=0.0))
            if big > FP16_MAX:
                raise UsageError(f"{name} holds {big:.4g}, beyond fp16's range (65504); export with --precision fp32")
        return {name: a.astype(np.float16) for name, a in self.tensors.items()}

    def metadata(self, precision: str) -> dict[str, str]:
        from charrnn import __version__

        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "charrnn_version": __version__,
            "precision": precision,
            "shape": _json(self.shape),
            "tokenizer": _json(self.tokenizer),
            "info": _json(self.info),
        }
        if self.records:
            meta["records"] = self.records
            if self.label_field:
                meta["label_field"] = self.label_field
            if self.labels:
                meta["labels"] = _json(self.labels)
        if self.tokenizer["level"] == "word":
            meta["unicode"] = _json(unicode_classes())
        return meta


def run_name(path: Path) -> str:
    """A checkpoint's name: its run folder's (a .pt file's own stem outside a run folder), as
    ``charrnn serve`` names it."""
    return path.parent.name if path.stem in ("best", "last") or path.stem.startswith("step-") else path.stem


def to_bytes(src: Source, precision: str) -> bytes:
    """The safetensors file of ``src`` in ``precision``, as bytes."""
    from safetensors.numpy import save

    return save(src.arrays(precision), metadata=src.metadata(precision))


def write(src: Source, out: Path, precision: str) -> list[Path]:
    """``out/model.safetensors``, written atomically."""
    from charrnn.files import atomic_write

    path = out / "model.safetensors"
    data = to_bytes(src, precision)
    atomic_write(path, lambda f: f.write(data), sync=False)
    return [path]


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(tensors, metadata with the JSON values decoded) of a model.safetensors, numpy only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    for key in ("shape", "tokenizer", "info", "labels", "unicode"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    return tensors, meta


@functools.lru_cache(maxsize=1)
def unicode_classes() -> dict[str, str]:
    """The code points this Python's ``re`` counts as ``\\w`` and as ``\\d``, as ranges: hex
    numbers separated by spaces, alternately the gap since the previous range's end (from 0)
    and the range's length less one. JavaScript's ``\\p{L}\\p{N}_`` is the same set for the
    characters both know, but a newer Unicode in the browser knows more: with these the word
    tokenizer splits exactly as the Python that wrote the file."""
    return {"version": unicodedata.unidata_version, "word": _ranges(r"\w+"), "digit": _ranges(r"\d+")}


def _ranges(pattern: str) -> str:
    runs = []
    for lo, hi in ((0, 0xD800), (0xE000, 0x110000)):  # surrogates are not characters
        text = "".join(map(chr, range(lo, hi)))
        runs += [(lo + m.start(), lo + m.end() - 1) for m in re.finditer(pattern, text)]
    parts, prev = [], 0
    for a, b in runs:
        parts += [f"{a - prev:x}", f"{b - a:x}"]
        prev = b
    return " ".join(parts)


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
