"""The real command in real processes: stdin, stdout and stderr as pipes, `| head`, exit codes.

Each process imports torch (about a second), so these are few and do several checks each.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest
from conftest import CHARRNN, TINY_FLAGS, assert_one_error_line, run_charrnn, subprocess_env

pytestmark = pytest.mark.slow  # real processes: see `pytest -m 'not slow'` for the quick loop

SUMMARY_KEYS = {"best_val_loss", "steps", "tokens_per_second", "checkpoint"}


def _shell(script: str, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """bash with pipefail, so a pipeline fails if charrnn does, not only if the last command does."""
    return subprocess.run(
        ["bash", "-c", "set -o pipefail\n" + script],
        capture_output=True,
        cwd=cwd,
        env=subprocess_env(),
        timeout=timeout,
    )


CMD = " ".join(shlex.quote(c) for c in CHARRNN)


def test_train_json_quiet_stdout_is_one_json_object(tmp_path, corpus_file):
    out = tmp_path / "run"
    p = run_charrnn("train", corpus_file, "--max-steps", "20", "--out", out, "--quiet", "--json", *TINY_FLAGS)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""
    stdout = p.stdout.decode()
    assert stdout.endswith("\n") and stdout.count("\n") == 1
    summary = json.loads(stdout)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 20 and summary["checkpoint"] == str(out / "best.pt")
    assert {f.name for f in out.iterdir()} == {
        "best.pt",
        "last.pt",
        "config.yaml",
        "metrics.jsonl",
        "samples.jsonl",
        ".lock",
    }


def test_train_corpus_from_stdin_with_progress_on_stderr(tmp_path, corpus_text):
    out = tmp_path / "from_stdin"
    p = run_charrnn(
        "train",
        "-",
        "--max-steps",
        "20",
        "--eval-every",
        "10",
        "--out",
        out,
        *TINY_FLAGS,
        input=corpus_text.encode("utf-8"),
    )
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == b""  # progress and the summary line are for people: stderr
    err = p.stderr.decode()
    assert "val loss" in err and "saved" in err
    assert "Traceback" not in err
    info = json.loads(run_charrnn("info", out, "--json").stdout)
    assert info["steps"] == 20 and info["corpus"] == "stdin"


@pytest.mark.parametrize("length", [2000, 200_000])
def test_sample_into_head_ends_quietly(tmp_path, run_dir, length):
    """`charrnn sample | head -c 10`: head leaves early; charrnn exits 0 with nothing on stderr."""
    err = tmp_path / "err.txt"
    p = _shell(
        f"{CMD} sample -c {shlex.quote(str(run_dir))} --length {length} --seed 1 2>{shlex.quote(str(err))} | head -c 10"
    )
    assert p.returncode == 0, (p.returncode, err.read_text())
    assert len(p.stdout) == 10
    assert err.read_text() == ""


def test_sample_into_head_with_popen(run_dir):
    """The same with the pipe made by hand: charrnn's own exit status and stderr."""
    env = subprocess_env()
    producer = subprocess.Popen(
        CHARRNN + ["sample", "-c", str(run_dir), "--length", "200000", "--seed", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    head = subprocess.Popen(["head", "-c", "10"], stdin=producer.stdout, stdout=subprocess.PIPE)
    producer.stdout.close()  # only head holds the read end now
    first, _ = head.communicate(timeout=60)
    stderr = producer.stderr.read()
    producer.stderr.close()
    assert producer.wait(timeout=60) == 0
    assert stderr == b""
    assert len(first) == 10


def test_long_prompt_echo_into_head_ends_quietly(tmp_path, run_dir, corpus_text):
    """The prompt is echoed first: a prompt larger than the pipe's buffer meets the closed pipe at once."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(corpus_text * 40, encoding="utf-8")  # ~160 KB
    err = tmp_path / "err.txt"
    p = _shell(
        f"{CMD} sample -c {shlex.quote(str(run_dir))} --prompt - --length 10 "
        f"<{shlex.quote(str(prompt))} 2>{shlex.quote(str(err))} | head -c 5"
    )
    assert p.returncode == 0, err.read_text()
    assert p.stdout == corpus_text[:5].encode()
    assert err.read_text() == ""


def test_prompt_from_a_pipe(run_dir):
    p = _shell(f"printf 'The cat' | {CMD} sample -c {shlex.quote(str(run_dir))} --prompt - --length 30 --seed 4")
    q = run_charrnn("sample", "-c", run_dir, "--prompt", "The cat", "--length", "30", "--seed", "4")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == q.stdout
    assert p.stdout.startswith(b"The cat") and p.stderr == b""


def test_sample_options_in_a_process(run_dir):
    p = run_charrnn(
        "sample",
        "-c",
        run_dir,
        "--prompt",
        "A",
        "--length",
        "50",
        "--num-samples",
        "3",
        "--json",
        "--seed",
        "6",
        "--stop",
        "\\n",
        "--top-k",
        "10",
        "--top-p",
        "0.95",
    )
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
    records = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert all(r["seed"] == 6 and r["text"].startswith("A") and "\n" not in r["text"] for r in records)
    plain = run_charrnn(
        "sample",
        "-c",
        run_dir,
        "--prompt",
        "A",
        "--length",
        "50",
        "--num-samples",
        "3",
        "--seed",
        "6",
        "--stop",
        "\\n",
        "--top-k",
        "10",
        "--top-p",
        "0.95",
        "--no-echo",
        "--separator",
        "|",
    )
    texts = [r["text"][1:] + "\n" for r in records]
    assert plain.stdout.decode() == "|".join(texts)


def test_score_per_line_into_head(tmp_path, run_dir, corpus_text):
    big = tmp_path / "big.txt"
    big.write_text(corpus_text * 30, encoding="utf-8")
    err = tmp_path / "err.txt"
    p = _shell(
        f"{CMD} score {shlex.quote(str(big))} -c {shlex.quote(str(run_dir))} --per-line "
        f"2>{shlex.quote(str(err))} | head -n 2"
    )
    assert p.returncode == 0, err.read_text()
    assert len(p.stdout.decode().splitlines()) == 2
    assert err.read_text() == ""


def test_ctrl_c_saves_last_pt_and_exits_130(tmp_path, corpus_file):
    import signal
    import time

    from charrnn import checkpoint

    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        CHARRNN
        + [
            "train",
            str(corpus_file),
            "--max-steps",
            "1000000",
            "--eval-every",
            "10",
            "--out",
            str(out),
            "--quiet",
            "--json",
            *TINY_FLAGS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").exists():  # training is under way
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "training never evaluated"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["steps"] >= 10
    assert checkpoint.load(out / "last.pt")["step"] == summary["steps"]
    assert {f.name for f in out.iterdir()} == {
        "best.pt",
        "last.pt",
        "config.yaml",
        "metrics.jsonl",
        "samples.jsonl",
        ".lock",
    }


def test_user_mistake_in_a_process(tmp_path, run_dir):
    p = run_charrnn("train", tmp_path / "nope.txt", "--max-steps", "5")
    assert p.returncode == 2 and p.stdout == b""
    assert_one_error_line(p.stderr.decode(), "corpus not found")
    p = run_charrnn("sample", "-c", run_dir, "--prompt", "¿Qué?")
    assert p.returncode == 2 and p.stdout == b""  # a prompt the model cannot read: a usage mistake
    assert_one_error_line(p.stderr.decode(), "'¿'", "'é'")


def test_console_script_version_and_help():
    exe = shutil.which("charrnn")
    assert exe, "the charrnn console script is not installed"
    import charrnn

    p = subprocess.run([exe, "--version"], capture_output=True, env=subprocess_env(), timeout=60)
    assert p.returncode == 0 and p.stdout.decode() == f"charrnn {charrnn.__version__}\n"
    p = subprocess.run([exe, "--help"], capture_output=True, env=subprocess_env(), timeout=60)
    assert p.returncode == 0 and b"train" in p.stdout and b"sample" in p.stdout
