"""The `charrnn` command in-process (Typer's CliRunner keeps stdout and stderr apart):
options, output formats, and one clear error line for every user mistake."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from conftest import TINY_FLAGS, assert_one_error_line

import charrnn
from charrnn.checkpoint import load_model
from charrnn.config import SampleConfig
from charrnn.data.tokenizer import Tokenizer
from charrnn.sampling.engine import generate

# ---------------------------------------------------------------- help and version


def test_version(cli):
    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout == f"charrnn {charrnn.__version__}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["train", "--help"],
        ["sample", "--help"],
        ["score", "--help"],
        ["info", "--help"],
        ["plot", "--help"],
    ],
)
def test_help(cli, args):
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert "Usage" in r.stdout
    assert r.stderr == ""


def test_help_lists_the_commands(cli):
    out = cli("--help").stdout
    for command in ("train", "sample", "score", "info", "plot"):
        assert command in out


# ---------------------------------------------------------------- train


def test_train_json_prints_one_object_on_stdout(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    r = cli("train", corpus_file, "--max-steps", "20", "--out", out, "--json", *TINY_FLAGS)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert r.stdout.count("\n") == 1
    assert {"best_val_loss", "steps", "tokens_per_second", "checkpoint"} <= set(summary)
    assert summary["steps"] == 20
    assert summary["checkpoint"] == str(out / "best.pt")
    assert "saved" in r.stderr  # the human summary goes to stderr


def test_train_quiet_prints_nothing(cli, tmp_path, corpus_file):
    r = cli("train", corpus_file, "--max-steps", "5", "--out", tmp_path / "q", "--quiet", *TINY_FLAGS)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""


def test_train_from_stdin(cli, tmp_path, corpus_text):
    out = tmp_path / "stdin_run"
    r = cli("train", "-", "--max-steps", "5", "--out", out, "--quiet", *TINY_FLAGS, input=corpus_text.encode())
    assert r.exit_code == 0, r.stderr
    _, tok, ckpt = load_model(out)
    assert ckpt["corpus"] == "stdin"
    assert set(tok.vocab) == set(corpus_text)


def test_config_file_sets_options_and_flags_win(cli, tmp_path, corpus_file):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        yaml.safe_dump(
            {
                "model": {"cell": "gru", "hidden": 24, "layers": 1, "embed": 8},
                "data": {"seq_len": 12, "batch_size": 3},
                "train": {"max_steps": 7, "lr": 0.005, "eval_every": 7, "device": "cpu", "precision": "fp32"},
            }
        )
    )
    out = tmp_path / "cfg_run"
    r = cli("train", corpus_file, "--config", run_yaml, "--hidden", "16", "--seq-len", "8", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["cell"] == "gru"  # from the file
    assert saved["model"]["hidden"] == 16  # the flag wins
    assert saved["data"]["seq_len"] == 8  # the flag wins
    assert saved["data"]["batch_size"] == 3 and saved["train"]["lr"] == 0.005  # from the file
    assert saved["train"]["max_steps"] == 7
    assert saved["train"]["weight_decay"] == 0.1  # resolved (the corpus is big for 16 units) and saved for a resume
    assert load_model(out)[2]["step"] == 7


def test_word_level_with_max_vocab_on_the_cli(cli, tmp_path, corpus_file):
    out = tmp_path / "words"
    r = cli(
        "train",
        corpus_file,
        "--level",
        "word",
        "--max-vocab",
        "12",
        "--max-steps",
        "5",
        "--out",
        out,
        "--quiet",
        *TINY_FLAGS,
    )
    assert r.exit_code == 0, r.stderr
    info = json.loads(cli("info", out, "--json").stdout)
    assert (info["level"], info["vocab_size"]) == ("word", 12)
    tok = load_model(out)[1]
    assert "<unk>" in tok.vocab and " " in tok.vocab
    s = cli("sample", "-c", out, "--length", "200", "--temp", "2", "--seed", "0", "-N", "3", "--json")
    assert s.exit_code == 0, s.stderr
    assert all("<unk>" not in json.loads(line)["text"] for line in s.stdout.splitlines())
    text = corpus_file.read_text(encoding="utf-8")
    expected = Tokenizer.build(text, "word", min_count=40)
    assert 2 < len(expected) < len(Tokenizer.build(text, "word"))
    r = cli(
        "train",
        corpus_file,
        "--level",
        "word",
        "--min-count",
        "40",
        "--max-steps",
        "5",
        "--out",
        tmp_path / "w2",
        "--quiet",
        *TINY_FLAGS,
    )
    assert r.exit_code == 0, r.stderr
    assert load_model(tmp_path / "w2")[1].vocab == expected.vocab


def test_min_count_that_keeps_no_word_fails_cleanly(cli, tmp_path, corpus_file):
    """--min-count above every count leaves only <unk>, which sampling never emits: a user mistake
    that must end in one error line (when training, or at the latest when sampling), not a traceback."""
    out = tmp_path / "nothing"
    r = cli(
        "train",
        corpus_file,
        "--level",
        "word",
        "--min-count",
        "100000",
        "--max-steps",
        "3",
        "--out",
        out,
        "--quiet",
        *TINY_FLAGS,
    )
    _no_traceback(r)
    if r.exit_code != 0:
        assert_one_error_line(r.stderr, "--min-count")
        return
    s = cli("sample", "-c", out, "--length", "5", "--seed", "0")
    _no_traceback(s)
    assert s.exit_code != 0
    assert_one_error_line(s.stderr)


def test_init_from_on_the_cli(cli, tmp_path, corpus_text, run_dir):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(reversed(corpus_text.splitlines())) + "\n", encoding="utf-8")
    out = tmp_path / "ft"
    r = cli("train", other, "--init-from", run_dir, "--max-steps", "5", "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert load_model(out)[1].vocab == load_model(run_dir)[1].vocab


def test_init_from_grows_the_vocabulary_with_new_characters(cli, tmp_path, corpus_text, run_dir):
    """Fine-tuning on text with characters the parent never saw adds them (one line says which);
    known ids stay put, new rows start at the mean of the parent's, and the child can write them."""
    other = tmp_path / "other.txt"
    other.write_text(corpus_text + "Ëlan QZ 0123456789\n" * 30, encoding="utf-8")
    out = tmp_path / "ft"
    r = cli("train", other, "--init-from", run_dir, "--max-steps", "5", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    note = [l for l in r.stderr.splitlines() if "fine-tuning adds" in l]
    assert len(note) == 1 and all(f"'{c}'" in note[0] for c in "ËZ7")
    parent_model, parent_tok, _ = load_model(run_dir)
    model, tok, _ = load_model(out)
    assert tok.vocab[: len(parent_tok)] == parent_tok.vocab
    assert set("ËQZ0123456789") <= set(tok.vocab) and len(tok) == model.shape.vocab_size
    # The child scores and samples text with the new characters.
    s = cli("score", other, "-c", out, "--json")
    assert s.exit_code == 0, s.stderr
    p = cli("sample", "-c", out, "--prompt", "Ëlan Q", "--length", "20", "--seed", "1")
    assert p.exit_code == 0 and p.stdout.startswith("Ëlan Q")


def test_init_from_grows_a_word_vocabulary_within_max_vocab(tmp_path, corpus_text):
    from conftest import tiny_config

    from charrnn.training.loop import train

    parent = tmp_path / "words"
    train(tiny_config(parent, **{"tokenizer.level": "word", "train.max_steps": 3}), corpus_text, "w")
    _, ptok, _ = load_model(parent)
    new_text = corpus_text + "Zebras and quokkas graze.\n" * 20 + "Aardvarks dig.\n" * 5
    child = tmp_path / "child"
    cfg = tiny_config(child, **{"train.max_steps": 3, "tokenizer.max_vocab": len(ptok) + 4})
    train(cfg, new_text, "w2", init_from=str(parent))
    _, tok, _ = load_model(child)
    assert tok.vocab[: len(ptok)] == ptok.vocab
    assert len(tok) == len(ptok) + 4  # capped by max_vocab; the most frequent new words first
    assert {"Zebras", "quokkas", "graze"} <= set(tok.vocab[len(ptok) :])


# ---------------------------------------------------------------- sample


def test_sample_same_seed_same_text_and_matches_the_api(cli, run_dir):
    args = ("sample", "-c", run_dir, "--prompt", "The ", "--length", "120", "--seed", "3")
    a, b = cli(*args), cli(*args)
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout and a.stderr == ""
    text = charrnn.load(run_dir).sample("The ", length=120, seed=3)  # same defaults as the CLI
    assert a.stdout == "The " + text + ("" if text.endswith("\n") else "\n")
    assert a.stdout.startswith("The ")
    c = cli("sample", "-c", run_dir, "--prompt", "The ", "--length", "120", "--seed", "4")
    assert c.stdout != a.stdout


def test_greedy_flag_equals_temp_zero_and_the_api(cli, run_dir, loaded):
    model, tok, _ = loaded
    greedy = cli("sample", "-c", run_dir, "--prompt", "The ", "--length", "60", "--greedy", "--no-echo")
    temp0 = cli(
        "sample", "-c", run_dir, "--prompt", "The ", "--length", "60", "--temp", "0", "--no-echo", "--seed", "9"
    )
    assert greedy.exit_code == 0, greedy.stderr
    assert greedy.stdout == temp0.stdout
    ids = torch.cat(list(generate(model, tok.encode("The "), SampleConfig(length=60, temperature=0.0))), dim=1)[
        0
    ].tolist()
    text = tok.decode(ids)
    assert greedy.stdout == text + ("" if text.endswith("\n") else "\n")


def test_json_samples(cli, run_dir):
    r = cli("sample", "-c", run_dir, "--prompt", "A", "--length", "40", "--num-samples", "3", "--json", "--seed", "11")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [rec["index"] for rec in records] == [0, 1, 2]
    assert all(set(rec) == {"text", "seed", "index", "temperature", "nats_per_char"} for rec in records)
    assert all(rec["temperature"] == 0.8 and rec["nats_per_char"] > 0 for rec in records)
    assert all(rec["seed"] == 11 for rec in records)
    assert all(rec["text"].startswith("A") and len(rec["text"]) == 41 for rec in records)
    assert len({rec["text"] for rec in records}) > 1  # the streams differ


def test_json_reports_the_random_seed_it_used(cli, run_dir):
    first = json.loads(cli("sample", "-c", run_dir, "--length", "50", "--json").stdout)
    again = json.loads(cli("sample", "-c", run_dir, "--length", "50", "--json", "--seed", str(first["seed"])).stdout)
    assert again["text"] == first["text"]


def test_separator_between_samples(cli, run_dir):
    base = ("sample", "-c", run_dir, "--prompt", "The ", "--length", "30", "--num-samples", "3", "--seed", "5")
    texts = [json.loads(x)["text"] for x in cli(*base, "--json").stdout.splitlines()]
    r = cli(*base, "--separator", "\\n---\\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "\n---\n".join(t + ("" if t.endswith("\n") else "\n") for t in texts)
    default = cli(*base)
    assert default.stdout == "\n".join(t + ("" if t.endswith("\n") else "\n") for t in texts)


def test_samples_with_blank_lines_are_told_apart_by_a_rule(cli, run_dir):
    """A blank line cannot separate samples that hold blank lines (a play's speeches do)."""
    base = ("sample", "-c", run_dir, "--prompt", "The\n\nend ", "--length", "30", "--num-samples", "2", "--seed", "5")
    texts = [json.loads(x)["text"] for x in cli(*base, "--json").stdout.splitlines()]
    assert all(t.startswith("The\n\nend ") for t in texts)
    out = cli(*base).stdout
    assert out == ("=" * 20 + "\n").join(t + ("" if t.endswith("\n") else "\n") for t in texts)


def test_no_echo_leaves_out_the_prompt(cli, run_dir):
    base = ("sample", "-c", run_dir, "--prompt", "The quick ", "--length", "50", "--seed", "2")
    echo, no_echo = cli(*base), cli(*base, "--no-echo")
    assert echo.stdout == "The quick " + no_echo.stdout
    assert not no_echo.stdout.startswith("The quick ")


@pytest.mark.parametrize("stop, stop_arg", [("e", "e"), ("\n", "\\n"), ("he", "he")])
def test_stop_ends_the_sample_where_the_string_appears(cli, run_dir, stop, stop_arg):
    base = ("sample", "-c", run_dir, "--prompt", "T", "--length", "300", "--seed", "8", "--no-echo")
    full = cli(*base).stdout
    assert stop in full, "test design: the stop string must appear in the unstopped sample"
    r = cli(*base, "--stop", stop_arg)
    assert r.exit_code == 0, r.stderr
    cut = full[: full.index(stop)]
    assert r.stdout == cut + ("" if cut.endswith("\n") else "\n")


def test_stop_applies_to_each_json_sample(cli, run_dir):
    r = cli("sample", "-c", run_dir, "--length", "300", "--seed", "1", "-N", "3", "--json", "--stop", "\\n")
    texts = [json.loads(x)["text"] for x in r.stdout.splitlines()]
    assert len(texts) == 3 and all("\n" not in t for t in texts)


def test_prompt_from_stdin(cli, run_dir):
    a = cli("sample", "-c", run_dir, "--prompt", "-", "--length", "30", "--seed", "4", input="The cat")
    b = cli("sample", "-c", run_dir, "--prompt", "The cat", "--length", "30", "--seed", "4")
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("The cat")


def test_unknown_skip_drops_unseen_prompt_characters(cli, run_dir):
    r = cli(
        "sample",
        "-c",
        run_dir,
        "--prompt",
        "The Ωcat",
        "--unknown",
        "skip",
        "--length",
        "20",
        "--seed",
        "1",
        "--no-echo",
    )
    same = cli("sample", "-c", run_dir, "--prompt", "The cat", "--length", "20", "--seed", "1", "--no-echo")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == same.stdout


def test_sample_uses_the_newest_run_under_checkpoints(cli, tmp_path, run_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("sample", "--length", "5")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "no checkpoint found")
    (tmp_path / "checkpoints" / "mine").mkdir(parents=True)
    (tmp_path / "checkpoints" / "mine" / "best.pt").write_bytes((run_dir / "best.pt").read_bytes())
    r = cli("sample", "--length", "5", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == cli("sample", "-c", run_dir / "best.pt", "--length", "5", "--seed", "1").stdout


# ---------------------------------------------------------------- score and info


@pytest.fixture
def val_file(tmp_path, corpus_text):
    p = tmp_path / "val.txt"
    p.write_text(corpus_text[-700:], encoding="utf-8")
    return p


def test_score_json(cli, run_dir, val_file):
    r = cli("score", val_file, "-c", run_dir, "--json", "--device", "cpu", "--precision", "fp32")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"loss", "bits_per_char", "perplexity", "tokens"} <= set(d)
    text = val_file.read_text(encoding="utf-8")
    assert d["tokens"] == len(text) - 1
    assert d["bits_per_char"] == pytest.approx(d["loss"] / math.log(2), rel=1e-4)  # one char per token
    assert d["perplexity"] == pytest.approx(math.exp(d["loss"]), rel=1e-4)
    plain = cli("score", val_file, "-c", run_dir)
    assert plain.exit_code == 0 and "bits/char" in plain.stdout


def test_score_per_line_gives_one_output_line_per_input_line(cli, run_dir, val_file):
    lines = val_file.read_text(encoding="utf-8").splitlines()
    r = cli("score", val_file, "-c", run_dir, "--per-line")
    assert r.exit_code == 0, r.stderr
    out = r.stdout.splitlines()
    assert len(out) == len(lines)
    for o, line in zip(out, lines):
        loss, text = o.split("\t", 1)
        assert text == line and float(loss) > 0
    r = cli("score", val_file, "-c", run_dir, "--per-line", "--json")
    records = [json.loads(x) for x in r.stdout.splitlines()]
    assert [rec["line"] for rec in records] == lines
    assert all({"loss", "bits_per_char", "tokens"} <= set(rec) for rec in records)


def test_score_per_line_splits_on_newlines_only(cli, run_dir, tmp_path):
    """Form feeds (common in source code) and U+2028 inside a line do not start new output lines."""
    f = tmp_path / "ff.txt"
    f.write_text("The cat\x0cruns\nA dog\u2028barks\r\nend\n", encoding="utf-8", newline="")
    r = cli("score", f, "-c", run_dir, "--per-line", "--json", "--unknown", "skip")
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x)["line"] for x in r.stdout.splitlines()]
    assert lines == ["The cat\x0cruns", "A dog\u2028barks", "end"]


