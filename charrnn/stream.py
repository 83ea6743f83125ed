"""Samples to a text stream: prompt echo, streaming, stop strings, separators, JSON lines.

torch is imported only where the weights must come from a checkpoint: a checkpoint sampled
before on this CPU is read from its cached pack (kernel.py), which starts in a fraction of a second.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Callable, Iterable, TextIO

from charrnn.checkpoint import resolve
from charrnn.config import SampleConfig
from charrnn.tokenizer import Tokenizer, banned_tokens, encode_prompt


class _Sample:
    """One sample's text, cut where ``stop`` first appears. Text is final once it cannot be the
    start of a stop string still being written; ``ready()`` returns what became final since its
    last call, so a stream never prints part of a stop string."""

    def __init__(self, stop: str | None):
        self.stop, self.parts, self.pending, self.shown, self.done = stop, [], "", 0, False

    def add(self, piece: str) -> None:
        if not self.stop:
            self.parts.append(piece)
            return
        self.pending += piece  # never longer than len(stop) - 1 + len(piece)
        at = self.pending.find(self.stop)
        if at >= 0:
            self.parts.append(self.pending[:at])
            self.pending, self.done = "", True
        elif len(self.pending) >= len(self.stop):
            cut = len(self.pending) - len(self.stop) + 1
            self.parts.append(self.pending[:cut])
            self.pending = self.pending[cut:]

    def finish(self) -> None:
        self.parts.append(self.pending)
        self.pending, self.done = "", True

    def ready(self) -> str:
        out = "".join(self.parts[self.shown :])
        self.shown = len(self.parts)
        return out

    @property
    def text(self) -> str:
        return "".join(self.parts)


def write_samples(
    *,
    checkpoint: str | None,
    prompt: str,
    out: TextIO,
    length: int = 500,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    stop: str | None = None,
    echo: bool = True,
    separator: str = "\n",
    unknown: str = "error",
    as_json: bool = False,
    device: str = "cpu",
    precision: str = "auto",
) -> list[str]:
    """Generate and write; sample 0 streams as it is produced. Returns the generated texts."""
    seed = seed if seed is not None else secrets.randbelow(2**31)
    cfg = SampleConfig(length, temperature, top_k, top_p, num_samples, seed, precision)
    path = resolve(checkpoint)
    found = _from_pack(path, cfg) if device == "cpu" else None
    tok, token_chunks = found or _from_checkpoint(path, cfg, device)
    prompt_ids = encode_prompt(tok, prompt, unknown)
    head = prompt if echo else ""
    samples = [_Sample(stop) for _ in range(num_samples)]
    live = not as_json
    if live:
        out.write(head)
    last_flush = time.monotonic()
    vocab = tok.vocab
    for chunk in token_chunks(prompt_ids, banned_tokens(tok)):
        for s, ids in zip(samples, chunk):
            if not s.done:
                s.add("".join([vocab[i] for i in ids]))
        if live:
            out.write(samples[0].ready())
            now = time.monotonic()
            if now - last_flush > 0.05:
                out.flush()
                last_flush = now
        if all(s.done for s in samples):
            break
    for s in samples:
        s.finish()
    texts = [s.text for s in samples]
    if as_json:
        for i, t in enumerate(texts):
            out.write(json.dumps({"text": head + t, "seed": cfg.seed, "index": i}) + "\n")
    else:
        out.write(samples[0].ready() + _end(head + texts[0]))
        for t in texts[1:]:
            out.write(separator + head + t + _end(head + t))
    out.flush()
    return texts


Chunks = Callable[[list[int], list[int]], Iterable[list[list[int]]]]


def _from_pack(path: Path, cfg: SampleConfig) -> tuple[Tokenizer, Chunks] | None:
    """Without torch: the native kernel over the weights packed by an earlier run, if cached."""
    from charrnn import kernel, native

    found = kernel.load_pack(kernel.pack_path(path, cfg.precision))
    if found is None:
        return None
    header, blob, offset = found
    lib = native.lib()
    if lib is None:
        return None
    try:  # a pack this CPU cannot run for cfg.num_samples streams: torch's path instead
        k = kernel.Kernel(lib, header, blob, offset, cfg.num_samples)
    except (ValueError, KeyError, TypeError):
        return None
    return Tokenizer.from_dict(header["tokenizer"]), lambda ids, banned: kernel.chunks(k, ids, cfg, banned)


def _from_checkpoint(path: Path, cfg: SampleConfig, device: str) -> tuple[Tokenizer, Chunks]:
    """With torch: the model from its checkpoint; where the native kernel runs it, its packed
    weights are cached for the next run."""
    from charrnn import kernel, native
    from charrnn.checkpoint import load_model
    from charrnn.device import pick_device
    from charrnn.native_step import cache_pack
    from charrnn.sample import generate

    model, tok, _ = load_model(path, pick_device(device))
    packed = cache_pack(path, model, tok, cfg)
    if packed is not None:
        k = kernel.Kernel(native.lib(), *packed, cfg.num_samples)
        return tok, lambda ids, banned: kernel.chunks(k, ids, cfg, banned)
    return tok, lambda ids, banned: (c.tolist() for c in generate(model, ids, cfg, banned))


def _end(text: str) -> str:
    return "" if text.endswith("\n") else "\n"
