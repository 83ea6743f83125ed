"""Corpus reading, id dtypes, the train/val split, and the two batch schedules."""

from __future__ import annotations

import io
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from charrnn.data.batches import ZERO_STATE_EVERY, RandomBatches, StreamBatches, make_batches, split
from charrnn.data.corpus import read_text as read_corpus
from charrnn.data.vectorized import smallest_dtype
from charrnn.errors import UsageError


@pytest.mark.parametrize(
    "vocab_size, dtype",
    [
        (1, np.uint8),
        (65, np.uint8),
        (256, np.uint8),
        (257, np.int16),
        (2**15, np.int16),
        (2**15 + 1, np.int32),
        (200_000, np.int32),
    ],
)
def test_ids_take_the_smallest_type_that_holds_the_largest_id(vocab_size, dtype):
    assert smallest_dtype(vocab_size) == dtype
    ids = np.asarray([0, vocab_size - 1, 1], dtype=smallest_dtype(vocab_size))
    assert ids.astype(np.int64).tolist() == [0, vocab_size - 1, 1]


def test_split_default_is_first_90_percent_then_last_10():
    ids = torch.arange(1000)
    train, val = split(ids, 0.1)
    assert train.tolist() == list(range(900))
    assert val.tolist() == list(range(900, 1000))


@pytest.mark.parametrize("fraction", ["0.1", "0.05", "0.2", "0.3", "0.25"])
def test_split_sizes_are_exact_for_every_length(fraction):
    """The train split is floor(n * (1 - f)) tokens, computed exactly; the val split is the rest."""
    f = float(fraction)
    wrong = []
    for n in range(1, 400):
        train, val = split(torch.arange(n), f)
        expected = int(n * (1 - Fraction(fraction)))  # exact rational arithmetic
        if len(train) != expected:
            wrong.append((n, len(train), expected))
        assert torch.equal(torch.cat([train, val]), torch.arange(n))
    assert not wrong, f"val_fraction={fraction}: (n, got, expected) {wrong[:5]}"


def test_split_with_zero_fraction_keeps_everything_for_training():
    train, val = split(torch.arange(10), 0.0)
    assert len(train) == 10 and len(val) == 0


def _arange_ids(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int32)


def test_stream_rows_continue_across_batches():
    ids = _arange_ids(5000)
    b = StreamBatches(ids, batch_size=4, seq_len=16, seed=3)
    assert b.steps_per_epoch >= 3
    prev_x = None
    for k in range(b.steps_per_epoch):
        x, y, reset = b.get(k)
        assert x.shape == y.shape == (4, 16)
        assert x.dtype == torch.long
        assert torch.equal(y, x + 1)  # targets are the next token
        assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # each row is contiguous
        assert reset.shape == (4,) and reset.all() == (k == 0)
        if prev_x is not None:
            # Row i of batch k continues row i of batch k-1 exactly where it ended.
            assert torch.equal(x[:, 0], prev_x[:, -1] + 1)
        prev_x = x


def test_stream_rows_are_disjoint_streams():
    ids = _arange_ids(5000)
    b = StreamBatches(ids, batch_size=4, seq_len=16, seed=3)
    firsts = b.get(0)[0][:, 0]
    gaps = (firsts[1:] - firsts[:-1]).tolist()
    assert all(g == b.stream_len for g in gaps)  # rows start one stream length apart


def test_stream_new_epoch_resets_and_moves_the_offset():
    ids = _arange_ids(3000)
    b = StreamBatches(ids, batch_size=2, seq_len=16, seed=0)
    spe = b.steps_per_epoch
    offsets = set()
    for epoch in range(6):
        x, _, reset = b.get(epoch * spe)
        assert reset.all()
        assert 0 <= int(x[0, 0]) < 16
        offsets.add(int(x[0, 0]))
        assert not b.get(epoch * spe + 1)[2].all()
    assert len(offsets) > 1  # chunk boundaries move between epochs


