"""Damaged files: checkpoints (a checksum of everything they hold, and consistency checks on
load) and the sampling kernel's pack cache (checked, bounded, checksummed, rebuilt). Each damage
is one line and the right exit code, never a traceback, a hang, a crash or wrong text."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_FLAGS, assert_one_error_line

import charrnn
from charrnn import checkpoint
from charrnn.errors import CharrnnError


@pytest.fixture
def best(tmp_path, run_dir) -> Path:
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
            {k: v for k, v in original.items() if k != "path"}
        )
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


def _set(key):
    def edit(c):
        d = c
        *parents, last = key.split(".")
        for p in parents:
            d = d[p]
        d[last] = VALUES[key]

    return edit


VALUES = {
    "shape.hidden": 64,
    "shape.vocab_size": 99,
    "shape.cell": "gru",
    "shape.layers": 2**40,
    "shape.embed": 10**9,
    "tokenizer.level": "byte",
    "step": -100,
    "tokens_seen": -5,
    "best_val_loss": float("nan"),
    "train_seconds": float("inf"),
    "config.train.min_lr_ratio": -3.0,
    "config.train.lr": float("nan"),
    "shape.dropout": 5.0,
}

DAMAGE = {
    "hidden disagrees with weights": (_set("shape.hidden"), "shape says"),
    "vocab size disagrees with tokenizer": (_set("shape.vocab_size"), "tokenizer"),
    "cell disagrees with weights": (_set("shape.cell"), "shape says"),
    "2^40 layers": (_set("shape.layers"), "out of range"),
    "10^9 wide embedding": (_set("shape.embed"), "out of range"),
    "dropout 5": (_set("shape.dropout"), "dropout"),
    "unknown tokenizer level": (_set("tokenizer.level"), "tokenizer"),
    "repeated tokens": (lambda c: c["tokenizer"]["vocab"].__setitem__(1, c["tokenizer"]["vocab"][0]), "repeated"),
    "missing weight": (lambda c: c["model"].pop("head.bias"), "not those of"),
    "weight of the wrong shape": (lambda c: c["model"].__setitem__("head.bias", torch.zeros(3)), "shape says"),
    "one NaN weight": (lambda c: c["model"]["rnn.weight_hh_l0"].view(-1).__setitem__(5, float("nan")), "NaN"),
    "all NaN weights": (lambda c: [t.fill_(float("nan")) for t in c["model"].values()], "NaN"),
    "an infinite weight": (lambda c: c["model"]["emb.weight"].view(-1).__setitem__(0, float("inf")), "infinite"),
    "step -100": (_set("step"), "step -100"),
    "tokens seen negative": (_set("tokens_seen"), "tokens_seen"),
    "best loss NaN": (_set("best_val_loss"), "best validation loss"),
    "train seconds infinite": (_set("train_seconds"), "train_seconds"),
    "saved min_lr_ratio -3": (_set("config.train.min_lr_ratio"), "min_lr_ratio"),
    "saved lr NaN": (_set("config.train.lr"), "--lr"),
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
            json.loads(line, parse_constant=lambda c, line=line: pytest.fail(f"{c} in JSON: {line}"))
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
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(
    cli, tmp_path, corpus_file, monkeypatch, limit
):
    out = tmp_path / "run"
    assert (
        cli("train", corpus_file, *TINY_FLAGS, "--max-steps", "6", "--eval-every", "3", "--out", out, "-q").exit_code
        == 0
    )
    before = {n: (out / n).read_bytes() for n in ("last.pt", "best.pt")}
    monkeypatch.setattr(os, "fdopen", _full_after(limit))  # every write through os.fdopen: the disk is full
    r = cli("train", corpus_file, "--resume", "--max-steps", "12", "--out", out, "-q")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "No space left on device", "intact")
    monkeypatch.undo()
    assert (out / "last.pt").read_bytes() == before["last.pt"]
    assert checkpoint.load(out / "last.pt")["step"] == 6
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    r = cli("train", corpus_file, "--resume", "--max-steps", "12", "--out", out, "-q")  # space again: it goes on
    assert r.exit_code == 0, r.stderr


# ---------------------------------------------------------------- the sampling kernel's pack cache

from charrnn.sampling.native import build as native_build  # noqa: E402
from charrnn.sampling.native.cache import PACK_MAGIC, contents_key, load_pack, pack_path, save_pack  # noqa: E402


@pytest.fixture
def packed(tmp_path, run_dir):
    """A checkpoint copy whose pack is cached, the text it samples, and the pack's path (which
    the copies of one checkpoint share: a pack is found by the checkpoint's contents)."""
    if native_build.lib() is None:
        pytest.skip("no C compiler here: no native kernel, no packs")
    ckpt = tmp_path / "best.pt"
    shutil.copy(run_dir / "best.pt", ckpt)
    text = charrnn.load(ckpt).sample("The ", length=80, temperature=0.8, seed=4)
    path = pack_path(contents_key(ckpt), "auto")
    assert load_pack(path) is not None
    yield ckpt, text, path
    # Copies of one checkpoint share its pack: whatever a test left at the path goes.
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _resave(path, edit):
    """Rewrite the pack with ``edit(header)`` applied and a matching checksum: a consistent file."""
    header, blob, offset = load_pack(path)
    edit(header)
    path.unlink()
    save_pack(path, header, blob, offset)


