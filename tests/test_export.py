"""charrnn export: the safetensors weight file (read back with numpy alone), the command's
errors and files, and ``CharRNN.export``. The web export's tests are in test_export_web.py,
the ONNX export's in test_export_onnx.py; ``tiny_run`` trains the models they share."""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_error_line, labelled_names, make_corpus, subprocess_env

import charrnn
from charrnn.errors import UsageError

_RUNS: dict[str, Path] = {}
_ROOT = Path(tempfile.mkdtemp(prefix="charrnn-export-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)
TINY = dict(
    max_steps=60, hidden=32, embed=16, seq_len=16, batch_size=8, device="cpu", precision="fp32", lr=0.02, warmup_steps=5
)


def tiny_run(kind: str) -> Path:
    """A tiny trained run folder, trained once per test session: "lstm-char" (2 LSTM layers,
    characters), "gru-word" (2 GRU layers, words), "rnn-records" (2 plain RNN layers, labelled
    records of names: ``labelled_names``)."""
    if kind not in _RUNS:
        out = _ROOT / kind
        if kind == "lstm-char":
            charrnn.train(text=make_corpus(4000, seed=1), out=out, cell="lstm", layers=2, **TINY)
        elif kind == "gru-word":
            charrnn.train(text=make_corpus(6000, seed=2), out=out, cell="gru", layers=2, level="word", **TINY)
        elif kind == "rnn-records":
            corpus = _ROOT / "names.jsonl"
            corpus.write_text(labelled_names(400, seed=4), encoding="utf-8")
            charrnn.train(corpus, out=out, cell="rnn", layers=2, records="jsonl:name", label_field="kind", **TINY)
        else:
            raise ValueError(kind)
        _RUNS[kind] = out
    return _RUNS[kind]


def cli_text(cli, run: Path, **options) -> str:
    """What `charrnn sample --precision fp32 --no-echo` writes for these options (the text and
    the newline the CLI ends its output with when the text does not end with one)."""
    args = ["sample", "-c", run, "--precision", "fp32", "--no-echo"]
    for name, value in options.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", value]
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    return r.stdout


def as_cli(text: str) -> str:
    """A sample's text as the CLI writes it: with a final newline unless it ends with one."""
    return text if text.endswith("\n") else text + "\n"


# ---------------------------------------------------------------- safetensors


def _read_without_torch(path: Path) -> dict:
    """The file read back in a process where torch cannot be imported: numpy and safetensors only."""
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from safetensors.numpy import load_file\nfrom safetensors import safe_open\n"
        f"t = load_file({str(path)!r})\n"
        f"with safe_open({str(path)!r}, framework='numpy') as f: meta = f.metadata()\n"
        "rows = {k: [str(v.dtype), list(v.shape), v.astype('float64').ravel().tolist()] for k, v in t.items()}\n"
        "print(json.dumps({'meta': meta, 't': rows}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_safetensors_holds_the_weights_and_metadata_readable_without_torch(cli, run_dir, tmp_path, precision):
    r = cli("export", "-c", run_dir, "--format", "safetensors", "--precision", precision, "--out", tmp_path / "st")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""  # stdout is for data; the summary goes to stderr
    assert "wrote 1 files" in r.stderr
    got = _read_without_torch(tmp_path / "st" / "model.safetensors")
    ckpt = charrnn.checkpoint.load(run_dir)
    weights = ckpt["model"]
    assert sorted(got["t"]) == sorted(weights)  # state_dict names (safetensors sorts them)
    for name, w in weights.items():
        dtype, shape, values = got["t"][name]
        want = w.float() if precision == "fp32" else w.half()  # fp16: the weights rounded as torch rounds them
        assert dtype == ("float32" if precision == "fp32" else "float16") and shape == list(w.shape)
        assert np.array_equal(np.array(values), want.double().numpy().ravel()), name
    meta = got["meta"]
    assert meta["format"] == "charrnn" and meta["format_version"] == "1" and meta["precision"] == precision
    assert meta["charrnn_version"] == charrnn.__version__
    assert json.loads(meta["shape"]) == ckpt["shape"]
    assert json.loads(meta["tokenizer"]) == ckpt["tokenizer"]
    info = json.loads(meta["info"])
    assert info["name"] == run_dir.name and info["corpus"] == ckpt["corpus"] and info["steps"] == ckpt["step"]
    assert info["best_val_loss"] == pytest.approx(ckpt["best_val_loss"], abs=1e-6)
    assert info["parameters"] == sum(w.numel() for w in weights.values())
    assert "records" not in meta and "labels" not in meta and "unicode" not in meta


def test_a_labelled_records_models_file_names_its_mode_and_labels(tmp_path):
    from charrnn.export.weights import read

    files = charrnn.load(tiny_run("rnn-records")).export(tmp_path, "safetensors", "fp32")
    assert files == [tmp_path / "model.safetensors"]
    tensors, meta = read(files[0])
    assert meta["records"] == "jsonl:name" and meta["label_field"] == "kind" and meta["labels"] == ["low", "up"]
    assert "<|end|>" in meta["tokenizer"]["vocab"] and "<|label:up|>" in meta["tokenizer"]["vocab"]
    assert tensors["rnn.weight_hh_l1"].dtype == np.float32


def test_a_word_models_file_carries_this_pythons_word_characters(tmp_path):
    import re
    import unicodedata

    from charrnn.export.weights import read

    _, meta = read(charrnn.load(tiny_run("gru-word")).export(tmp_path, "safetensors")[0])
    assert meta["tokenizer"]["level"] == "word" and meta["tokenizer"]["rule"] == 2
    uni = meta["unicode"]
    assert uni["version"] == unicodedata.unidata_version
    for key, pattern in (("word", r"\w"), ("digit", r"\d")):
        nums, prev, members = [int(h, 16) for h in uni[key].split()], 0, set()
        for gap, span in zip(nums[::2], nums[1::2]):
            members.update(range(prev + gap, prev + gap + span + 1))
            prev = prev + gap + span
        want = {c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and re.match(pattern, chr(c))}
        assert members == want, key


def test_fp16_refuses_weights_beyond_its_range():
    from charrnn.export.weights import Source

    src = Source({"head.bias": np.array([1e5], dtype=np.float32)}, {}, {"level": "char", "vocab": ["a"]}, {})
    with pytest.raises(UsageError, match="--precision fp32"):
        src.arrays("fp16")
    assert src.arrays("fp32")["head.bias"][0] == 1e5


# ---------------------------------------------------------------- the command


def test_mistakes_are_one_line_with_the_right_exit_code(cli, run_dir, tmp_path):
    r = cli("export", "-c", run_dir, "--format", "tflite", "--out", tmp_path / "x")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "tflite", "web", "onnx", "safetensors")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    r = cli("export", "-c", run_dir, "--out", a_file)
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "is a file", "folder")
    r = cli("export", "-c", run_dir, "--precision", "int8", "--out", tmp_path / "x")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "int8")
    r = cli("export", "-c", tmp_path / "missing.pt", "--out", tmp_path / "x")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "not found")
    assert not (tmp_path / "x").exists()


