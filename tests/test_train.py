"""Training through the library API: the run folder, checkpoints, fine-tuning, limits."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
import yaml
from conftest import make_corpus, tiny_config

from charrnn import checkpoint
from charrnn.checkpoint import load_model
from charrnn.config import RunConfig
from charrnn.errors import CharrnnError, UsageError
from charrnn.training.loop import train

RUN_FILES = {
    "best.pt",
    "last.pt",
    "config.yaml",
    "metrics.jsonl",
    "samples.jsonl",
    ".lock",
}  # .lock: the run lock's file


def _strict_json(line: str):
    def no_constants(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=no_constants)


def test_run_folder_has_exactly_the_run_files(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert names == RUN_FILES, f"unexpected files (temporary files left behind?): {names - RUN_FILES}"


def test_interrupted_run_leaves_no_temporary_files(tmp_path, corpus_text):
    out = tmp_path / "r"
    summary = train(tiny_config(out), corpus_text, "c", stop=lambda step: step == 15)
    assert summary["interrupted"]
    assert {p.name for p in out.iterdir()} == RUN_FILES  # best.pt from the evaluation at step 10
    assert summary["checkpoint"] == str(out / "best.pt")


def test_summary_describes_the_run(trained_run):
    out, s = trained_run
    assert s["steps"] == 60 and not s["interrupted"]
    assert s["tokens"] == 60 * 4 * 16
    assert s["precision"] == "fp32" and s["device"] == "cpu"
    assert s["checkpoint"] == str(out / "best.pt")
    assert math.isfinite(s["best_val_loss"]) and s["tokens_per_second"] > 0
    assert s["parameters"] > s["non_embedding_parameters"] > 0


def test_metrics_jsonl_has_one_record_per_evaluation(run_dir, trained_run):
    records = [_strict_json(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    for r in records:
        assert {"step", "tokens", "train_loss", "val_loss", "val_bits_per_char", "val_perplexity"} <= set(r)
        assert math.isfinite(r["val_loss"]) and math.isfinite(r["train_loss"])
    assert min(r["val_loss"] for r in records) == pytest.approx(trained_run[1]["best_val_loss"], abs=1e-5)


def test_metrics_jsonl_is_strict_json_when_evaluating_early(tmp_path, corpus_text):
    """An evaluation before the first loss report (every 10 steps) must not write NaN, which is
    not JSON (jq, JavaScript and strict parsers reject the line)."""
    out = tmp_path / "r"
    train(tiny_config(out, **{"train.max_steps": 12, "train.eval_every": 5}), corpus_text, "c")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [_strict_json(line)["step"] for line in lines] == [5, 10, 12]  # the first before any report


def test_config_yaml_is_the_resolved_config(run_dir, loaded):
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved == loaded[2]["config"]
    cfg = RunConfig.from_dict(saved)  # loads back
    assert cfg.model.hidden == 32 and cfg.model.layers == 2 and cfg.train.precision == "fp32"


def test_checkpoint_rebuilds_the_model_alone(run_dir, loaded):
    model, tok, ckpt = loaded
    assert not model.training
    assert ckpt["shape"] == {
        "vocab_size": len(tok),
        "cell": "lstm",
        "layers": 2,
        "hidden": 32,
        "embed": 16,
        "dropout": 0.1,
    }
    assert ckpt["step"] in (20, 40, 60) and ckpt["corpus"] == "corpus"  # best.pt: the best evaluation
    assert checkpoint.load(run_dir / "last.pt")["step"] == 60
    raw = torch.load(run_dir / "best.pt", weights_only=True)  # plain data, safe to load
    assert set(raw["model"]) == set(model.state_dict())
    assert "optimizer" not in raw and "optimizer" in torch.load(run_dir / "last.pt", weights_only=True)


def test_resolve_prefers_best_then_last(tmp_path, run_dir):
    assert checkpoint.resolve(run_dir) == run_dir / "best.pt"
    only_last = tmp_path / "only_last"
    only_last.mkdir()
    (only_last / "last.pt").write_bytes((run_dir / "last.pt").read_bytes())
    assert checkpoint.resolve(only_last) == only_last / "last.pt"
    with pytest.raises(CharrnnError, match="no best.pt or last.pt"):
        checkpoint.resolve(tmp_path)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "x.pt"
    checkpoint.save({"format": 1, "model": {}, "v": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        checkpoint.save({"unpicklable": lambda: None}, path)
    assert torch.load(path, weights_only=True)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_damaged_checkpoint_is_a_clear_error(tmp_path, run_dir):
    bad = tmp_path / "cut.pt"
    bad.write_bytes((run_dir / "best.pt").read_bytes()[:1000])
    with pytest.raises(CharrnnError, match="not a readable charrnn checkpoint"):
        checkpoint.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CharrnnError, match="not a charrnn checkpoint"):
        checkpoint.load(other)


def test_training_lowers_the_loss(trained_run):
    records = [json.loads(x) for x in (trained_run[0] / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_loss"] < math.log(len(load_model(trained_run[0])[1])) - 0.3


def test_init_from_fine_tunes_the_parent(tmp_path, run_dir, loaded, corpus_text):
    parent_model, parent_tok, _ = loaded
    other = "\n".join(sorted(corpus_text.splitlines())) + "\n"  # another text, the same characters
    out = tmp_path / "ft"
    cfg = tiny_config(out, **{"train.max_steps": 1, "train.lr": 1e-9, "model.hidden": 64, "model.cell": "gru"})
    train(cfg, other, "other", init_from=str(run_dir))
    model, tok, ckpt = load_model(out / "last.pt")
    assert tok.vocab == parent_tok.vocab
    assert ckpt["shape"]["hidden"] == 32 and ckpt["shape"]["cell"] == "lstm"  # the parent's shape wins
    for k, v in parent_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, atol=1e-5, rtol=0)  # starts from the parent
    # A real fine-tune moves the weights and lowers the loss on the new text.
    out2 = tmp_path / "ft2"
    s = train(tiny_config(out2, **{"train.max_steps": 30}), other, "other", init_from=str(run_dir))
    assert s["best_val_loss"] is not None
    moved = load_model(out2 / "last.pt")[0].state_dict()
    assert not torch.equal(moved["head.weight"], parent_model.state_dict()["head.weight"])


def test_word_level_run(tmp_path, corpus_text):
    out = tmp_path / "w"
    s = train(tiny_config(out, **{"tokenizer.level": "word", "train.max_steps": 20}), corpus_text, "w")
    model, tok, _ = load_model(out)
    assert tok.level == "word" and s["steps"] == 20
    assert tok.decode(tok.encode(corpus_text)) == corpus_text


def test_no_validation_split(tmp_path, corpus_text):
    out = tmp_path / "nv"
    s = train(tiny_config(out, **{"data.val_fraction": 0.0, "train.max_steps": 10}), corpus_text, "c")
    assert s["best_val_loss"] is None
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()


def test_epochs_limit(tmp_path, corpus_text):
    from charrnn.data.batches import StreamBatches, split
    from charrnn.data.tokenizer import Tokenizer

    tok = Tokenizer.build(corpus_text)
    train_ids, _ = split(torch.tensor(tok.encode(corpus_text)), 0.1)
    spe = StreamBatches(train_ids, 4, 16, 0).steps_per_epoch
    s = train(tiny_config(tmp_path / "e", **{"train.max_steps": None, "train.epochs": 0.5}), corpus_text, "c")
    assert s["steps"] == math.ceil(0.5 * spe)


def test_unset_sizes_are_chosen_and_saved(tmp_path, corpus_text):
    cfg = RunConfig()
    cfg.train.max_steps = 2
    cfg.train.device = "cpu"
    cfg.train.out = str(tmp_path / "auto")
    cfg.data.seq_len = 16  # keep it tiny; everything else is chosen
    summary = train(cfg, corpus_text, "c")  # no budget: nothing is timed, so precision resolves without the probe
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    for section, key in [
        ("model", "layers"),
        ("model", "hidden"),
        ("model", "embed"),
        ("model", "dropout"),
        ("data", "batch_size"),
        ("train", "lr"),
        ("train", "weight_decay"),
    ]:
        assert saved[section][key] is not None, f"{section}.{key} not resolved"
    assert saved["train"]["precision"] == summary["precision"] in ("bf16", "fp32")


def test_too_small_corpus_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="too small"):
        train(tiny_config(tmp_path / "s", **{"data.batch_size": 64}), make_corpus(500), "c")


def test_learning_rate_schedule():
    from charrnn.training.budget import lr_at

    assert lr_at(0, 0.0, 1.0, 10, 0.05) == pytest.approx(0.1)  # warmup: linear from peak / warmup
    assert lr_at(9, 0.9, 1.0, 10, 0.05) == pytest.approx(1.0)
    assert lr_at(10, 0.0, 1.0, 10, 0.05) == pytest.approx(1.0)  # then linear decay by progress
    assert lr_at(50, 0.5, 1.0, 10, 0.05) == pytest.approx(0.525)
    assert lr_at(99, 1.0, 1.0, 10, 0.05) == pytest.approx(0.05)
    assert lr_at(200, 2.0, 1.0, 10, 0.05) == pytest.approx(0.05)  # clamped at the floor
    assert lr_at(0, 0.0, 1.0, 0, 0.05) == pytest.approx(1.0)  # no warmup
    assert lr_at(99, 1.0, 1.0, 10, 0.0) == 0.0  # the default: straight to zero


def test_a_short_run_is_not_all_warmup():
    from charrnn.training.budget import warmup_steps

    assert warmup_steps(None, None) == 50  # a time budget: the step count is not known
    assert warmup_steps(None, 1000) == 50
    assert warmup_steps(None, 50) == 10  # at most a fifth of a step limit
    assert warmup_steps(None, 3) == 1
    assert warmup_steps(0, 50) == 0 and warmup_steps(1000, 40) == 1000  # a given warmup is kept


def test_train_runs_outside_the_main_thread(tmp_path, corpus_text):
    """Library callers (notebooks, servers) may train in a worker thread, where signals can't be set."""
    import threading

    result = {}

    def work():
        try:
            result["summary"] = train(tiny_config(tmp_path / "t", **{"train.max_steps": 5}), corpus_text, "c")
        except BaseException as e:  # pragma: no cover - reported below
            result["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert "error" not in result, repr(result.get("error"))
    assert result["summary"]["steps"] == 5


def test_ctrl_c_during_the_interrupt_save_waits_for_it(tmp_path, corpus_text, monkeypatch):
    """A second Ctrl-C that lands while the interrupt's last.pt is being written does not break
    the save: last.pt is written whole and the run ends as interrupted, no traceback."""
    import os
    import signal

    from charrnn import checkpoint as ckpt_module

    real_save = ckpt_module.save
    hits = []

    def save_with_a_ctrl_c(obj, path):
        if path.name == "last.pt" and not hits:
            hits.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # lands in the middle of the interrupt save
        real_save(obj, path)

    out = tmp_path / "r"
    monkeypatch.setattr(ckpt_module, "save", save_with_a_ctrl_c)
    summary = train(tiny_config(out, **{"train.eval_every": 1000}), corpus_text, "c", stop=lambda step: step == 7)
    assert summary["interrupted"] and hits
    assert checkpoint.load(out / "last.pt")["step"] == 7