def _flip_blob(path):
    data = bytearray(path.read_bytes())
    rng = random.Random(1)
    for i in rng.sample(range(len(data) // 2, len(data) - 40), 16):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))


def _header_in_place(path, edit):
    """Edit the header where it lies, sizes self-consistent, the old checksum kept."""
    data = path.read_bytes()
    n = int.from_bytes(data[len(PACK_MAGIC) : len(PACK_MAGIC) + 8], "little")
    start = len(PACK_MAGIC) + 8
    header = json.loads(data[start : start + n])
    edit(header)
    head = json.dumps(header).encode()
    path.write_bytes(PACK_MAGIC + len(head).to_bytes(8, "little") + head + data[start + n :])


def _narrow(h):
    h["hidden"], h["rows"] = 16, 64
    h["K"] = [32 for _ in h["K"]]


PACK_DAMAGE = {
    "a named pipe at the path": lambda p: (p.unlink(), os.mkfifo(p)),
    "random bytes in the blob": _flip_blob,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-100]),
    "header length of 2^62": lambda p: p.write_bytes(
        PACK_MAGIC + (2**62).to_bytes(8, "little") + p.read_bytes()[len(PACK_MAGIC) + 8 :]
    ),
    "nbytes of 2^40, checksum redone": lambda p: _resave_raw(p, lambda h: h.__setitem__("nbytes", 2**40)),
    "narrower than the model, checksum kept": lambda p: _header_in_place(p, _narrow),
    "widths narrower than the shape, checksum redone": lambda p: _resave(
        p, lambda h: h.__setitem__("K", [16 for _ in h["K"]])
    ),
    "hidden 10^6, checksum redone": lambda p: _resave(p, lambda h: h.__setitem__("hidden", 10**6)),
    "vocabulary larger than the tokenizer, checksum redone": lambda p: _resave(
        p, lambda h: h.__setitem__("vocab", h["vocab"] + 16)
    ),
    "misaligned array, checksum redone": lambda p: _resave(
        p, lambda h: h["arrays"]["head_b"].__setitem__(0, h["arrays"]["head_b"][0] + 4)
    ),
    "not JSON": lambda p: p.write_bytes(PACK_MAGIC + (5).to_bytes(8, "little") + b"{{{{{" + b"\0" * 64),
    "empty file": lambda p: p.write_bytes(b""),
}


def _resave_raw(path, edit):
    """The header edited and the checksum redone over what the file holds (sizes not adjusted)."""
    import hashlib

    data = path.read_bytes()
    start = len(PACK_MAGIC) + 8
    n = int.from_bytes(data[len(PACK_MAGIC) : start], "little")
    header = json.loads(data[start : start + n])
    edit(header)
    head = json.dumps(header).encode()
    size = len(head).to_bytes(8, "little")
    body = data[start + n : -32]
    path.write_bytes(PACK_MAGIC + size + head + body + hashlib.sha256(size + head + body).digest())