@pytest.mark.parametrize("content", ["", "T"])
def test_score_of_a_text_too_short_to_score(cli, run_dir, tmp_path, content):
    """Nothing to predict: a clear error, or valid JSON; never NaN (which is not JSON)."""
    f = tmp_path / "short.txt"
    f.write_text(content, encoding="utf-8")
    r = cli("score", f, "-c", run_dir, "--json")
    _no_traceback(r)
    if r.exit_code != 0:
        assert_one_error_line(r.stderr)
    else:
        json.loads(r.stdout, parse_constant=lambda name: pytest.fail(f"{name} in JSON output: {r.stdout}"))


def test_score_from_stdin(cli, run_dir, val_file):
    a = cli("score", "-", "-c", run_dir, "--json", input=val_file.read_bytes())
    b = cli("score", val_file, "-c", run_dir, "--json")
    assert a.exit_code == 0, a.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_info_json(cli, run_dir, loaded):
    _, tok, ckpt = loaded
    r = cli("info", run_dir, "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    keys = {
        "parameters",
        "non_embedding_parameters",
        "vocab_size",
        "level",
        "cell",
        "layers",
        "hidden",
        "steps",
        "best_val_loss",
    }
    assert keys <= set(d)
    assert d["vocab_size"] == len(tok) and d["level"] == "char"
    assert (d["cell"], d["layers"], d["hidden"]) == ("lstm", 2, 32)
    assert d["steps"] == ckpt["step"]
    assert d["best_val_loss"] == pytest.approx(ckpt["best_val_loss"], abs=1e-6)
    model = load_model(run_dir)[0]
    assert d["parameters"] == sum(p.numel() for p in model.parameters())
    assert d["parameters"] - d["non_embedding_parameters"] == model.emb.weight.numel()


