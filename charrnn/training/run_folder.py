"""A run's folder: best.pt, last.pt, config.yaml, metrics.jsonl, samples.jsonl, the kept
step-000500.pt checkpoints, and a lock held for the run's life.

Only one process writes a run folder at a time: ``claim`` takes an exclusive ``flock`` on
``.lock`` (the kernel drops it when the process dies, so a crashed run never leaves a stale
lock) and refuses a second writer in one line. Once it holds the lock it removes temporary
files that a killed save left behind. A folder that holds any run file is never started over
without ``--overwrite``, and even then its old files go only when training is about to start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from charrnn import checkpoint
from charrnn.config import RunConfig, load_yaml
from charrnn.errors import CharrnnError, UsageError

RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl")


class RunFolder:
    def __init__(self, path: str | Path, writer: bool = True):
        """``writer``: this process writes the folder (rank 0 under torchrun)."""
        self.path, self.writer = Path(path), writer
        self._lock_fd: int | None = None

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def claim(self, resume: bool, overwrite: bool) -> None:
        """Check the folder suits the run, create it and take its lock.
        Raises UsageError for a folder that is a file, cannot be created, is being written by
        another run, or holds a run that would be overwritten."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise UsageError(f"--out {p} is a file, not a folder; give a folder path")
        if not resume and not overwrite and any((p / f).exists() for f in RUN_FILES):
            raise UsageError(
                f"{p} already holds a run: --resume continues it, --overwrite starts over, --out picks another folder"
            )
        if not self.writer:
            return
        try:
            p.mkdir(parents=True, exist_ok=True)
            fd = os.open(p / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UsageError(
                f"cannot create the run folder {p}: {e.strerror}; give --out a folder you can write"
            ) from None
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): no lock
            pass
        except OSError:
            os.close(fd)
            raise UsageError(
                f"another charrnn train is writing to {p}; wait for it to end, or give --out another folder"
            ) from None
        self._lock_fd = fd
        for stale in p.glob(".*.tmp"):  # left by a save that was killed: nobody else writes here
            stale.unlink(missing_ok=True)

    def start(self, cfg: RunConfig, history: list[dict[str, Any]], fresh: bool) -> None:
        """Write config.yaml, and metrics.jsonl as ``history`` (the resumed checkpoint's, so the
        metrics agree with last.pt after a resume). ``fresh``: a new run, which removes the
        checkpoints of a run it overwrites."""
        if not self.writer:
            return
        checkpoint.write_text(cfg.to_yaml(), self.path / "config.yaml")
        metrics = self.path / "metrics.jsonl"
        if fresh:  # a new run: nothing of an overwritten one may pass for this one's
            for f in (self.best, self.last, metrics, self.samples):
                f.unlink(missing_ok=True)
            checkpoint.prune_steps(self.path, 0)
        else:
            checkpoint.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in history), metrics)
            self._trim_samples(history[-1]["step"] if history else 0)

    @property
    def samples(self) -> Path:
        return self.path / "samples.jsonl"

    def append_sample(self, record: dict[str, Any]) -> None:
        with open(self.samples, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _trim_samples(self, step: int) -> None:
        """Drop samples after ``step`` (the resumed checkpoint's last evaluation): a run killed
        between a sample and its save would otherwise log that step twice."""
        if not self.samples.is_file():
            return
        kept = []
        for line in self.samples.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                pass
        checkpoint.write_text("".join(kept), self.samples)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None


def saved_corpus(out: str | None) -> str | None:
    """The corpus a run in ``out`` (default: the default corpus' run) was trained on, from its config.yaml."""
    from charrnn.data.corpus import DEFAULT_CORPUS

    path = Path(out or checkpoint.DEFAULT_ROOT / DEFAULT_CORPUS) / "config.yaml"
    if not path.is_file():
        raise UsageError(f"nothing to resume: {path} does not exist; give --out the run folder")
    try:
        return (load_yaml(path).get("data") or {}).get("corpus")
    except AttributeError:
        raise CharrnnError(f"{path} is damaged; give the corpus again on the command line") from None
