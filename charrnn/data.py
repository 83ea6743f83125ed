"""Token ids -> train/val split -> (B, T) batches, sharded by rank.

Ids may be any 1-D array of integers: a torch tensor, a numpy array, or the numpy memmap of a
corpus' token cache (``corpus.py``); a batch reads only its own B x T tokens from it.
A batch is a pure function of the step number, so resuming a run only needs the step.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from pathlib import Path

import numpy as np
import torch

from charrnn.errors import CharrnnError, UsageError

DEFAULT_CORPUS = "python-stdlib"
DEFAULT_CORPUS_CHARS = 1_200_000


def read_corpus(path: str | None) -> tuple[str, str]:
    """(text, name). ``-`` reads stdin; ``None`` gives the built-in default corpus."""
    if path is None:
        return default_corpus(), DEFAULT_CORPUS
    if path == "-":
        data, name = sys.stdin.buffer.read(), "stdin"
    else:
        p = Path(path)
        if p.is_dir():
            raise UsageError(f"{path} is a folder; give a text file (or - for stdin)")
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"corpus not found: {path}") from None
        except OSError as e:
            raise CharrnnError(f"cannot read {path}: {e.strerror}") from None
        name = p.stem or "corpus"
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as e:
        raise CharrnnError(
            f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it, e.g. iconv -t utf-8"
        ) from None


def default_corpus() -> str:
    """The running interpreter's own standard library source: on every machine, no download,
    and nothing copied into this repository. Files in sorted order, about 1.2M characters."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for f in sorted(root.glob("*.py")):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
        if size >= DEFAULT_CORPUS_CHARS:
            break
    if not parts:
        raise CharrnnError(f"no Python sources found under {root}; give a corpus file instead")
    return "\n".join(parts)


def id_dtype(vocab_size: int) -> torch.dtype:
    """The smallest integer type that holds every id."""
    if vocab_size <= 256:
        return torch.uint8
    if vocab_size <= 2**15:
        return torch.int16
    return torch.int32


def to_ids(ids: list[int], vocab_size: int) -> torch.Tensor:
    return torch.tensor(ids, dtype=id_dtype(vocab_size))


def split(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """First (1 - f) of the tokens train, the tail validates (nanoGPT's convention)."""
    n_train = int(len(ids) * (1 - val_fraction) + 1e-9)  # 0.7 * 90 is 62.99999...
    return ids[:n_train], ids[n_train:]


def as_numpy(ids) -> np.ndarray:
    """A 1-D numpy view of ``ids`` (a CPU tensor, a numpy array or memmap), without a copy."""
    if isinstance(ids, torch.Tensor):
        return ids.detach().cpu().numpy()
    return ids if isinstance(ids, np.ndarray) else np.asarray(ids)


def _long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).long()


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


class StreamBatches:
    """B contiguous streams read T tokens at a time: row i of batch k+1 continues row i of batch k,
    so the hidden state carries over (char-rnn's truncated BPTT). Each epoch starts at a fresh
    random offset so chunk boundaries move; ``reset`` marks where the carried state must be zeroed."""

    def __init__(self, ids, batch_size: int, seq_len: int, seed: int, rank: int = 0, world: int = 1):
        ids = as_numpy(ids)
        self.ids, self.B, self.T, self.seed, self.rank, self.world = ids, batch_size, seq_len, seed, rank, world
        self.stream_len = (len(ids) - 1 - seq_len) // (world * batch_size)
        self.steps_per_epoch = self.stream_len // seq_len
        if self.steps_per_epoch < 1:
            raise UsageError(
                f"the training split ({len(ids)} tokens) is too small for {world * batch_size} streams of "
                f"{seq_len} tokens; lower --batch-size or --seq-len"
            )
        self._epoch, self._x, self._y = -1, None, None

    def _load_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(_seed(self.seed, epoch))
        offset = int(torch.randint(self.T, (1,), generator=g))
        n = self.world * self.B * self.stream_len
        x = self.ids[offset : offset + n].reshape(self.world * self.B, self.stream_len)  # views, no copy
        y = self.ids[offset + 1 : offset + 1 + n].reshape(self.world * self.B, self.stream_len)
        rows = slice(self.rank * self.B, (self.rank + 1) * self.B)
        self._x, self._y, self._epoch = x[rows], y[rows], epoch

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._load_epoch(epoch)
        cols = slice(k * self.T, (k + 1) * self.T)
        return _long(self._x[:, cols]), _long(self._y[:, cols]), k == 0


class RandomBatches:
    """B windows of T tokens at random places (nanoGPT's way); no state carries between batches."""

    def __init__(self, ids, batch_size: int, seq_len: int, seed: int, rank: int = 0, world: int = 1):
        ids = as_numpy(ids)
        if len(ids) <= seq_len + 1:
            raise UsageError(f"the training split ({len(ids)} tokens) is shorter than --seq-len {seq_len}")
        self.ids, self.B, self.T, self.seed, self.rank = ids, batch_size, seq_len, seed, rank
        self.steps_per_epoch = max(1, len(ids) // (batch_size * seq_len * world))
        self._arange = np.arange(seq_len + 1)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        g = torch.Generator().manual_seed(_seed(self.seed, self.rank, step))
        starts = torch.randint(len(self.ids) - self.T - 1, (self.B,), generator=g)
        w = _long(self.ids[starts.numpy()[:, None] + self._arange])
        return w[:, :-1], w[:, 1:], True


def make_batches(kind: str, ids, batch_size: int, seq_len: int, seed: int, rank: int = 0, world: int = 1):
    cls = StreamBatches if kind == "stream" else RandomBatches
    return cls(ids, batch_size, seq_len, seed, rank, world)