def test_info_plain(cli, run_dir):
    r = cli("info", run_dir)
    assert r.exit_code == 0, r.stderr
    assert "vocab_size:" in r.stdout and "model: cell=lstm" in r.stdout


# ---------------------------------------------------------------- user mistakes


def _no_traceback(r):
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


def test_a_cache_folder_that_cannot_be_written_says_which_and_how(cli, tmp_path, corpus_file, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "a-file" / "cache"))  # below a file: no folder can be made
    r = cli("train", corpus_file, *TINY_FLAGS, "--max-steps", "3", "--out", tmp_path / "run")
    assert r.exit_code == 1
    line = assert_one_error_line(r.stderr, "token cache", "CHARRNN_CACHE")
    assert "free some space" not in line


def test_a_corpus_too_short_to_validate_is_told_what_helps(cli, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abcab")  # 4 tokens train, 1 would validate
    r = cli(
        "train", tiny, *TINY_FLAGS, "--seq-len", "1", "--batch-size", "1", "--max-steps", "2", "--out", tmp_path / "run"
    )
    assert r.exit_code == 0, r.stderr
    assert "reporting training loss only" in r.stderr and "longer corpus" in r.stderr
    assert "raise --val-fraction" not in r.stderr


def test_plot_skips_losses_that_are_not_numbers(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 10, "tokens": 100, "train_loss": NaN, "seconds": 1, "val_loss": 1e999}\n'
        '{"step": 20, "tokens": 200, "train_loss": 2.0, "seconds": 2, "val_loss": 2.5}\n'
        '{"step": 30, "tokens": 300, "train_loss": -Infinity, "seconds": 3, "val_loss": NaN}\n'
    )
    r = cli("plot", run)
    assert r.exit_code == 0, r.stderr
    assert "best val 2.5000 at step 20" in r.stdout


