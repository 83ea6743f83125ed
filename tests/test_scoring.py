"""`score` computes the loss it claims: checked against a plain forward pass over the text."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import charrnn
from charrnn.checkpoint import describe, load
from charrnn.evaluate import evaluate


def score_text(path: str, checkpoint: str, unknown: str = "auto") -> dict:
    return charrnn.load(checkpoint, precision="fp32").score(open(path, encoding="utf-8").read(), unknown).to_dict()


def score_lines(path: str, checkpoint: str) -> list[dict]:
    lines = open(path, encoding="utf-8").read().splitlines()
    return [r.to_dict() for r in charrnn.load(checkpoint, precision="fp32").score_lines(lines)]


def _one_pass_loss(model, ids: list[int]) -> float:
    """Mean next-token cross-entropy reading the whole text in one pass from a zero state."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits, _, _ = model(x[:, :-1])
    return float(F.cross_entropy(logits[0].double(), x[0, 1:]))


def test_score_of_a_short_text_is_the_exact_mean_loss(tmp_path, loaded, corpus_text, run_dir):
    model, tok, _ = loaded
    text = corpus_text[:200]
    f = tmp_path / "short.txt"
    f.write_text(text, encoding="utf-8")
    r = score_text(str(f), str(run_dir))
    assert r["tokens"] == len(text) - 1 and r["chars"] == len(text) - 1
    assert r["loss"] == pytest.approx(_one_pass_loss(model, tok.encode(text)), abs=1e-5)


def test_score_of_a_long_text_matches_one_pass(tmp_path, loaded, corpus_text, run_dir):
    """Long texts are cut into chunks primed on the text before them: close to one pass."""
    model, tok, _ = loaded
    text = corpus_text[:3000]
    f = tmp_path / "long.txt"
    f.write_text(text, encoding="utf-8")
    r = score_text(str(f), str(run_dir))
    assert r["tokens"] == len(text) - 1
    assert r["loss"] == pytest.approx(_one_pass_loss(model, tok.encode(text)), rel=2e-3)


def test_evaluate_scores_every_token_once_whatever_the_chunking(loaded, corpus_text):
    model, tok, _ = loaded
    ids = torch.tensor(tok.encode(corpus_text[:1500]))
    chars = torch.ones(len(tok), dtype=torch.long)
    exact = _one_pass_loss(model, ids.tolist())
    for batch_size, seq_len in [(1, 7), (1, 256), (4, 50), (64, 256)]:
        s = evaluate(model, ids, chars, batch_size=batch_size, seq_len=seq_len, warmup=200)
        assert s.tokens == len(ids) - 1
        tol = 1e-5 if batch_size == 1 else 5e-3
        assert s.loss == pytest.approx(exact, rel=tol, abs=tol), (batch_size, seq_len)


def test_score_lines_scores_each_line_after_a_newline(tmp_path, loaded, run_dir):
    model, tok, _ = loaded
    lines = ["The quick brown fox.", "", "A cat runs away!", "Lazy dog"]
    f = tmp_path / "lines.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = list(score_lines(str(f), str(run_dir)))
    assert [r["line"] for r in results] == lines
    for line, r in zip(lines, results):
        ids = tok.encode("\n" + line + "\n")
        assert r["tokens"] == len(ids) - 1
        assert r["loss"] == pytest.approx(_one_pass_loss(model, ids), abs=1e-5)
        assert r["bits_per_char"] == pytest.approx(r["loss"] / math.log(2), rel=1e-4)


def test_describe(run_dir, loaded):
    model, tok, ckpt = loaded
    d = describe(load(run_dir))
    assert d["vocab_size"] == len(tok) == model.shape.vocab_size
    assert d["parameters"] == model.num_parameters()
    assert d["config"] == ckpt["config"]
    assert d["charrnn_version"]


def test_word_models_score_new_words_as_unk(tmp_path, corpus_text):
    """Any new text has words a word model never saw: by default they count as <unk>;
    a character model names unseen characters instead."""
    from conftest import tiny_config

    from charrnn.errors import CharrnnError
    from charrnn.training.loop import train

    out = tmp_path / "words"
    train(tiny_config(out, **{"tokenizer.level": "word", "train.max_steps": 5}), corpus_text, "w")
    f = tmp_path / "new.txt"
    f.write_text("The zebra runs away.\nQuokkas sing.\n", encoding="utf-8")
    r = score_text(str(f), str(out))
    assert r["tokens"] > 0 and math.isfinite(r["loss"])
    with pytest.raises(CharrnnError, match="zebra"):
        score_text(str(f), str(out), unknown="error")
    lines = list(score_lines(str(f), str(out)))
    assert [l["line"] for l in lines] == ["The zebra runs away.", "Quokkas sing."]
