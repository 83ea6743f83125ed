"""Bad input through the real CLI: every number checked (finite, in range) for flags and YAML
alike, unusable files refused, YAML expansion bounded. Each is exit 2 and one line naming the
problem, never a traceback, never a hang, never a silent run."""

from __future__ import annotations

import os

import pytest
from conftest import TINY_FLAGS, assert_one_error_line

TRAIN = ["train", "{corpus}", *TINY_FLAGS, "--max-steps", "2", "--out", "{out}"]
YAML = ["train", "{corpus}", "--max-steps", "2", "--out", "{out}", "--device", "cpu", "--config"]  # the YAML decides


def _yaml(text: str):
    return ("yaml", text)


# name: (args, needle); args may hold a ("yaml", text) pair, written to a file and given as --config.
BAD = {
    "lr nan": (TRAIN + ["--lr", "nan"], "--lr"),
    "lr inf": (TRAIN + ["--lr", "inf"], "--lr"),
    "lr negative": (TRAIN + ["--lr", "-1"], "--lr"),
    "lr zero": (TRAIN + ["--lr", "0"], "--lr"),
    "epochs nan": (TRAIN + ["--epochs", "nan"], "--epochs"),
    "epochs inf": (TRAIN + ["--epochs", "inf"], "--epochs"),
    "epochs negative": (TRAIN + ["--epochs", "-1"], "--epochs"),
    "seed 1e23": (TRAIN + ["--seed", "1e23"], "--seed"),
    "seed 10^23": (TRAIN + ["--seed", "100000000000000000000000"], "--seed"),
    "seed negative": (TRAIN + ["--seed", "-5"], "--seed"),
    "hidden 10^7": (TRAIN + ["--hidden", "10000000"], "--hidden"),
    "hidden 0": (TRAIN + ["--hidden", "0"], "--hidden"),
    "layers 1000": (TRAIN + ["--layers", "1000"], "--layers"),
    "embed 10^7": (TRAIN + ["--embed", "10000000"], "--embed"),
    "64 layers of 16384": (TRAIN + ["--layers", "64", "--hidden", "16384"], "billion parameters"),
    "yaml 32 layers of 8192": (YAML + [_yaml("model:\n  layers: 32\n  hidden: 8192\n")], "billion parameters"),
    "weight decay -1": (TRAIN + ["--weight-decay", "-1"], "--weight-decay"),
    "weight decay nan": (TRAIN + ["--weight-decay", "nan"], "--weight-decay"),
    "grad clip nan": (TRAIN + ["--grad-clip", "nan"], "--grad-clip"),
    "grad clip -1": (TRAIN + ["--grad-clip", "-1"], "--grad-clip"),
    "grad clip inf": (TRAIN + ["--grad-clip", "inf"], "--grad-clip"),
    "dropout nan": (TRAIN + ["--dropout", "nan"], "--dropout"),
    "dropout 1": (TRAIN + ["--dropout", "1"], "--dropout"),
    "val fraction nan": (TRAIN + ["--val-fraction", "nan"], "--val-fraction"),
    "val fraction 1": (TRAIN + ["--val-fraction", "1"], "--val-fraction"),
    "time budget nan": (TRAIN + ["--time-budget", "nan"], "duration"),
    "time budget negative": (TRAIN + ["--time-budget", "-5s"], "duration"),
    "max steps 0": (TRAIN + ["--max-steps", "0"], "--max-steps"),
    "eval every 0": (TRAIN + ["--eval-every", "0"], "--eval-every"),
    "warmup -1": (TRAIN + ["--warmup-steps", "-1"], "--warmup-steps"),
    "seq len 0": (TRAIN + ["--seq-len", "0"], "--seq-len"),
    "batch size -1": (TRAIN + ["--batch-size", "-1"], "--batch-size"),
    "max vocab 0": (TRAIN + ["--level", "word", "--max-vocab", "0"], "--max-vocab"),
    "min count 0": (TRAIN + ["--level", "word", "--min-count", "0"], "--min-count"),
    "yaml lr .nan": (YAML + [_yaml("train:\n  lr: .nan\n")], "--lr"),
    "yaml min_lr_ratio -3": (YAML + [_yaml("train:\n  min_lr_ratio: -3\n")], "min_lr_ratio"),
    "yaml min_lr_ratio .inf": (YAML + [_yaml("train:\n  min_lr_ratio: .inf\n")], "min_lr_ratio"),
    "yaml epochs .inf": (YAML + [_yaml("train:\n  epochs: .inf\n")], "--epochs"),
    "yaml time_budget .inf": (YAML + [_yaml("train:\n  time_budget: .inf\n")], "--time-budget"),
    "yaml weight_decay .nan": (YAML + [_yaml("train:\n  weight_decay: .nan\n")], "--weight-decay"),
    "yaml grad_clip -.inf": (YAML + [_yaml("train:\n  grad_clip: -.inf\n")], "--grad-clip"),
    "yaml seed 1e23": (YAML + [_yaml("train:\n  seed: 1e23\n")], "seed"),
    "yaml hidden true": (YAML + [_yaml("model:\n  hidden: true\n")], "hidden"),
    "yaml section a number": (YAML + [_yaml("model: 5\n")], "'model'"),
    "yaml section a list": (YAML + [_yaml("train: [1, 2]\n")], "'train'"),
    "yaml section a string": (YAML + [_yaml("data: corpus.txt\n")], "'data'"),
    "yaml top level a list": (YAML + [_yaml("- 1\n- 2\n")], "mapping"),
    "yaml numeric key": (YAML + [_yaml("model:\n  5: 3\n")], "unknown setting"),
    "yaml alias bomb": (
        YAML
        + [
            _yaml(
                "a: &a ['x','x','x','x','x','x','x','x','x']\n"
                + "".join(
                    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
                    for i in range(9)
                )
            )
        ],
        "alias",
    ),
    "yaml over a megabyte": (YAML + [_yaml("# padding\n" * 120_000)], "larger than"),
    "yaml nested 100k deep": (YAML + [_yaml("[" * 100_000 + "]" * 100_000)], "config file"),
    "yaml not utf-8": (YAML + [("bytes", b"train:\n  lr: 0.01 # caf\xe9\n")], "iconv -f"),
    "out is a file": (["train", "{corpus}", *TINY_FLAGS, "--max-steps", "2", "--out", "{corpus}"], "is a file"),
    "out under a file": (["train", "{corpus}", *TINY_FLAGS, "--max-steps", "2", "--out", "{corpus}/run"], "is a file"),
    "out under /proc": (["train", "{corpus}", *TINY_FLAGS, "--max-steps", "2", "--out", "/proc/charrnn-run"], "--out"),
    "corpus a fifo without writer": (
        ["train", "{fifo}", *TINY_FLAGS, "--max-steps", "2", "--out", "{out}"],
        "named pipe",
    ),
    "corpus a device": (
        ["train", "/dev/zero", *TINY_FLAGS, "--max-steps", "2", "--out", "{out}"],
        "not a regular file",
    ),
    "corpus latin-1": (
        ["train", "{latin1}", *TINY_FLAGS, "--max-steps", "2", "--out", "{out}"],
        "iconv -f WINDOWS-1252",
    ),
    "corpus empty": (["train", "{empty}", *TINY_FLAGS, "--max-steps", "2", "--out", "{out}"], "empty"),
    "config a fifo without writer": (YAML + ["{fifo}"], "named pipe"),
    "sample temp nan": (["sample", "-c", "{run}", "--temp", "nan"], "--temp"),
    "sample temp inf": (["sample", "-c", "{run}", "--temp", "inf"], "--temp"),
    "sample top-p nan": (["sample", "-c", "{run}", "--top-p", "nan"], "--top-p"),
    "sample seed negative": (["sample", "-c", "{run}", "--seed", "-1"], "--seed"),
    "sample seed 2^64": (["sample", "-c", "{run}", "--seed", str(2**64)], "--seed"),
    "sample num-samples 0": (["sample", "-c", "{run}", "--num-samples", "0"], "--num-samples"),
    "sample num-samples 10^9": (["sample", "-c", "{run}", "--num-samples", "1000000000"], "--num-samples"),
    "score a fifo without writer": (["score", "{fifo}", "-c", "{run}"], "named pipe"),
    "score latin-1": (["score", "{latin1}", "-c", "{run}"], "iconv -f"),
    "score /dev/zero": (["score", "/dev/zero", "-c", "{run}"], "not a regular file"),
}
# Checkpoints that cannot be used are failures (exit 1, README), still one line and no hang.
BAD_CHECKPOINTS = {
    "checkpoint a fifo": (["sample", "-c", "{fifo}"], "not a regular file"),
    "checkpoint a device": (["info", "/dev/zero"], "not a regular file"),
    "checkpoint a text file": (["info", "{corpus}"], "not a readable charrnn checkpoint"),
}