def test_each_stream_starts_from_the_zero_state_in_turn():
    # Sampling and scoring start from the zero state: training must meet it more than once an epoch.
    ids = _arange_ids(200_000)
    b = StreamBatches(ids, batch_size=8, seq_len=16, seed=1)
    steps = 2 * ZERO_STATE_EVERY
    assert b.steps_per_epoch > steps
    resets = torch.stack([b.get(step)[2] for step in range(1, steps + 1)])  # (steps, B), no epoch start
    assert resets.sum(0).tolist() == [2] * 8  # every stream twice, once per ZERO_STATE_EVERY steps
    assert resets.sum(1).max() == 1  # one stream at a time
    halves = [
        torch.cat([p.get(step)[2] for p in (StreamBatches(ids, 4, 16, seed=1, rank=r, world=2) for r in range(2))])
        for step in range(1, 9)
    ]
    assert torch.equal(torch.stack(halves), resets[:8])  # ranks split the rows of one process


def test_stream_batches_are_a_pure_function_of_the_step():
    ids = _arange_ids(4000)
    a = StreamBatches(ids, 3, 8, seed=11)
    order = [5, 0, 200, 7, 5, 199]
    got = [a.get(s)[0].clone() for s in order]
    for s, x in zip(order, got):
        fresh = StreamBatches(ids, 3, 8, seed=11)
        assert torch.equal(fresh.get(s)[0], x)


def test_stream_ranks_split_the_single_process_rows():
    ids = _arange_ids(4000)
    whole = StreamBatches(ids, 4, 8, seed=5)
    parts = [StreamBatches(ids, 2, 8, seed=5, rank=r, world=2) for r in range(2)]
    for step in (0, 3, whole.steps_per_epoch + 1):
        x = whole.get(step)[0]
        assert torch.equal(torch.cat([p.get(step)[0] for p in parts]), x)


def test_stream_too_small_corpus_is_a_usage_error():
    with pytest.raises(UsageError, match="too small"):
        StreamBatches(_arange_ids(100), batch_size=8, seq_len=16, seed=0)


def test_random_batches_are_contiguous_windows_and_deterministic():
    ids = _arange_ids(3000)
    b = RandomBatches(ids, 5, 12, seed=2)
    for step in range(5):
        x, y, reset = b.get(step)
        assert reset
        assert x.shape == (5, 12)
        assert torch.equal(y, x + 1)
        assert torch.equal(x[:, 1:], x[:, :-1] + 1)
        assert torch.equal(RandomBatches(ids, 5, 12, seed=2).get(step)[0], x)
    assert not torch.equal(b.get(0)[0], b.get(1)[0])
    assert not torch.equal(b.get(0)[0], RandomBatches(ids, 5, 12, seed=2, rank=1, world=2).get(0)[0])


def test_make_batches_picks_the_schedule():
    ids = _arange_ids(3000)
    assert isinstance(make_batches("stream", ids, 2, 8, 0), StreamBatches)
    assert isinstance(make_batches("random", ids, 2, 8, 0), RandomBatches)


def test_read_corpus_keeps_bytes_exactly(tmp_path):
    text = "\ufeffBOM first\r\nCRLF line\r\n\ttab\n日本語 🐍\n"
    p = tmp_path / "my corpus.txt"
    p.write_bytes(text.encode("utf-8"))
    got, name = read_corpus(str(p))
    assert got == text  # BOM kept, no newline translation
    assert name == "my corpus"


def test_read_corpus_from_stdin(monkeypatch):
    raw = "from stdin\r\n\ufeff".encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    assert read_corpus("-") == ("from stdin\r\n\ufeff", "stdin")


def test_read_corpus_errors(tmp_path):
    with pytest.raises(UsageError, match="corpus not found"):
        read_corpus(str(tmp_path / "missing.txt"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8 .*offset 3"):
        read_corpus(str(bad))
