"""Watching a run learn, at each evaluation: a sample from the model as it stands, a few recent
checkpoints kept to choose from, a warning when it starts to overfit, and early stopping.

The loop calls ``Watch.evaluated`` once per evaluation, after the record is in ``history`` and
metrics.jsonl; everything here is decided from that history, so a resumed run carries on
(patience counts evaluations before the resume too) without more state in last.pt.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn import checkpoint
from charrnn.config import TrainConfig
from charrnn.training.run_folder import RunFolder

SAMPLE_SHARE = 0.02
"""With a time budget, samples take time from training: at most this share of the training time
so far; past it a sample is skipped. (With --max-steps or --epochs they only add to the wall time.)"""
OVERFIT_MARGIN = 0.01
"""Validation this far (relative) above its best, with training loss this far below its value then, is overfitting."""


class Watch:
    """Samples (``samples.jsonl``), kept step checkpoints, the overfit warning and patience of one run."""

    def __init__(self, cfg: TrainConfig, folder: RunFolder, tokenizer: Any, reporter: Any):
        self.folder, self.out, self.tokenizer, self.rep = folder, folder.path, tokenizer, reporter
        self.sample_every = 1 if cfg.sample_every is None else cfg.sample_every
        self.length = cfg.sample_length or 200
        self.temperature = 0.8 if cfg.sample_temp is None else cfg.sample_temp
        self.seed = cfg.seed  # the same seed at every evaluation: consecutive samples compare
        self.patience, self.keep = cfg.patience, cfg.keep or 0
        self.budgeted = cfg.time_budget is not None
        self.sample_seconds = 0.0
        self.stopped_early = self._warned = self._skipped = self._disk_full = False

    def evaluated(
        self, model: Any, history: list[dict[str, Any]], train_seconds: float, save: Callable[[Path], None]
    ) -> bool:
        """After the evaluation ``history[-1]``: keep its checkpoint (``save(path)`` writes the
        weights), sample, warn of overfitting once. Returns True when patience has run out."""
        record = history[-1]
        if self.keep:
            self._keep_step(record["step"], save)
        if self.sample_every and len(history) % self.sample_every == 0:
            self._sample(model, record, train_seconds)
        if not self._warned:
            warning = overfit_warning(history)
            if warning:
                self._warned = True
                self.rep.message(warning)
        since = evaluations_since_best(history)
        if self.patience and since is not None and since >= self.patience:
            best = min((r for r in history if _val(r) is not None), key=_val)
            self.stopped_early = True
            self.rep.message(
                f"stopping early at step {record['step']}: no new best validation loss in {since} evaluations "
                f"(--patience {self.patience}); best.pt holds step {best['step']} ({best['val_loss']:.4f})"
            )
        return self.stopped_early

    def _keep_step(self, step: int, save: Callable[[Path], None]) -> None:
        if self._disk_full:
            return
        # The oldest goes before the new one is written: never more than K on disk, even mid-save.
        checkpoint.prune_steps(self.out, self.keep - 1)
        size = max((p.stat().st_size for p in self.out.glob("*.pt") if p.name != "last.pt"), default=0)
        if shutil.disk_usage(self.out).free < 4 * size + 100e6:
            self._disk_full = True
            self.rep.message(f"not keeping step checkpoints any more: the disk under {self.out} is nearly full")
            return
        save(checkpoint.step_file(self.out, step))

    def _sample(self, model: Any, record: dict[str, Any], train_seconds: float) -> None:
        if self.budgeted and self.sample_seconds > SAMPLE_SHARE * train_seconds:
            if not self._skipped:
                self._skipped = True
                self.rep.message(
                    f"skipping samples: they took more than {SAMPLE_SHARE:.0%} of the training time "
                    "(shorten --sample-length or raise --sample-every)"
                )
            return
        t0 = time.monotonic()
        text = sample_text(model, self.tokenizer, self.length, self.temperature, self.seed)
        self.sample_seconds += time.monotonic() - t0
        line = {
            "step": record["step"],
            "val_loss": _val(record),
            "train_loss": record.get("train_loss"),
            "temperature": self.temperature,
            "seed": self.seed,
            "text": text,
        }
        self.folder.append_sample(line)
        self.rep.sampled(record["step"], _val(record), text)


RECORDS_PER_SAMPLE = 5


def sample_text(model: Any, tokenizer: Any, length: int, temperature: float, seed: int) -> str:
    """``length`` tokens from ``model`` as it stands, after a newline (``CharRNN.sample("")``'s
    start), drawn with ``seed``: the text ``charrnn sample --seed`` gives for the checkpoint
    saved at this step. A records model gives ``RECORDS_PER_SAMPLE`` records instead, one per
    line (each at most ``length`` tokens). The model is left in the mode it was in."""
    import torch

    from charrnn.config import SampleConfig
    from charrnn.data.records import prompt_ids
    from charrnn.sampling.engine import Engine

    records = tokenizer.end_id is not None
    n = RECORDS_PER_SAMPLE if records else 1
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            engine = Engine(tokenizer, model=model, device=model.emb.weight.device.type)
            texts = [""] * n
            cfg = SampleConfig(length, temperature, num_samples=n, seed=seed)
            for pieces in engine.texts(prompt_ids(tokenizer, ""), cfg):
                texts = [t + p for t, p in zip(texts, pieces)]
            return "\n".join(texts) if records else texts[0]
    finally:
        model.train(was_training)


def _val(record: dict[str, Any]) -> float | None:
    v = record.get("val_loss")
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def evaluations_since_best(history: list[dict[str, Any]]) -> int | None:
    """Validated evaluations after the one with the lowest validation loss (the first of equals,
    as best.pt keeps it); None before any."""
    vals = [v for r in history if (v := _val(r)) is not None]
    if not vals:
        return None
    return len(vals) - 1 - vals.index(min(vals))


def overfit_warning(history: list[dict[str, Any]]) -> str | None:
    """A warning when the last evaluation's validation loss is above its best while the training
    loss is below what it was then (each by ``OVERFIT_MARGIN``), else None."""
    scored = [r for r in history if _val(r) is not None and isinstance(r.get("train_loss"), (int, float))]
    if len(scored) < 2:
        return None
    last, best = scored[-1], min(scored, key=_val)
    if last["val_loss"] > best["val_loss"] * (1 + OVERFIT_MARGIN) and last["train_loss"] < best["train_loss"] * (
        1 - OVERFIT_MARGIN
    ):
        return (
            f"overfitting: validation loss rose to {last['val_loss']:.4f} at step {last['step']} from "
            f"{best['val_loss']:.4f} at step {best['step']} while training loss fell to {last['train_loss']:.4f}; "
            "best.pt keeps the best step. Remedies: more dropout (--dropout 0.2 to 0.5), a smaller model "
            "(--hidden, --layers), more data, or stop when it stops improving (--patience 3)"
        )
    return None
