"""Damaged files: checkpoints (a checksum of everything they hold, and consistency checks on
load) and the sampling kernel's pack cache (checked, bounded, checksummed, rebuilt). Each damage
is one line and the right exit code, never a traceback, a hang, a crash or wrong text."""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import random
import shutil

import pytest
import torch

import charrnn
from charrnn import checkpoint
from charrnn.errors import CharrnnError

from conftest import TINY_FLAGS, assert_one_error_line


@pytest.fixture
def best(tmp_path, run_dir) -> "Path":
    p = tmp_path / "best.pt"
    shutil.copy(run_dir / "best.pt", p)
    return p


def _raw(path) -> dict:
    return torch.load(path, weights_only=True)


# ---------------------------------------------------------------- bit flips and the checksum


def test_single_bit_flips_never_load_as_different_weights(best):
    original = checkpoint.load(best)
    data = bytearray(best.read_bytes())
    rng = random.Random(0)
    refused = 0
    for _ in range(40):
        flipped = bytearray(data)
        i = rng.randrange(len(flipped))
        flipped[i] ^= 1 << rng.randrange(8)
        best.write_bytes(flipped)
        try:
            got = checkpoint.load(best)
        except CharrnnError as e:
            assert "\n" not in str(e)
            refused += 1
            continue
        # Loaded: then it is bit for bit what was saved (the flip hit padding or zip metadata).
        assert checkpoint.digest({k: v for k, v in got.items() if k != "path"}) == checkpoint.digest(
            {k: v for k, v in original.items() if k != "path"})
    assert refused >= 30


def test_a_flipped_weight_is_refused_by_its_checksum_in_one_line(cli, best):
    ckpt = _raw(best)
    w = ckpt["model"]["head.weight"]
    w.view(-1).view(torch.int32)[3] ^= 1 << 29  # a weight becomes ~1e37: finite, wrong
    torch.save(ckpt, best)
    for args in (["info", best], ["sample", "-c", best, "-n", "5"], ["score", best, "-c", best, "--json"]):
        r = cli(*args)
        assert r.exit_code == 1, args
        assert_one_error_line(r.stderr, "checksum")


def test_checkpoints_from_before_checksums_still_load(best):
    ckpt = _raw(best)
    ckpt.pop("checksum")
    torch.save(ckpt, best)
    model = charrnn.load(best)
    assert len(model.sample("The ", length=20, seed=1)) == 20


# ---------------------------------------------------------------- consistency, checked with and without a checksum


def _set(path, key):
    def edit(c):
        d = c
        *parents, last = key.split(".")
        for p in parents:
            d = d[p]
        d[last] = VALUES[key]
    return edit


VALUES = {"shape.hidden": 64, "shape.vocab_size": 99, "shape.cell": "gru", "shape.layers": 2**40, "shape.embed": 10**9,
          "tokenizer.level": "byte", "step": -100, "tokens_seen": -5, "best_val_loss": float("nan"),
          "train_seconds": float("inf"), "config.train.min_lr_ratio": -3.0, "config.train.lr": float("nan"),
          "shape.dropout": 5.0}

DAMAGE = {
    "hidden disagrees with weights": (_set(None, "shape.hidden"), "shape says"),
    "vocab size disagrees with tokenizer": (_set(None, "shape.vocab_size"), "tokenizer"),
    "cell disagrees with weights": (_set(None, "shape.cell"), "shape says"),
    "2^40 layers": (_set(None, "shape.layers"), "out of range"),
    "10^9 wide embedding": (_set(None, "shape.embed"), "out of range"),
    "dropout 5": (_set(None, "shape.dropout"), "dropout"),
    "unknown tokenizer level": (_set(None, "tokenizer.level"), "tokenizer"),
    "repeated tokens": (lambda c: c["tokenizer"]["vocab"].__setitem__(1, c["tokenizer"]["vocab"][0]), "repeated"),
    "missing weight": (lambda c: c["model"].pop("head.bias"), "not those of"),
    "weight of the wrong shape": (lambda c: c["model"].__setitem__("head.bias", torch.zeros(3)), "shape says"),
    "one NaN weight": (lambda c: c["model"]["rnn.weight_hh_l0"].view(-1).__setitem__(5, float("nan")), "NaN"),
    "all NaN weights": (lambda c: [t.fill_(float("nan")) for t in c["model"].values()], "NaN"),
    "an infinite weight": (lambda c: c["model"]["emb.weight"].view(-1).__setitem__(0, float("inf")), "infinite"),
    "step -100": (_set(None, "step"), "step -100"),
    "tokens seen negative": (_set(None, "tokens_seen"), "tokens_seen"),
    "best loss NaN": (_set(None, "best_val_loss"), "best validation loss"),
    "train seconds infinite": (_set(None, "train_seconds"), "train_seconds"),
    "saved min_lr_ratio -3": (_set(None, "config.train.min_lr_ratio"), "min_lr_ratio"),
    "saved lr NaN": (_set(None, "config.train.lr"), "--lr"),
    "carried state of the wrong shape": (lambda c: c.__setitem__("state", [torch.zeros(1, 2, 3)] * 2), "carried state"),
}


