"""Is a loaded checkpoint whole and consistent? One line naming what is wrong, never a traceback.

Every checkpoint carries a SHA-256 of all it holds (``digest``), written by ``io.save``. ``io.load``
verifies it, then calls ``check`` on every checkpoint (old ones without a checksum too): the
tokenizer, the shape and the weights must agree (names, shapes: compared on torch's meta device,
so a damaged shape allocates nothing), the weights must be finite, the counters sane, and the
saved settings valid, so that a resumed run cannot start with a negative learning rate.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from charrnn.errors import CharrnnError

CHECKSUM = "checksum"


def digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's contents: every tensor's dtype, shape and bytes, every number,
    string and key, in a fixed order. A flipped bit anywhere changes it."""
    h = hashlib.sha256()
    _feed(h, obj)
    return "sha256:" + h.hexdigest()


def _feed(h, o: Any) -> None:
    import torch

    if isinstance(o, torch.Tensor):
        t = o.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(o, dict):
        h.update(b"D%d" % len(o))
        for k in sorted(o, key=repr):
            _feed(h, k)
            _feed(h, o[k])
    elif isinstance(o, (list, tuple)):
        h.update(b"L%d" % len(o))
        for v in o:
            _feed(h, v)
    else:
        h.update(f"S{type(o).__name__}:{o!r}".encode())


class DamagedCheckpoint(CharrnnError):
    pass


def check(ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise DamagedCheckpoint naming the first inconsistency of ``ckpt`` (loaded from ``path``)."""
    try:
        _check(ckpt)
    except DamagedCheckpoint as e:
        raise DamagedCheckpoint(
            f"{path} is damaged: {e}; use the run's other checkpoint (best.pt or last.pt) or retrain"
        ) from None


def _int(x: Any, low: int = 0, high: float = math.inf) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and low <= x <= high


def _check(ckpt: dict[str, Any]) -> None:
    import torch

    from charrnn.config import CELLS, LEVELS, MAX_LAYERS, MAX_WIDTH, RunConfig
    from charrnn.data.tokenizer import END, LABEL_PREFIX, UNK
    from charrnn.errors import UsageError
    from charrnn.model.lm import RNNLM, ModelShape

    tok = ckpt.get("tokenizer")
    if not isinstance(tok, dict) or tok.get("level") not in LEVELS or not isinstance(tok.get("vocab"), list):
        raise DamagedCheckpoint("its tokenizer is missing or malformed")
    vocab = tok["vocab"]
    if not vocab or not all(isinstance(t, str) and t for t in vocab) or len(set(vocab)) != len(vocab):
        raise DamagedCheckpoint("its vocabulary has empty, repeated or non-text tokens")
    if tok["level"] == "char" and any(len(t) != 1 and t != END and not t.startswith(LABEL_PREFIX) for t in vocab):
        raise DamagedCheckpoint("its character vocabulary holds tokens longer than one character")
    if tok["level"] == "word" and UNK not in vocab:
        raise DamagedCheckpoint(f"its word vocabulary has no {UNK}")

    shape = ckpt.get("shape")
    names = {f.name for f in fields(ModelShape)}
    if not isinstance(shape, dict) or set(shape) != names:
        raise DamagedCheckpoint("its model shape is missing or malformed")
    if shape["cell"] not in CELLS:
        raise DamagedCheckpoint(f"its cell {shape['cell']!r} is not one of {', '.join(CELLS)}")
    if not (
        _int(shape["layers"], 1, MAX_LAYERS)
        and _int(shape["hidden"], 1, MAX_WIDTH)
        and _int(shape["embed"], 1, MAX_WIDTH)
    ):
        raise DamagedCheckpoint(
            f"its shape (layers {shape['layers']!r}, hidden {shape['hidden']!r}, embed {shape['embed']!r}) is out of range"
        )
    if not isinstance(shape["dropout"], (int, float)) or not 0 <= shape["dropout"] < 1:
        raise DamagedCheckpoint(f"its dropout {shape['dropout']!r} is out of range")
    if shape["vocab_size"] != len(vocab):
        raise DamagedCheckpoint(f"its model has {shape['vocab_size']!r} tokens but its tokenizer {len(vocab)}")

    weights = ckpt.get("model")
    with torch.device("meta"):
        want = {k: v.shape for k, v in RNNLM(ModelShape(**shape)).state_dict().items()}
    if not isinstance(weights, dict) or set(weights) != set(want):
        raise DamagedCheckpoint(
            f"its weights are not those of a {shape['layers']}-layer {shape['cell']} "
            f"(named {', '.join(sorted(map(str, weights or {}))[:3])}...)"
        )
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise DamagedCheckpoint(f"its weight {name} is not a floating-point tensor")
        if t.shape != want[name]:
            raise DamagedCheckpoint(f"its weight {name} is {tuple(t.shape)}, the shape says {tuple(want[name])}")
        if not bool(torch.isfinite(t).all()):
            raise DamagedCheckpoint(f"its weight {name} holds NaN or infinite values")

    if not _int(ckpt.get("step", 0)):
        raise DamagedCheckpoint(f"its step {ckpt.get('step')!r} is not a count >= 0")
    if ckpt.get("tokens_seen") is not None and not _int(ckpt["tokens_seen"]):
        raise DamagedCheckpoint(f"its tokens_seen {ckpt['tokens_seen']!r} is not a count >= 0")
    best = ckpt.get("best_val_loss")
    if best is not None and not (isinstance(best, (int, float)) and best >= 0):  # inf: nothing evaluated yet
        raise DamagedCheckpoint(f"its best validation loss {best!r} is not a loss")
    for key in ("train_seconds",):
        if key in ckpt and not (isinstance(ckpt[key], (int, float)) and math.isfinite(ckpt[key]) and ckpt[key] >= 0):
            raise DamagedCheckpoint(f"its {key} {ckpt[key]!r} is not a duration")
    if "eval_every" in ckpt and ckpt["eval_every"] is not None and not _int(ckpt["eval_every"], 1):
        raise DamagedCheckpoint(f"its eval_every {ckpt['eval_every']!r} is not a count > 0")
    if "state" in ckpt:
        state = ckpt["state"]
        n = 2 if shape["cell"] == "lstm" else 1
        if (
            not isinstance(state, (list, tuple))
            or len(state) != n
            or not all(
                isinstance(s, torch.Tensor)
                and s.dim() == 3
                and s.shape[0] == shape["layers"]
                and s.shape[2] == shape["hidden"]
                for s in state
            )
        ):
            raise DamagedCheckpoint("its carried state does not fit the model")
    if "config" in ckpt:
        import copy

        if not isinstance(ckpt["config"], dict):
            raise DamagedCheckpoint("its saved settings are not a mapping")
        # The values that are there must be valid; settings this version does not know (from an
        # older or newer charrnn) are not this check's business.
        known = {f.name: {g.name for g in fields(f.default_factory)} for f in fields(RunConfig)}
        sections = {k: v for k, v in copy.deepcopy(ckpt["config"]).items() if k in known}
        try:
            RunConfig.from_dict(
                {
                    k: {n: x for n, x in v.items() if n in known[k]} if isinstance(v, dict) else v
                    for k, v in sections.items()
                }
            )
        except UsageError as e:
            raise DamagedCheckpoint(f"its saved settings are invalid ({e})") from None