@pytest.fixture
def files(tmp_path, corpus_file, run_dir):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("The Ωmega ∑um\n", encoding="utf-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text("model:\n  hidden: big\n")
    (tmp_path / "no_files" / ".hidden").mkdir(parents=True)
    return dict(
        corpus=corpus_file,
        run=run_dir,
        unseen=unseen,
        latin1=latin1,
        empty=empty,
        bad_type=bad_type,
        no_files=tmp_path / "no_files",
        missing=tmp_path / "missing.txt",
        out=tmp_path / "out",
        tmp=tmp_path,
    )


MISTAKES = {
    "missing corpus": (
        ["train", "{missing}", "--max-steps", "5", "--out", "{out}"],
        2,
        ["corpus not found", "missing.txt"],
    ),
    "bad time budget": (
        ["train", "{corpus}", "--time-budget", "abc", "--out", "{out}"],
        2,
        ["cannot read duration 'abc'"],
    ),
    "empty time budget": (
        ["train", "{corpus}", "--time-budget", "", "--out", "{out}"],
        2,
        ["cannot read duration ''", "like 90s"],
    ),
    "zero time budget": (
        ["train", "{corpus}", "--time-budget", "0s", "--out", "{out}"],
        2,
        ["--time-budget", "not 0s", "like 90s"],
    ),
    "nonsense cell": (
        ["train", "{corpus}", "--cell", "transformer", "--max-steps", "5", "--out", "{out}"],
        2,
        ["--cell", "lstm, gru, rnn", "'transformer'"],
    ),
    "nonsense batching": (
        ["train", "{corpus}", "--batching", "shuffle", "--max-steps", "5", "--out", "{out}"],
        2,
        ["--batching"],
    ),
    "negative dropout": (
        ["train", "{corpus}", "--dropout", "-0.1", "--max-steps", "5", "--out", "{out}"],
        2,
        ["--dropout"],
    ),
    "not utf-8": (["train", "{latin1}", "--max-steps", "5", "--out", "{out}"], 2, ["not UTF-8", "iconv -f"]),
    "a folder holding a file that is not utf-8": (
        ["train", "{tmp}", "--max-steps", "5", "--out", "{out}"],
        2,
        ["latin1.txt is not UTF-8"],
    ),
    "empty corpus": (["train", "{empty}", "--max-steps", "5", "--out", "{out}"], 2, ["empty"]),
    "corpus folder without files": (
        ["train", "{no_files}", "--max-steps", "5", "--out", "{out}"],
        2,
        ["no_files holds no files"],
    ),
    "batch too big": (
        [
            "train",
            "{corpus}",
            *TINY_FLAGS,
            "--dropout",
            "0",
            "--weight-decay",
            "0.1",
            "--batch-size",
            "5000",
            "--max-steps",
            "5",
            "--out",
            "{out}",
        ],
        2,
        ["too small", "--batch-size"],
    ),
    "missing config": (
        ["train", "{corpus}", "--config", "{missing}", "--max-steps", "5"],
        2,
        ["config file not found"],
    ),
    "wrongly typed config value": (
        ["train", "{corpus}", "--config", "{bad_type}", "--max-steps", "5", "--out", "{out}"],
        2,
        ["hidden"],
    ),
    "nothing to resume": (
        ["train", "{corpus}", "--resume", "--max-steps", "5", "--out", "{out}"],
        2,
        ["nothing to resume"],
    ),
    "missing checkpoint (sample)": (["sample", "-c", "{missing}"], 1, ["checkpoint not found"]),
    "missing checkpoint (score)": (["score", "{corpus}", "-c", "{missing}"], 1, ["checkpoint not found"]),
    "missing checkpoint (info)": (["info", "{missing}"], 1, ["checkpoint not found"]),
    "not a checkpoint": (["info", "{corpus}"], 1, ["not a readable charrnn checkpoint"]),
    "folder without checkpoint": (["sample", "-c", "{tmp}"], 1, ["no best.pt or last.pt"]),
    "unseen prompt characters": (
        ["sample", "-c", "{run}", "--prompt", "Zé€ the"],
        2,
        ["'Z'", "'é'", "'€'", "--unknown skip"],
    ),
    "unseen characters in scored text": (["score", "{unseen}", "-c", "{run}", "--unknown", "error"], 2, ["'Ω'", "'∑'"]),
    "unseen characters per line": (
        ["score", "{unseen}", "-c", "{run}", "--per-line", "--unknown", "error"],
        2,
        ["'Ω'"],
    ),
    "negative attempt limit": (["sample", "-c", "{run}", "--max-attempts", "-5"], 2, ["--max-attempts", "at least 1"]),
    "negative attempt limit, curated": (
        ["sample", "-c", "{run}", "--unique", "--max-attempts", "-5"],
        2,
        ["--max-attempts"],
    ),
    "empty stop string": (["sample", "-c", "{run}", "--stop", ""], 2, ["--stop", "empty"]),
    "missing file to score": (["score", "{missing}", "-c", "{run}"], 2, ["not found"]),
    "bad top-p": (["sample", "-c", "{run}", "--top-p", "1.5"], 2, ["--top-p"]),
    "bad top-k": (["sample", "-c", "{run}", "--top-k", "0"], 2, ["--top-k"]),
    "negative temperature": (["sample", "-c", "{run}", "--temp", "-1"], 2, ["--temp"]),
    "negative length": (["sample", "-c", "{run}", "--length", "-5"], 2, ["--length"]),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_user_mistake_is_one_error_line(cli, files, name):
    args, code, needles = MISTAKES[name]
    r = cli(*[a.format(**files) for a in args])
    _no_traceback(r)
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert r.stdout == ""
    assert_one_error_line(r.stderr, *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_gpu_is_one_error_line(cli, files):
    r = cli("train", files["corpus"], "--device", "cuda", "--max-steps", "5", "--out", files["out"])
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--device cuda")


TYPED_MISTAKES = {
    "non-numeric max steps": ["train", "{corpus}", "--max-steps", "abc", "--out", "{out}"],
    "unknown level": ["train", "{corpus}", "--level", "sentence", "--max-steps", "5", "--out", "{out}"],
    "unknown --unknown": ["sample", "-c", "{run}", "--unknown", "maybe"],
    "non-numeric temperature": ["sample", "-c", "{run}", "--temp", "hot"],
}


@pytest.mark.parametrize("name", TYPED_MISTAKES)
def test_option_type_mistake_is_one_error_line(cli, files, name):
    """Mistakes caught by the option parser itself follow the same one-line contract."""
    r = cli(*[a.format(**files) for a in TYPED_MISTAKES[name]])
    _no_traceback(r)
    assert r.exit_code == 2
    assert_one_error_line(r.stderr)