@pytest.mark.parametrize("with_checksum", [True, False], ids=["checksummed", "old format"])
@pytest.mark.parametrize("name", DAMAGE)
def test_an_inconsistent_checkpoint_is_one_line(cli, run_dir, tmp_path, name, with_checksum):
    edit, needle = DAMAGE[name]
    ckpt = _raw(run_dir / "last.pt")
    ckpt.pop("checksum")
    edit(ckpt)
    p = tmp_path / "last.pt"
    if with_checksum:
        checkpoint.save(ckpt, p)  # a consistent checksum: only the checks can tell
    else:
        torch.save(ckpt, p)
    with pytest.raises(CharrnnError, match="damaged"):
        checkpoint.load(p)
    r = cli("info", p)
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "damaged", needle)


def test_a_last_pt_with_a_negative_step_does_not_resume(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    assert cli("train", corpus_file, *TINY_FLAGS, "--max-steps", "4", "--out", out, "-q").exit_code == 0
    ckpt = _raw(out / "last.pt")
    ckpt.pop("checksum")
    ckpt["step"] = -100
    checkpoint.save(ckpt, out / "last.pt")
    r = cli("train", corpus_file, "--resume", "--max-steps", "8", "--out", out, "-q")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "damaged", "step -100")


def test_score_json_never_prints_infinity_or_nan(cli, run_dir, tmp_path, corpus_text):
    """Finite weights that overflow the logits (a legitimate checkpoint, checksum and all)."""
    ckpt = _raw(run_dir / "best.pt")
    ckpt.pop("checksum")
    ckpt["model"]["head.weight"].mul_(3e37).clamp_(-3e38, 3e38)
    p = tmp_path / "huge.pt"
    checkpoint.save(ckpt, p)
    f = tmp_path / "held.txt"
    f.write_text(corpus_text[:400], encoding="utf-8")
    for args in (["score", f, "-c", p, "--json"], ["score", f, "-c", p, "--json", "--per-line"]):
        r = cli(*args)
        assert r.exit_code == 0, r.stderr
        for line in r.stdout.splitlines():
            json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON: {line}"))
    plain = cli("score", f, "-c", p)
    assert plain.exit_code == 0 and "Traceback" not in plain.stderr


# ---------------------------------------------------------------- a full disk during a save


def _full_after(limit: int):
    """os.fdopen whose files take ``limit`` bytes, then fail as a full disk does."""
    real = os.fdopen

    def fdopen(fd, mode="r", *a, **kw):
        f = real(fd, mode, *a, **kw)
        if "w" not in mode:
            return f
        write, written = f.write, [0]

        def limited(b):
            written[0] += len(b)
            if written[0] > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(b)

        f.write = limited
        return f

    return fdopen


@pytest.mark.parametrize("limit", [0, 2000, 20000])
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(cli, tmp_path, corpus_file, monkeypatch, limit):
    out = tmp_path / "run"
    assert cli("train", corpus_file, *TINY_FLAGS, "--max-steps", "6", "--eval-every", "3", "--out", out, "-q").exit_code == 0
    before = {n: (out / n).read_bytes() for n in ("last.pt", "best.pt")}
    monkeypatch.setattr(checkpoint.os, "fdopen", _full_after(limit))
    r = cli("train", corpus_file, "--resume", "--max-steps", "12", "--out", out, "-q")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "No space left on device", "intact")
    monkeypatch.undo()
    assert (out / "last.pt").read_bytes() == before["last.pt"]
    assert checkpoint.load(out / "last.pt")["step"] == 6
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    r = cli("train", corpus_file, "--resume", "--max-steps", "12", "--out", out, "-q")  # space again: it goes on
    assert r.exit_code == 0, r.stderr
