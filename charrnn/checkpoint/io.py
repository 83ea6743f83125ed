"""The checkpoint format, atomic saves, safe loads, and finding a run's checkpoint.

A checkpoint is a plain dict of tensors, numbers, strings and lists (loadable with
``weights_only=True``): the tokenizer, the model shape and weights, the run config, and for
``last.pt`` everything needed to resume exactly (optimizer, step, RNG, carried state).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charrnn.checkpoint.verify import CHECKSUM, check, digest
from charrnn.errors import CharrnnError
from charrnn.files import atomic_write

if TYPE_CHECKING:
    import torch

FORMAT = 1
DEFAULT_ROOT = Path("checkpoints")


def save(obj: dict[str, Any], path: str | Path) -> None:
    """A checkpoint dict to ``path``, atomically (``atomic_write``), with a checksum of all it
    holds (``digest``) that ``load`` verifies. Raises CharrnnError when the disk refuses the
    write (full, read-only); the previous file at ``path`` is then untouched."""
    import torch

    obj = {k: v for k, v in obj.items() if k not in (CHECKSUM, "path")}
    obj[CHECKSUM] = digest(obj)
    with _saving(path):
        atomic_write(path, lambda f: torch.save(obj, f))


@contextlib.contextmanager
def _saving(path: str | Path):
    """A write the disk refuses (full, read-only) as one CharrnnError; the file it would have
    replaced is untouched (``atomic_write``)."""
    try:
        yield
    except Exception as e:
        cause = _os_error(e)  # torch.save wraps a failed write in a RuntimeError
        if cause is None:
            raise
        path = Path(path)
        kept = f"the previous {path.name} is intact; " if path.exists() else ""
        then = "continue with --resume" if (path.parent / "last.pt").exists() else "train again (with --overwrite)"
        raise CharrnnError(
            f"cannot save {path}: {cause.strerror or cause}; {kept}free some space, then {then}"
        ) from None


def _os_error(e: BaseException | None) -> OSError | None:
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def write_text(text: str, path: str | Path) -> None:
    with _saving(path):
        atomic_write(path, lambda f: f.write(text.encode("utf-8")), sync=False)


def step_file(folder: str | Path, step: int) -> Path:
    """Where the checkpoint of the evaluation at ``step`` is kept: ``folder/step-000500.pt``."""
    return Path(folder) / f"step-{step:06d}.pt"


def step_files(folder: str | Path) -> dict[int, Path]:
    """The kept evaluation checkpoints of a run folder, by step, oldest first."""
    found = {}
    for p in Path(folder).glob("step-*.pt"):
        digits = p.stem[len("step-") :]
        if digits.isdigit():
            found[int(digits)] = p
    return dict(sorted(found.items()))


def prune_steps(folder: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent step checkpoints of ``folder`` (all of them for 0)."""
    files = list(step_files(folder).values())
    for p in files[: max(len(files) - keep, 0)]:
        p.unlink(missing_ok=True)


def resolve(path: str | Path | None, step: int | None = None) -> Path:
    """A .pt file, a run folder (its best.pt, else last.pt), or None: the newest best.pt under
    checkpoints/. ``step``: the run folder's checkpoint of the evaluation at that step instead
    (step-000500.pt, kept with ``--keep``). Raises CharrnnError when there is none."""
    if step is not None:
        p = Path(path) if path is not None else resolve(None).parent
        folder = p if p.is_dir() else p.parent
        if not folder.is_dir():
            raise CharrnnError(f"run folder not found: {folder}")
        if step_file(folder, step).is_file():
            return step_file(folder, step)
        kept = ", ".join(str(s) for s in step_files(folder)) or "none (train with --keep K to keep some)"
        raise CharrnnError(
            f"no checkpoint of step {step} in {folder}; kept steps: {kept} (`charrnn info {folder}` lists them)"
        )
    if path is None:
        found = sorted(DEFAULT_ROOT.glob("**/best.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise CharrnnError(
                "no checkpoint found under checkpoints/; train one with `charrnn train` or pass --checkpoint"
            )
        return found[-1]
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CharrnnError(f"no best.pt or last.pt in {p}; is it a run folder?")
    if not p.is_file():
        if p.exists():  # a named pipe or a device: torch.load would wait or read forever
            raise CharrnnError(f"{p} is not a regular file; give a .pt checkpoint or a run folder")
        raise CharrnnError(f"checkpoint not found: {p}")
    return p


def load(path: str | Path | None, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint dict (see ``resolve`` for ``path``). ``mmap``: map the tensors instead of
    reading them, to look at a checkpoint's other fields cheaply. Raises CharrnnError when the
    file is missing, unreadable or not a charrnn checkpoint."""
    import torch

    p = resolve(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise CharrnnError(f"{p} is not a readable charrnn checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CharrnnError(f"{p} is not a charrnn checkpoint")
    # Checkpoints from before checksums (no CHECKSUM key) are checked for consistency alone.
    stored = ckpt.pop(CHECKSUM, None)
    if stored is not None and stored != digest(ckpt):
        raise CharrnnError(
            f"{p} is damaged: its contents do not match their checksum (a flipped bit or a "
            "partial copy); use the run's other checkpoint (best.pt or last.pt) or retrain"
        )
    check(ckpt, p)
    ckpt["path"] = str(p)
    return ckpt


def load_model(path: str | Path | None, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, checkpoint dict) from a checkpoint alone."""
    from charrnn.model.lm import RNNLM, ModelShape

    ckpt = load(path, map_location=device)
    model = RNNLM(ModelShape(**ckpt["shape"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), tokenizer(ckpt), ckpt


def tokenizer(ckpt: dict[str, Any]):
    """A checkpoint's tokenizer, with the records kind its run was trained on."""
    from charrnn.data.tokenizer import Tokenizer

    records = ((ckpt.get("config") or {}).get("data") or {}).get("records")
    return Tokenizer.from_dict(ckpt["tokenizer"], records.partition(":")[0] if isinstance(records, str) else None)
