"""The public Python API: charrnn.load -> CharRNN (sample, stream, samples, score, score_lines,
info) and charrnn.train -> TrainResult, against the CLI and against the README's example."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_FLAGS, make_corpus, subprocess_env

import charrnn
from charrnn.errors import CharrnnError, UsageError

README = Path(__file__).parents[1] / "README.md"


def test_import_is_light_and_lists_the_public_names():
    code = "import sys, charrnn; assert 'torch' not in sys.modules; print(sorted(charrnn.__all__))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert p.returncode == 0, p.stderr
    for name in ("load", "train", "CharRNN", "TrainResult", "Score"):
        assert name in p.stdout
    with pytest.raises(AttributeError):
        charrnn.no_such_name  # noqa: B018 (the lookup is the test)


def test_sample_equals_the_cli_for_the_same_seed(cli, run_dir):
    model = charrnn.load(run_dir)
    text = model.sample("The ", length=120, temperature=0.9, top_k=20, seed=5)
    r = cli(
        "sample", "-c", run_dir, "--prompt", "The ", "--length", "120", "--temp", "0.9", "--top-k", "20", "--seed", "5"
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "The " + text + ("" if text.endswith("\n") else "\n")
    assert len(text) == 120 and model.sample("The ", length=120, temperature=0.9, top_k=20, seed=5) == text
    assert model.sample("The ", length=120, temperature=0.9, top_k=20, seed=6) != text


def test_stream_yields_the_sample_piece_by_piece(run_dir):
    model = charrnn.load(run_dir)
    pieces = list(model.stream("A ", length=300, seed=2))
    assert len(pieces) > 1, "a long sample streams in several pieces"
    assert "".join(pieces) == model.sample("A ", length=300, seed=2)


def test_samples_side_by_side_and_sample_zero_is_the_lone_sample(run_dir):
    model = charrnn.load(run_dir)
    texts = model.samples(3, "The ", length=60, seed=11)
    assert len(texts) == 3 and all(len(t) == 60 for t in texts) and len(set(texts)) == 3
    assert texts[0] == model.sample("The ", length=60, seed=11)


def test_stop_ends_a_sample_before_the_stop_string(run_dir):
    model = charrnn.load(run_dir)
    full = model.sample("The ", length=400, seed=3)
    assert "\n" in full
    cut = model.sample("The ", length=400, seed=3, stop="\n")
    assert cut == full[: full.index("\n")]


def test_a_samples_score_counts_its_own_characters_only(run_dir):
    # nats_per_char is the sample's mean loss given the prompt: the prompt's own loss is left out.
    model = charrnn.load(run_dir)
    vocab = len(model.next_token_probs("", k=10_000))
    for prompt in ("T", "The king and the queen went "):
        s = model.draw(1, prompt, length=12, scores=True, seed=4).samples[0]
        nats = 0.0
        for i, ch in enumerate(s.text):
            probs = dict(model.next_token_probs(prompt + s.text[:i], k=vocab))
            nats -= math.log(probs[ch])
        assert s.nats_per_char == pytest.approx(nats / len(s.text), rel=0.02, abs=0.02)


def test_greedy_ignores_the_seed(run_dir):
    model = charrnn.load(run_dir)
    assert model.sample("The ", length=50, temperature=0, seed=1) == model.sample(
        "The ", length=50, temperature=0, seed=2
    )


def test_score_and_score_lines_match_the_cli(cli, run_dir, corpus_text, tmp_path):
    model = charrnn.load(run_dir, precision="fp32")
    text = corpus_text[:1500]
    score = model.score(text)
    assert score.tokens == len(text) - 1 and math.isfinite(score.loss)
    assert score.bits_per_char == pytest.approx(score.loss / math.log(2))
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    r = cli("score", f, "-c", run_dir, "--json", "--precision", "fp32", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == score.to_dict()
    lines = model.score_lines(["The quick fox.", "", "Birds sing!"])
    assert [l.line for l in lines] == ["The quick fox.", "", "Birds sing!"]
    assert all(l.loss is not None and l.tokens > 0 for l in lines)
    with pytest.raises(CharrnnError, match="nothing to score"):
        model.score("a")


def test_info_is_what_cli_info_prints(cli, run_dir):
    info = charrnn.load(run_dir).info
    r = cli("info", run_dir, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(json.dumps(info))
    assert info["level"] == "char" and info["parameters"] > 0


def test_bad_settings_raise_usage_errors(run_dir):
    model = charrnn.load(run_dir)
    with pytest.raises(UsageError, match="--temp"):
        model.sample(temperature=-1)
    with pytest.raises(UsageError, match="--top-p"):
        model.sample(top_p=2.0)
    with pytest.raises(CharrnnError, match="never saw"):
        model.sample("Ω", length=5)
    with pytest.raises(CharrnnError, match="checkpoint not found"):
        charrnn.load("/no/such/checkpoint.pt")
    with pytest.raises(UsageError, match="device"):
        charrnn.load(run_dir, device="tpu")


def test_train_through_the_api_then_load_and_resume(tmp_path, corpus_file):
    out = tmp_path / "api-run"
    tiny = dict(hidden=32, layers=1, embed=16, seq_len=16, batch_size=4, device="cpu", precision="fp32", lr=1e-2)
    result = charrnn.train(corpus_file, out=out, max_steps=20, eval_every=10, **tiny)
    assert isinstance(result, charrnn.TrainResult)
    assert result.steps == 20 and result.checkpoint == str(out / "best.pt") and not result.interrupted
    assert result.best_val_loss is not None and result.to_dict()["steps"] == 20
    model = result.load()
    assert len(model.sample("The ", length=30, seed=1)) == 30
    # The library enforces what a resume may change, as the CLI does.
    with pytest.raises(UsageError, match="--hidden"):
        charrnn.train(corpus_file, out=out, resume=True, hidden=64)
    again = charrnn.train(out=out, resume=True, max_steps=30)
    assert again.steps == 30
    with pytest.raises(UsageError, match="unknown setting"):
        charrnn.train(corpus_file, out=tmp_path / "x", max_steps=2, hiden=32)


def test_train_from_text_in_memory(tmp_path):
    result = charrnn.train(
        text=make_corpus(3000, seed=4),
        out=tmp_path / "mem",
        max_steps=5,
        hidden=16,
        layers=1,
        embed=8,
        seq_len=8,
        batch_size=4,
        device="cpu",
    )
    assert result.steps == 5 and Path(result.checkpoint).is_file()


@pytest.mark.parametrize("doc", [README, README.parent / "docs" / "python.md"], ids=["README", "python.md"])
def test_the_python_examples_run(tmp_path, monkeypatch, doc):
    """The first Python example of the README and of docs/python.md, run as written, on a small
    corpus with tiny settings slipped in."""
    block = re.search(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    assert block, f"{doc.name} has a Python example"
    code = block.group(1)
    monkeypatch.chdir(tmp_path)
    for name in ("input.txt", "shakespeare.txt"):
        Path(name).write_text(make_corpus(6000, seed=9) + "ROMEO:\nJULIET:\n" * 50, encoding="utf-8")
    real_train = charrnn.train

    def tiny_train(*args, **kwargs):
        kwargs.pop("time_budget", None)
        flags = dict(zip(TINY_FLAGS[::2], TINY_FLAGS[1::2]))
        kwargs.update({k.lstrip("-").replace("-", "_"): _number(v) for k, v in flags.items()}, max_steps=20)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(charrnn, "train", tiny_train)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})


def _number(v: str):
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def test_a_checkpoint_rewritten_after_loading_never_pairs_its_name_with_old_weights(tmp_path, run_dir, corpus_text):
    """A handle loaded before its best.pt was rewritten (a run resumed meanwhile) must not cache
    its old weights under the new file: a fresh load samples the new weights."""
    import shutil

    from conftest import tiny_config

    from charrnn.checkpoint import load_model
    from charrnn.config import SampleConfig
    from charrnn.sampling.engine import Engine
    from charrnn.training.loop import train

    ckpt = tmp_path / "best.pt"
    shutil.copy(run_dir / "best.pt", ckpt)
    old = charrnn.load(ckpt)  # weights read now; no pack cached for this file yet
    other = tmp_path / "other"
    train(tiny_config(other, **{"train.max_steps": 15, "train.seed": 7}), corpus_text, "c")
    shutil.copy(other / "best.pt", ckpt)  # the file changes under the open handle
    old.sample("The ", length=20, seed=1)  # packs and caches the old weights
    model, tok, _ = load_model(ckpt)
    want = Engine(tok, model=model).chunks(tok.encode("The "), SampleConfig(length=60, seed=3))
    want_text = tok.decode([t for chunk in want for t in chunk[0]])
    assert charrnn.load(ckpt).sample("The ", length=60, seed=3) == want_text


def test_a_generation_never_started_holds_no_kernel(run_dir):
    model = charrnn.load(run_dir)
    model.sample("The ", length=5, seed=1)
    idle_before = {k: len(v) for k, v in model.engine._idle.items()}
    for _ in range(3):
        model.generate("The ", length=5, seed=1)  # dropped before its first chunk
    assert {k: len(v) for k, v in model.engine._idle.items()} == idle_before