def test_a_damaged_checkpoint_is_refused_in_one_line(cli, run_dir, tmp_path):
    bad = tmp_path / "best.pt"
    data = bytearray((run_dir / "best.pt").read_bytes())
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    ckpt["model"]["head.weight"].view(-1)[0] += 1.0  # a changed weight: the checksum no longer matches
    torch.save(ckpt, bad)
    assert bad.read_bytes() != bytes(data)
    for fmt in ("web", "onnx", "safetensors"):
        r = cli("export", "-c", bad, "--format", fmt, "--out", tmp_path / fmt)
        assert r.exit_code == 1, fmt
        assert_one_error_line(r.stderr, "damaged")
        assert not (tmp_path / fmt).exists()


@pytest.mark.parametrize("fmt, package", [("web", "safetensors"), ("onnx", "onnx")])
def test_a_missing_extra_names_the_install_command(cli, run_dir, tmp_path, monkeypatch, fmt, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    r = cli("export", "-c", run_dir, "--format", fmt, "--out", tmp_path / "x")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "pip install 'charrnn[export]'", package)


def test_a_folder_that_cannot_be_made_is_one_line(cli, run_dir, tmp_path):
    (tmp_path / "a-file").write_text("x")
    r = cli("export", "-c", run_dir, "--format", "safetensors", "--out", tmp_path / "a-file" / "sub")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "cannot write", "--out")


def test_export_writes_atomically_replaces_its_files_and_keeps_others(cli, run_dir, tmp_path, monkeypatch):
    out = tmp_path / "web"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = cli("export", "-c", run_dir, "--out", out)
    assert r.exit_code == 0, r.stderr
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["charrnn.js", "index.html", "notes.txt", "static/app.js", "static/style.css", "weights.js"]
    first = (out / "weights.js").read_bytes()
    r = cli("export", "-c", run_dir, "--out", out, "--precision", "fp32")
    assert r.exit_code == 0 and (out / "weights.js").read_bytes() != first and (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.rglob("*.tmp")]  # each file went through a temporary file and a rename
    # Without --out: RUN-FORMAT in the current folder.
    monkeypatch.chdir(tmp_path)
    r = cli("export", "-c", run_dir, "-f", "onnx")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / f"{run_dir.name}-onnx").iterdir()) == ["model.onnx", "tokenizer.json"]


def test_the_api_exports_each_format_and_checks_its_arguments(run_dir, tmp_path):
    model = charrnn.load(run_dir)
    assert [p.name for p in model.export(tmp_path / "o", "onnx")] == ["model.onnx", "tokenizer.json"]
    assert [p.name for p in model.export(tmp_path / "s", format="safetensors", precision="fp32")] == [
        "model.safetensors"
    ]
    assert (tmp_path / "w" / "index.html") in model.export(tmp_path / "w")
    with pytest.raises(UsageError, match="--format"):
        model.export(tmp_path / "x", "pickle")
    with pytest.raises(UsageError, match="--precision"):
        model.export(tmp_path / "x", "web", "bf16")


def test_the_web_folder_fetches_nothing_from_elsewhere_and_fits_in_a_script(run_dir, tmp_path):
    import base64
    import re

    charrnn.load(run_dir).export(tmp_path, "web", "fp16")
    for name in ("index.html", "static/app.js", "charrnn.js", "static/style.css"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert not re.search(r"(src|href)\s*=\s*[\"'](https?:)?//", text), name
        assert "import(" not in text and "importScripts(" not in text, name
    script = (tmp_path / "weights.js").read_text(encoding="ascii")
    b64 = re.search(r'\n"([A-Za-z0-9+/=]+)"\);\n$', script).group(1)
    from charrnn.export.weights import read

    (tmp_path / "decoded.safetensors").write_bytes(base64.b64decode(b64))
    tensors, meta = read(tmp_path / "decoded.safetensors")
    assert meta["precision"] == "fp16" and tensors["emb.weight"].dtype == np.float16
