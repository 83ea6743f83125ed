"""Real text, real failures (issue 9): tiny temperatures, text with unseen characters, ASCII and
full stdouts, advice that works, a full disk during a save."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import CHARRNN, assert_one_error_line, run_charrnn, subprocess_env

import charrnn
from charrnn.config import SampleConfig
from charrnn.sampling.decode import choose
from charrnn.sampling.engine import generate

# ---------------------------------------------------------------- case 3: tiny temperatures

TINY = [1e-6, 1e-20, 1e-38, 1e-39, 1e-45, 1e-300, 5e-324]


@pytest.mark.parametrize("temperature", TINY)
def test_any_positive_temperature_gives_the_argmax_when_one_token_leads(engine, temperature):
    # Large positive logits: x / T overflows float (and double) for these T.
    logits = torch.tensor([[3.0, 9.5, 9.0, -4.0, 0.5], [40.0, -1.0, 41.0, 39.0, 0.0]])
    for seed in range(20):
        assert choose(logits, temperature, seed=seed, step=seed).tolist() == [1, 2]
        assert choose(logits, temperature, top_k=2, seed=seed).tolist() == [1, 2]
        assert choose(logits, temperature, top_p=0.5, seed=seed).tolist() == [1, 2]


@pytest.mark.parametrize("temperature", [1e-39, 1e-300])
def test_tiny_temperature_splits_exact_ties_evenly_as_the_limit_does(engine, temperature):
    logits = torch.tensor([[1.0, 5.0, 5.0, 0.0]])
    drawn = [int(choose(logits, temperature, seed=s, step=0)) for s in range(200)]
    assert set(drawn) == {1, 2}
    assert 60 < drawn.count(1) < 140


@pytest.mark.parametrize("temperature", [1e-38, 1e-39, 1e-300])
def test_tiny_temperature_samples_the_greedy_text(loaded, engine, temperature):
    model, tok, _ = loaded
    prompt = tok.encode("The ")

    def run(t: float, seed: int) -> list[int]:
        cfg = SampleConfig(length=60, temperature=t, seed=seed, precision="fp32")
        return torch.cat(list(generate(model, prompt, cfg)), dim=1)[0].tolist()

    greedy = run(0.0, 0)
    assert run(temperature, 1) == greedy and run(temperature, 2) == greedy


@pytest.mark.slow
def test_tiny_temperature_on_the_cli_prints_the_greedy_text(run_dir):
    greedy = run_charrnn("sample", "-c", run_dir, "--greedy", "-n", "80", "--prompt", "The ")
    assert greedy.returncode == 0
    for t in ("1e-38", "1e-39"):
        r = run_charrnn("sample", "-c", run_dir, "--temp", t, "-n", "80", "--prompt", "The ", "--seed", "3")
        assert r.returncode == 0 and r.stdout == greedy.stdout, (t, r.stdout[:80])


# ---------------------------------------------------------------- case 2: unseen characters in scored text


def test_score_leaves_out_unseen_characters_and_says_which(cli, run_dir, corpus_text, tmp_path, loaded):
    model, tok, _ = loaded
    clean = corpus_text[:600]
    f = tmp_path / "held_out.txt"
    f.write_text(clean[:300] + "([" + clean[300:] + "\u0e01])#", encoding="utf-8")
    r = cli("score", f, "-c", run_dir, "--json", "--precision", "fp32")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["left_out"] == 6 and d["tokens"] == len(clean) - 1
    note = r.stderr.strip()
    assert (
        note.count("\n") == 0 and "left out 6 tokens" in note and "'#'" in note and "'('" in note and "'\u0e01'" in note
    )
    # What is scored is exactly the text without them.
    assert d["loss"] == pytest.approx(charrnn.load(run_dir, precision="fp32").score(clean).loss, abs=1e-6)
    strict = cli("score", f, "-c", run_dir, "--unknown", "error")
    assert strict.exit_code == 2  # unseen tokens are the input's: a usage mistake
    assert_one_error_line(strict.stderr, "never saw", "'#'")
    plain = cli("score", f, "-c", run_dir)
    assert plain.exit_code == 0 and "nats/token" in plain.stdout and "left out 6 tokens" in plain.stderr


def test_score_lines_counts_left_out_tokens_per_line(cli, run_dir, tmp_path):
    f = tmp_path / "lines.txt"
    f.write_text("The cat (runs).\nA dog\n\u00bfQu\u00e9?\n", encoding="utf-8")
    r = cli("score", f, "-c", run_dir, "--per-line", "--json")
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["left_out"] for x in rows] == [2, 0, 2]
    assert all(x["loss"] is not None for x in rows)
    assert "left out 4 tokens" in r.stderr
    lines = charrnn.load(run_dir).score_lines(["a (b)", "cd"])
    assert sum(lines[0].left_out.values()) == 2 and not lines[1].left_out
    assert cli("score", f, "-c", run_dir, "--per-line", "--unknown", "error").exit_code == 2


def test_score_of_a_text_of_unseen_characters_only_is_one_line(cli, run_dir, tmp_path):
    f = tmp_path / "thai.txt"
    f.write_text("\u0e01\u0e02\u0e03 \u0e04", encoding="utf-8")
    r = cli("score", f, "-c", run_dir, "--json")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "nothing to score", "leaving out 4 tokens")


def test_the_api_counts_what_it_left_out(run_dir):
    model = charrnn.load(run_dir)
    s = model.score("The cat runs (away) from the dog?")
    assert s.left_out == {"(": 1, ")": 1} and s.tokens == len("The cat runs away from the dog?") - 1
    with pytest.raises(charrnn.CharrnnError, match="never saw"):
        model.score("The cat (runs)", unknown="error")


# ---------------------------------------------------------------- case 4: ASCII, Latin-1 and full stdouts


@pytest.fixture(scope="module")
def accented_run(tmp_path_factory):
    """A tiny model of text with accents, dashes and quotes; its corpus name is not ASCII either."""
    from conftest import tiny_config

    from charrnn.training.loop import train

    text = "Caf\u00e9 cr\u00e8me \u2014 \u00ab na\u00efve \u00bb r\u00e9sum\u00e9, \u00fcber \u20ac5.\n" * 60
    out = tmp_path_factory.mktemp("acc") / "caf\u00e9"
    train(tiny_config(out, **{"train.max_steps": 3, "train.eval_every": 3, "model.layers": 1}), text, "caf\u00e9")
    held = out.parent / "held.txt"
    held.write_text("Caf\u00e9 \u2014 r\u00e9sum\u00e9\n\u00fcber \u00bb\n", encoding="utf-8")
    return out, held


def _cases(out, held):
    return {
        "sample": ["sample", "-c", out, "-p", "Caf\u00e9", "-n", "40", "--seed", "1"],
        "sample -N 2 separator": [
            "sample",
            "-c",
            out,
            "-p",
            "\u00e9",
            "-n",
            "20",
            "-N",
            "2",
            "--separator",
            "\u2014\\n",
            "--seed",
            "1",
        ],
        "sample json": ["sample", "-c", out, "-p", "\u00e9", "-n", "20", "--json", "--seed", "1"],
        "score": ["score", held, "-c", out],
        "score json": ["score", held, "-c", out, "--json"],
        "score per-line": ["score", held, "-c", out, "--per-line"],
        "score per-line json": ["score", held, "-c", out, "--per-line", "--json"],
        "info": ["info", out],
        "info json": ["info", out, "--json"],
        "help": ["sample", "--help"],
        "version": ["--version"],
    }


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_every_command_writes_utf8_to_a_narrow_stdout(accented_run, encoding):
    from typer.testing import CliRunner

    from charrnn.cli import app

    out, held = accented_run
    runner = CliRunner(charset=encoding)
    for name, args in _cases(out, held).items():
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, (name, r.stderr_bytes, r.exception)
        text = r.stdout_bytes.decode("utf-8")  # UTF-8 whatever the stream said
        assert text, name
    per_line = runner.invoke(app, ["score", str(held), "-c", str(out), "--per-line"]).stdout_bytes.decode("utf-8")
    assert [l.split("\t", 1)[1] for l in per_line.splitlines()] == [
        "Caf\u00e9 \u2014 r\u00e9sum\u00e9",
        "\u00fcber \u00bb",
    ]
    sampled = runner.invoke(app, ["sample", "-c", str(out), "-p", "Caf\u00e9", "-n", "10"]).stdout_bytes.decode("utf-8")
    assert sampled.startswith("Caf\u00e9")


@pytest.mark.slow
def test_ascii_stdout_in_a_real_process(accented_run):
    out, held = accented_run
    env = {**subprocess_env(), "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    r = subprocess.run(
        CHARRNN + ["sample", "-c", str(out), "-p", "Caf\u00e9", "-n", "60", "--seed", "2"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert r.stdout.decode("utf-8").startswith("Caf\u00e9")
    r = subprocess.run(
        CHARRNN + ["score", str(held), "-c", str(out), "--per-line"], capture_output=True, env=env, timeout=120
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert "\u2014" in r.stdout.decode("utf-8")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_stdout_is_one_line_and_exit_1_from_every_command(accented_run, tmp_path, monkeypatch, capsys):
    """In-process over a real /dev/full stream, every command and output path; one real process below."""
    from charrnn.cli import app

    out, held = accented_run
    cases = _cases(out, held)
    cases["train json"] = [
        "train",
        held,
        "--out",
        tmp_path / "t",
        "--max-steps",
        "2",
        "--hidden",
        "8",
        "--layers",
        "1",
        "--seq-len",
        "8",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "-q",
        "--json",
    ]
    cases["top help"] = ["--help"]
    for name, args in cases.items():
        with open("/dev/full", "w", encoding="utf-8") as full:
            monkeypatch.setattr(sys, "stdout", full)
            with pytest.raises(SystemExit) as e:
                app([str(a) for a in args])
            monkeypatch.undo()
        err = capsys.readouterr().err
        assert e.value.code == 1, (name, err)
        assert_one_error_line(err, "No space left on device")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_stdout_in_a_real_process(accented_run):
    out, held = accented_run
    for args in (["sample", "-c", out, "-n", "40"], ["score", held, "-c", out, "--per-line"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run(
                CHARRNN + [str(a) for a in args], stdout=full, stderr=subprocess.PIPE, env=subprocess_env(), timeout=120
            )
        assert r.returncode == 1, (args, r.stderr)
        assert_one_error_line(r.stderr.decode(), "No space left on device")


# ---------------------------------------------------------------- case 7: advice that works

ENCODED = {
    "latin-1": ("Caf\u00e9 cr\u00e8me, na\u00efve \u00bbgar\u00e7on\u00ab.\n" * 30).encode("latin-1"),
    "cp1252 quotes": ("\u201cQuoted\u201d \u2013 it\u2019s \u20ac5.\n" * 30).encode("cp1252"),
    "utf-16 with BOM": ("Hello, w\u00f6rld.\n" * 30).encode("utf-16"),
    "utf-16le without BOM": ("Hello, w\u00f6rld.\n" * 30).encode("utf-16-le"),
    "utf-16be without BOM": ("Hello, w\u00f6rld.\n" * 30).encode("utf-16-be"),
    "utf-8 with a stray byte": ("Caf\u00e9 cr\u00e8me \u2014 na\u00efve.\n" * 30).encode("utf-8") + b"\xff tail\n",
}


@pytest.mark.skipif(not shutil.which("iconv"), reason="no iconv here")
@pytest.mark.parametrize("kind", ENCODED)
def test_the_suggested_conversion_runs_on_the_file_as_it_is(cli, tmp_path, kind):
    f = tmp_path / "my corpus.txt"  # a space: the command must quote it
    f.write_bytes(ENCODED[kind])
    r = cli("train", f, "--max-steps", "1", "--out", tmp_path / "run")
    assert r.exit_code == 2
    line = assert_one_error_line(r.stderr, "not UTF-8", "iconv")
    command = line.split("e.g. ", 1)[1]
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, (command, done.stderr)
    converted = (tmp_path / "my corpus.utf8.txt").read_bytes().decode("utf-8")
    if kind != "utf-8 with a stray byte":
        want = ENCODED[kind].decode({"latin-1": "latin-1", "cp1252 quotes": "cp1252"}.get(kind, kind.split()[0]))
        assert converted.lstrip("\ufeff") == want.lstrip("\ufeff")
    else:
        assert converted == ENCODED[kind].replace(b"\xff", b"").decode("utf-8")


def _train_tiny(cli, corpus, out, *flags):
    return cli(
        "train",
        corpus,
        "--max-steps",
        "1",
        "--hidden",
        "8",
        "--layers",
        "1",
        "--embed",
        "4",
        "--device",
        "cpu",
        "--out",
        out,
        "--overwrite",
        "-q",
        *flags,
    )


@pytest.mark.parametrize(
    "size,flags",
    [
        (30, ["--batch-size", "8", "--seq-len", "8"]),
        (60, ["--batch-size", "64"]),
        (12, ["--seq-len", "32"]),
        (300, ["--batch-size", "400", "--seq-len", "2"]),
        (40, ["--batching", "random", "--seq-len", "64"]),
    ],
)
def test_a_corpus_too_small_for_the_settings_is_told_settings_that_fit(cli, tmp_path, size, flags):
    f = tmp_path / "small.txt"
    f.write_text(("abcdefghij " * 40)[:size], encoding="utf-8")
    r = _train_tiny(cli, f, tmp_path / "run", *flags)
    assert r.exit_code == 2
    line = assert_one_error_line(r.stderr, "use --")
    advice = line.split("use ", 1)[1].split(" or less")[0].split()
    r = _train_tiny(cli, f, tmp_path / "run", *flags, *advice)
    assert r.exit_code == 0, (advice, r.stderr)


@pytest.mark.parametrize("text", ["ab", "a"])
def test_a_corpus_too_small_at_the_minimum_settings_is_told_to_grow(cli, tmp_path, text):
    f = tmp_path / "tiny.txt"
    f.write_text(text, encoding="utf-8")
    for flags in ([], ["--batch-size", "1", "--seq-len", "1"]):
        r = _train_tiny(cli, f, tmp_path / "run", *flags)
        assert r.exit_code == 2
        line = assert_one_error_line(r.stderr, "longer corpus")
        assert "lower" not in line and "--batch-size 1 --seq-len" not in line


def test_a_character_model_asked_for_unk_is_told_what_works(cli, run_dir):
    r = cli("sample", "-c", run_dir, "--prompt", "Z#The", "--unknown", "unk")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--unknown skip")
    assert cli("sample", "-c", run_dir, "--prompt", "Z#The", "--unknown", "skip", "-n", "5").exit_code == 0


def test_a_non_utf8_prompt_on_stdin_is_usage_with_a_conversion(cli, run_dir):
    r = cli("sample", "-c", run_dir, "--prompt", "-", input="caf\xe9".encode("latin-1"))
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "not UTF-8", "iconv -f")


def test_a_named_pipe_with_a_writer_is_read(cli, tmp_path, run_dir, corpus_text):
    fifo = tmp_path / "held.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        ["bash", "-c", f"sleep 0.3; printf %s {shlex.quote(corpus_text[:300])} > {shlex.quote(str(fifo))}"]
    )
    r = cli("score", fifo, "-c", run_dir, "--json")
    writer.wait(10)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["tokens"] == 299


def test_resuming_on_another_corpus_is_told_a_fine_tune_that_works(cli, tmp_path, corpus_text):
    from conftest import TINY_FLAGS

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(corpus_text, encoding="utf-8")
    b.write_text(corpus_text[::-1], encoding="utf-8")
    run = tmp_path / "run"
    assert cli("train", a, *TINY_FLAGS, "--max-steps", "3", "--out", run, "-q").exit_code == 0
    r = cli("train", b, "--resume", "--max-steps", "6", "--out", run, "-q")
    assert r.exit_code == 2
    line = assert_one_error_line(r.stderr, "--init-from")
    advice = line.split("add ", 1)[1].replace("NEW_FOLDER", str(tmp_path / "tuned")).split()
    r = cli("train", b, "--max-steps", "3", "-q", *advice)
    assert r.exit_code == 0, (advice, r.stderr)


def test_resuming_a_folder_without_last_pt_is_told_what_starts_over(cli, tmp_path, corpus_file):
    from conftest import TINY_FLAGS

    run = tmp_path / "run"
    assert cli("train", corpus_file, *TINY_FLAGS, "--max-steps", "3", "--out", run, "-q").exit_code == 0
    (run / "last.pt").unlink()
    r = cli("train", corpus_file, "--resume", "--max-steps", "3", "--out", run, "-q")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "drop --resume", "--overwrite")
    assert cli("train", corpus_file, *TINY_FLAGS, "--max-steps", "3", "--out", run, "-q", "--overwrite").exit_code == 0


@pytest.mark.slow
def test_a_closed_stdin_given_as_input_is_one_line_and_exit_2(accented_run):
    out, held = accented_run
    cmd = " ".join(shlex.quote(c) for c in CHARRNN)
    r = subprocess.run(
        ["bash", "-c", f"{cmd} score - -c {shlex.quote(str(out))} <&-"],
        capture_output=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert_one_error_line(r.stderr.decode(), "stdin is closed")


@pytest.mark.slow
def test_a_closed_stdout_is_one_line_and_exit_1(accented_run):
    out, held = accented_run
    cmd = " ".join(shlex.quote(c) for c in CHARRNN)
    for args in (f"sample -c {shlex.quote(str(out))} -n 20", f"info {shlex.quote(str(out))} --json", "--version"):
        r = subprocess.run(["bash", "-c", f"{cmd} {args} >&-"], capture_output=True, env=subprocess_env(), timeout=120)
        assert r.returncode == 1, (args, r.stderr)
        assert_one_error_line(r.stderr.decode(), "stdout is closed")


def test_a_records_model_leaves_out_unseen_characters_too(tmp_path):
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(["kalo", "mira", "tomas", "lena", "oskar", "ima"] * 30) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    charrnn.train(
        corpus,
        out=out,
        records="lines",
        max_steps=3,
        hidden=16,
        layers=1,
        embed=8,
        batch_size=4,
        device="cpu",
        precision="fp32",
    )
    model = charrnn.load(out, precision="fp32")
    s = model.score("kalo\nmi#ra\nlena!\n")
    assert s.left_out == {"#": 1, "!": 1}
    assert s.tokens == model.score("kalo\nmira\nlena\n").tokens
    with pytest.raises(charrnn.CharrnnError, match="never saw"):
        model.score("mi#ra\n", unknown="error")


def test_a_min_count_no_word_reaches_is_told_one_that_works(cli, tmp_path, corpus_file):
    from conftest import TINY_FLAGS

    r = cli(
        "train",
        corpus_file,
        "--level",
        "word",
        "--min-count",
        "100000",
        "--max-steps",
        "2",
        "--out",
        tmp_path / "w",
        "-q",
        *TINY_FLAGS,
    )
    assert r.exit_code == 2
    line = assert_one_error_line(r.stderr, "use --min-count")
    value = line.split("use --min-count ", 1)[1].split()[0]
    r = cli(
        "train",
        corpus_file,
        "--level",
        "word",
        "--min-count",
        value,
        "--max-steps",
        "2",
        "--out",
        tmp_path / "w",
        "-q",
        *TINY_FLAGS,
    )
    assert r.exit_code == 0, r.stderr
