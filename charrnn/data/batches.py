"""Token ids -> train/val split -> (B, T) batches, sharded by rank.

Ids may be any 1-D array of integers: a torch tensor, a numpy array, or the numpy memmap of a
corpus' token cache (``corpus.py``); a batch reads only its own B x T tokens from it.
A batch is a pure function of the step number, so resuming a run only needs the step.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from charrnn.errors import UsageError


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
    """int64 ids in a tensor of their own (one copy; a read-only memmap is never shared with torch)."""
    return torch.from_numpy(a.astype(np.int64))


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


ZERO_STATE_EVERY = 64
"""Stream batching zeroes each stream's carried state once every this many steps (streams in
turn), besides at epoch starts, so 1/64 of the windows start from the zero state."""


class StreamBatches:
    """B contiguous streams read T tokens at a time: row i of batch k+1 continues row i of batch k,
    so the hidden state carries over (char-rnn's truncated BPTT). Each epoch starts at a fresh
    random offset so chunk boundaries move. ``reset`` (B,) bool marks the rows whose carried state
    must be zeroed: all of them at an epoch's start, and the streams whose turn it is
    (``ZERO_STATE_EVERY``). Sampling and scoring start from the zero state; a model that only met
    it once an epoch wrote gibberish from it after a one-epoch run (val loss 1.81) though it wrote
    Shakespeare after a real prompt."""

    def __init__(self, ids, batch_size: int, seq_len: int, seed: int, rank: int = 0, world: int = 1):
        ids = as_numpy(ids)
        self.ids, self.B, self.T, self.seed, self.rank, self.world = ids, batch_size, seq_len, seed, rank, world
        self.stream_len = (len(ids) - 1 - seq_len) // (world * batch_size)
        self.steps_per_epoch = self.stream_len // seq_len
        if self.steps_per_epoch < 1:
            raise UsageError(
                f"the training split ({len(ids)} tokens) is too small for {world * batch_size} streams of "
                f"{seq_len} tokens; {fit_advice(len(ids), batch_size, seq_len, world)}"
            )
        self._epoch, self._x, self._y = -1, None, None
        # Each row's turn for the zero state: its global stream number, modulo ZERO_STATE_EVERY.
        self._turn = torch.arange(rank * batch_size, (rank + 1) * batch_size) % ZERO_STATE_EVERY

    def _load_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(_seed(self.seed, epoch))
        offset = int(torch.randint(self.T, (1,), generator=g))
        n = self.world * self.B * self.stream_len
        x = self.ids[offset : offset + n].reshape(self.world * self.B, self.stream_len)  # views, no copy
        y = self.ids[offset + 1 : offset + 1 + n].reshape(self.world * self.B, self.stream_len)
        rows = slice(self.rank * self.B, (self.rank + 1) * self.B)
        self._x, self._y, self._epoch = x[rows], y[rows], epoch

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._load_epoch(epoch)
        cols = slice(k * self.T, (k + 1) * self.T)
        reset = torch.full((self.B,), k == 0) | (self._turn == step % ZERO_STATE_EVERY)
        return _long(self._x[:, cols]), _long(self._y[:, cols]), reset


class RandomBatches:
    """B windows of T tokens at random places (nanoGPT's way); no state carries between batches."""

    def __init__(self, ids, batch_size: int, seq_len: int, seed: int, rank: int = 0, world: int = 1):
        ids = as_numpy(ids)
        if len(ids) <= seq_len + 1:
            fix = f"use --seq-len {len(ids) - 2} or less" if len(ids) >= 3 else _longer_corpus(3)
            raise UsageError(f"the training split ({len(ids)} tokens) is too short for --seq-len {seq_len}; {fix}")
        self.ids, self.B, self.T, self.seed, self.rank = ids, batch_size, seq_len, seed, rank
        self.steps_per_epoch = max(1, len(ids) // (batch_size * seq_len * world))
        self._arange = np.arange(seq_len + 1)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        g = torch.Generator().manual_seed(_seed(self.seed, self.rank, step))
        starts = torch.randint(len(self.ids) - self.T - 1, (self.B,), generator=g)
        w = _long(self.ids[starts.numpy()[:, None] + self._arange])
        return w[:, :-1], w[:, 1:], True


def fit_advice(n: int, batch_size: int, seq_len: int, world: int = 1) -> str:
    """Settings that do fit ``n`` training tokens (B streams of T tokens per process need
    n - 1 - T >= world * B * T), or a longer corpus when even one stream of one token does not."""
    streams = (n - 1 - seq_len) // (world * seq_len)
    if streams >= 1:
        return f"use --batch-size {streams} or less (or a shorter --seq-len)"
    longest = (n - 1) // (world + 1)
    if longest >= 1:
        return f"use --batch-size 1 --seq-len {longest} or less"
    return _longer_corpus(world + 2)


def _longer_corpus(need: int) -> str:
    return f"give a longer corpus: the training split needs at least {need} tokens (see --val-fraction)"


def make_batches(kind: str, ids, batch_size: int, seq_len: int, seed: int, rank: int = 0, world: int = 1):
    cls = StreamBatches if kind == "stream" else RandomBatches
    return cls(ids, batch_size, seq_len, seed, rank, world)


class RecordBatches:
    """B streams of whole records (``records.py``), each record in chunks of its own: a record
    begins at the start of a chunk with its row's state zeroed, so nothing of one record leaks
    into the next; a long record carries its state across its chunks (truncated BPTT). Each
    sequence is ``start, tokens.., END``: x is all but its last id, y all but its first; padding
    has x 0 and y -100 (ignored by the loss). ``get`` returns ``reset`` as a (B,) bool mask.

    Each epoch deals the records, shuffled, to the streams with the fewest chunks so far, so
    streams end close together; a batch stays a pure function of the step."""

    def __init__(
        self,
        seqs: list[torch.Tensor] | tuple[torch.Tensor, list[int]],
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ):
        """``seqs``: the records' id sequences, as a list of 1-D tensors, or as ``(flat, lengths)``:
        all of them concatenated (one tensor, no per-record objects) and each one's length."""
        if isinstance(seqs, tuple):
            flat, lengths = seqs
        else:
            flat, lengths = (torch.cat(seqs) if seqs else torch.zeros(0, dtype=torch.long)), [len(s) for s in seqs]
        if not len(lengths):
            raise UsageError("the training split holds no record; lower --val-fraction or give more records")
        self.B, self.T, self.seed, self.rank, self.world = batch_size, seq_len, seed, rank, world
        self.flat = as_numpy(flat)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.chunks = (self.lengths - 2) // seq_len + 1  # ceil((len - 1) / T): predictions over T
        self._cols = np.arange(seq_len)
        layout = self._layout(0)
        self.steps_per_epoch = layout.shape[2]  # of the first epoch; the others differ by a step or two
        self._firsts, self._steps, self._current = [0], [layout.shape[2]], (0, layout)

    def _layout(self, epoch: int) -> np.ndarray:
        """This rank's B streams as a (2, B, steps) array: the record and the chunk of it each row
        reads at each step of the epoch (record -1: padding, the stream has run out). ``steps``,
        the longest of all ranks' streams, is the same on every rank."""
        import heapq

        g = torch.Generator().manual_seed(_seed(self.seed, epoch, 7))
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        n, chunks = self.world * self.B, self.chunks.tolist()
        streams: list[list[int]] = [[] for _ in range(n)]
        loads = [0] * n
        heap = [(0, i) for i in range(n)]
        for r in order:  # each record to the stream with the fewest chunks so far
            load, i = heapq.heappop(heap)
            streams[i].append(r)
            loads[i] = load + chunks[r]
            heapq.heappush(heap, (loads[i], i))
        mine = range(self.rank * self.B, (self.rank + 1) * self.B)
        out = np.full((2, self.B, max(loads)), -1, dtype=np.int32)
        for b, i in enumerate(mine):
            recs = np.asarray(streams[i], dtype=np.int64)
            counts = self.chunks[recs]
            firsts = np.cumsum(counts) - counts
            out[0, b, : loads[i]] = np.repeat(recs, counts)
            out[1, b, : loads[i]] = np.arange(loads[i]) - np.repeat(firsts, counts)
        return out

    def _epoch_of(self, step: int) -> tuple[int, np.ndarray]:
        """(step within its epoch, that epoch's layout); epochs are laid out as steps reach them."""
        import bisect

        while step >= self._firsts[-1] + self._steps[-1]:
            e = len(self._firsts)
            layout = self._layout(e)
            self._firsts.append(self._firsts[-1] + self._steps[-1])
            self._steps.append(layout.shape[2])
            self._current = (e, layout)
        e = bisect.bisect_right(self._firsts, step) - 1
        if self._current[0] != e:
            self._current = (e, self._layout(e))
        return step - self._firsts[e], self._current[1]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k, layout = self._epoch_of(step)
        rec, chunk = layout[0, :, k], layout[1, :, k]
        real = rec >= 0
        r = np.where(real, rec, 0)
        lo = chunk * self.T
        n = np.where(real, np.minimum(self.T, self.lengths[r] - 1 - lo), 0)  # predictions in the chunk
        mask = self._cols < n[:, None]
        at = np.where(mask, (self.starts[r] + lo)[:, None] + self._cols, 0)
        x = torch.from_numpy(np.where(mask, self.flat[at].astype(np.int64), 0))
        y = torch.from_numpy(np.where(mask, self.flat[at + 1].astype(np.int64), -100))
        reset = torch.from_numpy(~real | (chunk == 0))
        return x, y, reset
