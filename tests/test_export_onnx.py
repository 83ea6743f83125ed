"""The ONNX export: onnxruntime's logits are torch's, step by step, for each cell; the graph
takes a batch and a whole prompt; and examples/onnx_sample.py (onnxruntime and numpy, no torch)
writes the text of `charrnn sample --precision fp32 --no-echo` for the same seed and options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import subprocess_env
from test_export import cli_text, tiny_run

import charrnn
from charrnn.checkpoint import load_model

ort = pytest.importorskip("onnxruntime", reason="pip install 'charrnn[export]'")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "onnx_sample.py"
KINDS = ["lstm-char", "gru-word", "rnn-records"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    for kind in KINDS:
        charrnn.load(tiny_run(kind)).export(root / kind, "onnx", "fp32")
    return {kind: root / kind for kind in KINDS}


def session(folder: Path):
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_logits_are_torchs_over_200_steps(exports, kind):
    model, tok, _ = load_model(tiny_run(kind))
    spec = json.loads((exports[kind] / "tokenizer.json").read_text(encoding="utf-8"))
    names = spec["state"]["inputs"][1:]
    L, H = spec["state"]["layers"], spec["state"]["hidden"]
    B, T = 3, 200
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (B, T), generator=g)  # three streams at once: the batch is dynamic
    with torch.no_grad():
        want, _, _ = model(ids)  # (B, T, V)
    sess = session(exports[kind])
    state = {n: np.zeros((L, B, H), np.float32) for n in names}
    worst = 0.0
    for t in range(T):
        out = sess.run(None, {"tokens": ids[:, t : t + 1].numpy(), **state})
        state = dict(zip(names, out[1:]))
        worst = max(worst, float(np.abs(out[0] - want[:, t].numpy()).max()))
    scale = float(want.abs().max())
    print(
        f"\n{kind}: onnxruntime vs torch, largest absolute logit difference over {T} steps: {worst:.2e}"
        f" (logits up to {scale:.1f})"
    )
    assert worst < 1e-4
    # The whole sequence in one call gives the last step's logits and state.
    zeros = {n: np.zeros((L, B, H), np.float32) for n in names}
    whole = sess.run(None, {"tokens": ids.numpy(), **zeros})
    assert np.abs(whole[0] - want[:, -1].numpy()).max() < 1e-4
    assert all(np.abs(a - b).max() < 1e-5 for a, b in zip(whole[1:], state.values()))


def test_fp16_halves_the_file_and_keeps_float32_arithmetic(tmp_path, exports):
    charrnn.load(tiny_run("lstm-char")).export(tmp_path, "onnx", "fp16")
    assert (tmp_path / "model.onnx").stat().st_size < 0.6 * (exports["lstm-char"] / "model.onnx").stat().st_size
    ids = np.array([[5, 9, 2, 7]], dtype=np.int64)
    feed = {"tokens": ids, "h": np.zeros((2, 1, 32), np.float32), "c": np.zeros((2, 1, 32), np.float32)}
    half, full = session(tmp_path).run(None, feed)[0], session(exports["lstm-char"]).run(None, feed)[0]
    assert half.dtype == np.float32 and 0 < np.abs(half - full).max() < 0.05


def test_the_tokenizer_json_says_all_a_consumer_needs(exports):
    spec = json.loads((exports["rnn-records"] / "tokenizer.json").read_text(encoding="utf-8"))
    tok = charrnn.load(tiny_run("rnn-records")).tokenizer
    assert spec["vocab"] == tok.vocab and spec["end_id"] == tok.end_id == spec["start_id"]
    assert spec["labels"] == {"low": tok.labels["low"], "up": tok.labels["up"]}
    assert sorted(spec["banned"]) == sorted(tok.labels.values()) and spec["records"] == "jsonl:name"
    assert spec["state"] == {"cell": "rnn", "layers": 2, "hidden": 32, "inputs": ["tokens", "h"]}
    word = json.loads((exports["gru-word"] / "tokenizer.json").read_text(encoding="utf-8"))
    wtok = charrnn.load(tiny_run("gru-word")).tokenizer
    assert word["banned"] == [wtok.unk_id] and word["start_id"] == wtok.stoi["\n"] and word["rule"] == 2
    import re

    assert re.findall(word["word_pattern"], "don't 3.14 well-known") == wtok.split("don't 3.14 well-known")


CASES = {
    "lstm-char": [
        dict(prompt="The quick", seed=1, length=300),
        dict(seed=2, temp=1.2, top_k=5, length=300),
        dict(prompt="Birds", seed=3, temp=0.9, top_p=0.8, length=300),
        dict(prompt="A", temp=0.0, length=150),
        dict(prompt="The", seed=4, temp=1.0, stop="\n", length=300),
    ],
    "gru-word": [
        dict(prompt="The quick brown", seed=1, length=150),
        dict(seed=2, temp=1.0, top_k=8, top_p=0.9, length=150),
    ],
    "rnn-records": [
        dict(label="up", seed=3, length=40),
        dict(prompt="ab", label="low", seed=4, temp=1.2, length=40),
        dict(seed=5, length=40),
    ],
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_onnxruntime_example_writes_the_clis_text(exports, kind, cli):
    for case in CASES[kind]:
        argv = [str(exports[kind])]
        for name, value in case.items():
            argv += [f"--{name.replace('_', '-')}", str(value).replace("\n", "\\n")]
        # In a process where torch cannot be imported: onnxruntime and numpy alone.
        code = (
            "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['onnx_sample.py'] + sys.argv[1:]; "
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=subprocess_env(), timeout=120
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == cli_text(cli, tiny_run(kind), **case), case
