"""The ONNX export: ``model.onnx``, the network's step, and ``tokenizer.json`` beside it.

The graph (opset 17, IR version 8: older than the onnx package's defaults, so that older runtimes
read it), built with ``onnx.helper`` from the weights, so nothing of torch's exporters is involved:

    inputs   tokens (batch, steps) int64    token ids; steps = 1 for one step
             h      (layers, batch, hidden) the state to start from (zeros at first)
             c      (layers, batch, hidden) LSTM only
    outputs  logits (batch, vocab)          next-token logits after the last of the tokens
             h_out, c_out                   the state after them, to feed back in

Embedding (Gather) -> one ONNX LSTM, GRU or RNN op per layer -> head (MatMul, Add). A prompt
can go in whole (steps = its length) or a token at a time; batch and steps are dynamic. The
gate orders differ from PyTorch's and are converted here: LSTM i f g o -> i o f c, GRU r z n
-> z r h with ``linear_before_reset=1`` (PyTorch applies the reset gate to the hidden product
plus its bias, as that option does). fp16 stores the weights in half precision and casts them
to float32 in the graph: half the file, float32 arithmetic.

``tokenizer.json`` says how text becomes ids and back: the vocabulary, the word rule's regular
expression (Python ``re`` syntax) for word models, the id an empty prompt starts from, the
record boundary and label ids of a records model, and the ids sampling never emits.
``examples/onnx_sample.py`` samples with it using onnxruntime and numpy alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.export.weights import Source

OPSET, IR_VERSION = 17, 8
TOKENIZER_FORMAT = "charrnn-tokenizer"


def build(src: Source, precision: str = "fp32"):
    """The ``onnx.ModelProto`` of ``src`` with weights stored in ``precision``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    s, t = src.shape, src.arrays(precision)
    cell, L, H = s["cell"], s["layers"], s["hidden"]
    nodes, inits = [], []

    def weight(name: str, a: np.ndarray) -> str:
        if a.dtype == np.float16:  # stored in half precision, computed in float32
            inits.append(numpy_helper.from_array(a, name + "_fp16"))
            nodes.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT))
        else:
            inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    def ints(name: str, values: list[int]) -> str:
        inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    node = lambda op, ins, outs, **kw: nodes.append(helper.make_node(op, ins, outs, **kw))  # noqa: E731
    order = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}[cell]  # PyTorch's gate blocks in ONNX's order

    def gates(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[g * H : (g + 1) * H] for g in order])

    node("Gather", [weight("emb", t["emb.weight"]), "tokens"], ["x_bte"])  # (B, T, E)
    node("Transpose", ["x_bte"], ["x0"], perm=[1, 0, 2])  # (T, B, E)
    x, hs, cs = "x0", [], []
    one, zero = ints("axis1", [1]), ints("axis0", [0])
    for l in range(L):
        w = weight(f"W{l}", gates(t[f"rnn.weight_ih_l{l}"])[None])
        r = weight(f"R{l}", gates(t[f"rnn.weight_hh_l{l}"])[None])
        b = weight(f"B{l}", np.concatenate([gates(t[f"rnn.bias_ih_l{l}"]), gates(t[f"rnn.bias_hh_l{l}"])])[None])
        start, end = ints(f"l{l}", [l]), ints(f"l{l}_end", [l + 1])
        node("Slice", ["h", start, end, zero], [f"h{l}"])  # (1, B, H)
        ins, outs = [x, w, r, b, "", f"h{l}"], [f"y{l}", f"h{l}_out"]
        if cell == "lstm":
            node("Slice", ["c", start, end, zero], [f"c{l}"])
            node("LSTM", ins + [f"c{l}"], outs + [f"c{l}_out"], hidden_size=H)
            cs.append(f"c{l}_out")
        elif cell == "gru":
            node("GRU", ins, outs, hidden_size=H, linear_before_reset=1)
        else:
            node("RNN", ins, outs, hidden_size=H, activations=["Tanh"])
        hs.append(f"h{l}_out")
        node("Squeeze", [f"y{l}", one], [f"x{l + 1}"])  # (T, 1, B, H) -> (T, B, H)
        x = f"x{l + 1}"
    for name, parts in (("h_out", hs), ("c_out", cs)):
        if parts:
            node("Concat", parts, [name], axis=0) if len(parts) > 1 else node("Identity", parts, [name])
    node("Squeeze", [hs[-1], zero], ["last"])  # (B, H): the top layer after the last token
    node("MatMul", ["last", weight("head_wT", np.ascontiguousarray(t["head.weight"].T))], ["head_out"])
    node("Add", ["head_out", weight("head_b", t["head.bias"])], ["logits"])

    state = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [L, "batch", H])  # noqa: E731
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "steps"]), state("h")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", s["vocab_size"]]), state("h_out")]
    if cell == "lstm":
        inputs.append(state("c"))
        outputs.append(state("c_out"))
    graph = helper.make_graph(nodes, f"charrnn_{cell}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="charrnn")
    model.ir_version = IR_VERSION
    meta = src.metadata(precision)
    keys = ("format", "format_version", "charrnn_version", "precision", "shape", "info")
    helper.set_model_props(model, {k: meta[k] for k in keys})
    onnx.checker.check_model(model)
    return model


def tokenizer_json(src: Source, precision: str) -> dict[str, Any]:
    """What a consumer of model.onnx needs to turn text into ids and ids into text."""
    from charrnn.data.tokenizer import WORD_RES, Tokenizer, banned_tokens, encode_prompt

    tok = Tokenizer.from_dict(src.tokenizer)
    records = tok.end_id is not None
    d: dict[str, Any] = {
        "format": TOKENIZER_FORMAT,
        "version": 1,
        "level": tok.level,
        "vocab": tok.vocab,
        "start_id": tok.end_id if records else encode_prompt(tok, "")[0],
        "end_id": tok.end_id,
        "labels": dict(sorted(tok.labels.items())),
        "banned": banned_tokens(tok),
        "unk_id": tok.unk_id,
        "records": src.records,
        "label_field": src.label_field,
        "state": {
            "cell": src.shape["cell"],
            "layers": src.shape["layers"],
            "hidden": src.shape["hidden"],
            "inputs": ["tokens", "h", "c"] if src.shape["cell"] == "lstm" else ["tokens", "h"],
        },
        "precision": precision,
        "info": src.info,
    }
    if tok.level == "word":
        d["rule"] = tok.rule
        d["word_pattern"] = WORD_RES[tok.rule].pattern
    return d


def write(src: Source, out: Path, precision: str) -> list[Path]:
    """``out/model.onnx`` and ``out/tokenizer.json``, each written atomically."""
    from charrnn.files import atomic_write

    data = build(src, precision).SerializeToString()
    text = json.dumps(tokenizer_json(src, precision), ensure_ascii=False, indent=1) + "\n"
    files = [out / "model.onnx", out / "tokenizer.json"]
    atomic_write(files[0], lambda f: f.write(data), sync=False)
    atomic_write(files[1], lambda f: f.write(text.encode("utf-8")), sync=False)
    return files