@pytest.fixture
def paths(tmp_path, corpus_file, run_dir, monkeypatch):
    monkeypatch.setenv("CHARRNN_PIPE_WAIT", "0.2")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\xe9 cr\xe8me, na\xefve.\n".encode("latin-1") * 20)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    return dict(
        corpus=corpus_file, run=run_dir, out=tmp_path / "out", fifo=fifo, latin1=latin1, empty=empty, tmp=tmp_path
    )


def test_at_least_forty_bad_inputs():
    assert len(BAD) >= 40


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_exit_2_and_one_line(cli, paths, name):
    args, needle = BAD[name]
    argv = []
    for a in args:
        if isinstance(a, tuple):
            f = paths["tmp"] / "run.yaml"
            f.write_bytes(a[1] if a[0] == "bytes" else a[1].encode())
            argv.append(str(f))
        else:
            argv.append(a.format(**paths))
    r = cli(*argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert r.stdout == ""
    assert_one_error_line(r.stderr, needle)
    assert not (paths["out"] / "last.pt").exists()


@pytest.mark.parametrize("name", BAD_CHECKPOINTS)
def test_an_unusable_checkpoint_is_exit_1_and_one_line(cli, paths, name):
    args, needle = BAD_CHECKPOINTS[name]
    r = cli(*[a.format(**paths) for a in args])
    assert r.exit_code == 1, (r.exit_code, r.stderr)
    assert_one_error_line(r.stderr, needle)