@pytest.mark.parametrize("kind", PACK_DAMAGE)
def test_a_damaged_pack_is_rebuilt_and_the_text_is_right(packed, kind):
    ckpt, text, path = packed
    PACK_DAMAGE[kind](path)
    assert load_pack(path) is None
    assert charrnn.load(ckpt).sample("The ", length=80, temperature=0.8, seed=4) == text
    assert path.is_file() and load_pack(path) is not None  # repaired


def test_a_folder_at_the_pack_path_is_survived(packed):
    ckpt, text, path = packed
    path.unlink()
    path.mkdir()
    assert charrnn.load(ckpt).sample("The ", length=80, temperature=0.8, seed=4) == text


@pytest.mark.slow
def test_a_damaged_pack_in_a_real_process_neither_hangs_nor_crashes(packed, tmp_path):
    from conftest import run_charrnn

    ckpt, text, path = packed
    _header_in_place(path, _narrow)
    r = run_charrnn(
        "sample", "-c", ckpt, "--prompt", "The ", "-n", "80", "--temp", "0.8", "--seed", "4", "--no-echo", timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == text + "\n"
    path.unlink()
    os.mkfifo(path)
    r = run_charrnn(
        "sample", "-c", ckpt, "--prompt", "The ", "-n", "80", "--temp", "0.8", "--seed", "4", "--no-echo", timeout=60
    )
    assert r.returncode == 0 and r.stdout.decode() == text + "\n"


# ---------------------------------------------------------------- a failed kernel build is retried when it may succeed


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """A first build in a new process (``build.load``), with a cache folder of its own."""
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    return native_build.load


def _fake_cc(path, body: str) -> str:
    # A body that refuses kernels.c matches "*/kernels.c*": the source path, never the
    # temporary output ".kernels.XXXXXX.so", which starts with "c" one time in 37.
    tmp = path.with_name(path.name + ".new")  # written aside and renamed: never busy when run
    tmp.write_text("#!/bin/sh\n" + body + "\n")
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return str(path)


def _real_cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler here")
    return cc


def test_a_refusing_compiler_is_remembered_until_it_changes(tmp_path, monkeypatch, fresh_build):
    real = _real_cc()
    # Refuses kernels.c whatever the flags, builds anything else: a compiler that cannot build it.
    cc = _fake_cc(tmp_path / "cc", f'case "$*" in */kernels.c*) exit 1;; esac\nexec {real} "$@"')
    monkeypatch.setenv("CC", cc)
    assert fresh_build() is None
    assert list((tmp_path / "cache").glob("*.failed"))
    calls = tmp_path / "calls"
    _fake_cc(tmp_path / "cc", f'echo x >> {calls}\ncase "$*" in */kernels.c*) exit 1;; esac\nexec {real} "$@"')
    os.utime(tmp_path / "cc", ns=(os.stat(cc).st_atime_ns, os.stat(cc).st_mtime_ns))
    # Same size? Not necessarily; pin the identity check to what is recorded instead.
    failed = next((tmp_path / "cache").glob("*.failed"))
    failed.write_text(native_build.compiler_identity([cc]))
    assert fresh_build() is None and not calls.exists()  # remembered: not asked again
    _fake_cc(tmp_path / "cc", f'exec {real} "$@"')  # the compiler was updated
    assert fresh_build() is not None
    assert not list((tmp_path / "cache").glob("*.failed"))


def test_a_remembered_refusal_expires(tmp_path, monkeypatch, fresh_build):
    real = _real_cc()
    cc = _fake_cc(tmp_path / "cc", f'case "$*" in */kernels.c*) exit 1;; esac\nexec {real} "$@"')
    monkeypatch.setenv("CC", cc)
    assert fresh_build() is None
    failed = next((tmp_path / "cache").glob("*.failed"))
    calls = tmp_path / "calls"
    stat = os.stat(cc)
    _fake_cc(tmp_path / "cc", f'echo x >> {calls}\ncase "$*" in */kernels.c*) exit 1;; esac\nexec {real} "$@"')
    os.utime(cc, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    failed.write_text(native_build.compiler_identity([cc]))  # the same compiler, as far as the record goes
    assert fresh_build() is None and not calls.exists()  # asked again too soon: not asked
    day_ago = failed.stat().st_mtime - native_build.FAILURE_KEPT - 10
    os.utime(failed, (day_ago, day_ago))
    fresh_build()
    assert calls.exists()  # a day later it is asked again


def test_a_build_that_fails_for_the_machine_is_not_remembered(tmp_path, monkeypatch, fresh_build):
    # Fails on everything, an empty file too: a full disk, not a compiler that refuses kernels.c.
    cc = _fake_cc(
        tmp_path / "cc", 'echo "fatal error: error writing to /tmp/ccX.s: No space left on device" >&2; exit 1'
    )
    monkeypatch.setenv("CC", cc)
    assert fresh_build() is None
    assert not list((tmp_path / "cache").glob("*.failed"))
    _fake_cc(tmp_path / "cc", f'exec {_real_cc()} "$@"')  # space again
    assert fresh_build() is not None


def test_a_damaged_kernel_library_is_built_again(tmp_path, monkeypatch, fresh_build):
    monkeypatch.setenv("CC", _real_cc())
    assert fresh_build() is not None
    so = next((tmp_path / "cache").glob("kernels-*.so"))
    damaged = so.with_name("damaged")
    damaged.write_bytes(so.read_bytes()[:1000])
    os.replace(damaged, so)  # as a new process would find it (this one keeps its mapping of the old file)
    assert fresh_build() is not None


def test_settings_this_version_does_not_know_do_not_make_a_checkpoint_damaged(best):
    ckpt = _raw(best)
    ckpt.pop("checksum")
    ckpt["config"]["train"]["a_setting_from_elsewhere"] = 3
    ckpt["config"]["plotting"] = {"width": 5}
    torch.save(ckpt, best)
    assert charrnn.load(best).sample("The ", length=5, seed=1)


# ---------------------------------------------------------------- the token cache is checked, not trusted


@pytest.mark.parametrize("new_id", [250, 3])  # outside the vocabulary, and inside it (other data)
def test_a_damaged_token_cache_entry_is_rebuilt_with_one_line(cli, tmp_path, corpus_file, monkeypatch, new_id):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    flags = [*TINY_FLAGS, "--max-steps", "8", "--eval-every", "4", "-q"]
    first = cli("train", corpus_file, *flags, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.stderr
    ids = next((tmp_path / "cache" / "tokens").glob("*/ids.bin"))
    data = bytearray(ids.read_bytes())
    data[100] = data[101] = new_id  # the same size
    ids.write_bytes(bytes(data))
    again = cli("train", corpus_file, *flags, "--out", tmp_path / "b")
    assert again.exit_code == 0, again.stderr
    notes = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "damaged" in notes[0] and "Traceback" not in again.stderr, again.stderr
    metrics = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("a", "b")]
    strip = lambda text: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in text.splitlines()]  # noqa: E731
    assert strip(metrics[0]) == strip(metrics[1])  # trained on the corpus, not on the damage
    assert ids.read_bytes() != bytes(data)  # rebuilt


def test_a_cached_pack_never_samples_a_damaged_checkpoint(cli, packed):
    """A flipped weight bit, the file's size and time kept: the cached pack belongs to the
    contents it was packed from, so sampling loads the checkpoint and says it is damaged."""
    ckpt, text, _ = packed
    st = ckpt.stat()
    ckpt_dict = checkpoint.load(ckpt)
    data = bytearray(ckpt.read_bytes())
    weights = ckpt_dict["model"]["head.weight"].numpy().tobytes()
    at = bytes(data).find(weights[:64])
    assert at > 0
    data[at + 5] ^= 0x10
    ckpt.write_bytes(bytes(data))
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = cli("sample", "-c", ckpt, "--prompt", "The ", "-n", "20", "--seed", "4")
    assert r.exit_code == 1 and r.stdout == ""
    assert_one_error_line(r.stderr, "damaged")
