"""Exact resume: N steps, stop (like Ctrl-C), resume for N more == 2N steps in one go, bit for bit.

CPU, fp32, dropout > 0, carried state (stream batching): every source of randomness and state
(weights, AdamW moments, RNG, carried hidden state, batch position, LR schedule) must survive.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_FLAGS, tiny_config

from charrnn import checkpoint
from charrnn.errors import UsageError
from charrnn.training.loop import train

TOTAL = 40


def _history(run, key="val_loss"):
    return [(h["step"], h[key]) for h in checkpoint.load(run / "last.pt")["history"]]


def _assert_same_weights(a, b):
    sa, sb = checkpoint.load(a)["model"], checkpoint.load(b)["model"]
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"weights differ: {differ}"


def _straight_and_resumed(tmp_path, corpus_text, stop_at: int, resume_overrides=None, **overrides):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(straight, **overrides), corpus_text, "c")
    first = train(tiny_config(resumed, **overrides), corpus_text, "c", stop=lambda step: step == stop_at)
    assert first["interrupted"] and first["steps"] == stop_at
    assert checkpoint.load(resumed / "last.pt")["step"] == stop_at
    again = train(tiny_config(resumed, **{**overrides, **(resume_overrides or {})}), corpus_text, "c", resume=True)
    assert again["steps"] == TOTAL and not again["interrupted"]
    return straight, resumed


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.cell": "lstm", "data.batching": "stream", "model.dropout": 0.2},
        {"model.cell": "gru", "data.batching": "random", "model.dropout": 0.3},
    ],
    ids=["lstm-stream", "gru-random"],
)
def test_resume_gives_the_same_weights_and_val_losses(tmp_path, corpus_text, overrides):
    # Stop between evaluations (eval every 10) and between loss reports.
    straight, resumed = _straight_and_resumed(tmp_path, corpus_text, stop_at=15, **overrides)
    assert _history(straight) == _history(resumed)
    assert [s for s, _ in _history(straight)] == [10, 20, 30, 40]
    _assert_same_weights(straight / "last.pt", resumed / "last.pt")
    _assert_same_weights(straight / "best.pt", resumed / "best.pt")
    a, b = checkpoint.load(straight / "last.pt"), checkpoint.load(resumed / "last.pt")
    assert a["best_val_loss"] == b["best_val_loss"]
    for sa, sb in zip(a["state"], b["state"]):  # the carried hidden state
        assert torch.equal(sa, sb)
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_resume_at_a_loss_report_step_gives_the_same_train_losses(tmp_path, corpus_text):
    # Losses are reported every 10 steps; evaluations every 20 here, so step 10 is not an evaluation.
    straight, resumed = _straight_and_resumed(tmp_path, corpus_text, stop_at=10, **{"train.eval_every": 20})
    assert _history(straight) == _history(resumed)
    assert _history(straight, "train_loss") == _history(resumed, "train_loss")
    _assert_same_weights(straight / "last.pt", resumed / "last.pt")


def test_resume_mid_report_keeps_the_train_loss_average(tmp_path, corpus_text):
    """The train loss logged at step 20 averages steps 11-20, also when the run stopped at 15."""
    straight, resumed = _straight_and_resumed(tmp_path, corpus_text, stop_at=15)
    assert _history(straight, "train_loss") == _history(resumed, "train_loss")


def test_stop_on_an_evaluation_step_does_not_lose_that_evaluation(tmp_path, corpus_text):
    """Stopping exactly at step 20 (eval every 10): the resumed run's metrics still include step 20,
    as the uninterrupted run's do."""
    straight, resumed = _straight_and_resumed(tmp_path, corpus_text, stop_at=20)
    _assert_same_weights(straight / "last.pt", resumed / "last.pt")
    assert _history(straight) == _history(resumed)


def test_resume_keeps_the_saved_precision(tmp_path, corpus_text):
    """A resume that names no precision (the CLI's default, 'auto') continues in the run's own
    precision, fp32 here, as config.yaml says, so the result stays bit-exact."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(straight), corpus_text, "c")
    train(tiny_config(resumed), corpus_text, "c", stop=lambda step: step == 15)
    summary = train(tiny_config(resumed, **{"train.precision": "auto"}), corpus_text, "c", resume=True)
    assert summary["precision"] == "fp32"
    _assert_same_weights(straight / "last.pt", resumed / "last.pt")


def test_resume_honours_a_new_eval_every(tmp_path, corpus_text):
    """eval_every is one of the settings a resumed run may change (train._resume_config)."""
    run = tmp_path / "r"
    train(tiny_config(run), corpus_text, "c", stop=lambda step: step == 15)
    summary = train(tiny_config(run, **{"train.eval_every": 5}), corpus_text, "c", resume=True)
    assert summary["steps"] == TOTAL
    assert [s for s, _ in _history(run)] == [10, 20, 25, 30, 35, 40]


def test_resume_keeps_the_saved_model_settings(tmp_path, corpus_text):
    run = tmp_path / "r"
    train(tiny_config(run), corpus_text, "c", stop=lambda step: step == 5)
    train(tiny_config(run, **{"model.hidden": 64, "data.seq_len": 8}), corpus_text, "c", resume=True)
    ckpt = checkpoint.load(run / "last.pt")
    assert ckpt["shape"]["hidden"] == 32
    assert ckpt["config"]["data"]["seq_len"] == 16
    assert ckpt["step"] == TOTAL


def test_resume_errors(tmp_path, corpus_text):
    with pytest.raises(UsageError, match="nothing to resume"):
        train(tiny_config(tmp_path / "none"), corpus_text, "c", resume=True)
    run = tmp_path / "r"
    train(tiny_config(run), corpus_text, "c", stop=lambda step: step == 3)
    with pytest.raises(UsageError, match="corpus differs"):
        train(tiny_config(run), corpus_text + "more text\n", "c", resume=True)


def test_cli_max_steps_then_resume_equals_one_run(tmp_path, corpus_file, cli):
    """Through the CLI: --max-steps 20, then --resume --max-steps 40, against --max-steps 40.
    A long warmup keeps the LR schedule independent of --max-steps, so the two must match exactly."""
    flags = [*TINY_FLAGS, "--warmup-steps", "1000", "--eval-every", "10", "--dropout", "0.2", "--quiet"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    r = cli("train", corpus_file, "--out", straight, "--max-steps", "40", *flags)
    assert r.exit_code == 0, r.stderr
    r = cli("train", corpus_file, "--out", resumed, "--max-steps", "20", *flags)
    assert r.exit_code == 0, r.stderr
    r = cli("train", corpus_file, "--out", resumed, "--resume", "--max-steps", "40", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert checkpoint.load(resumed / "last.pt")["step"] == 40
    assert _history(straight) == _history(resumed)
    _assert_same_weights(straight / "last.pt", resumed / "last.pt")


def test_cli_resume_without_naming_the_corpus_again(tmp_path, corpus_file, cli):
    """The README's `charrnn train --resume --out checkpoints/corpus` (no corpus argument)
    continues a run that was trained on a file."""
    out = tmp_path / "run"
    r = cli("train", corpus_file, "--out", out, "--max-steps", "10", "--quiet", *TINY_FLAGS)
    assert r.exit_code == 0, r.stderr
    r = cli("train", "--resume", "--out", out, "--max-steps", "15", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert checkpoint.load(out / "last.pt")["step"] == 15


def test_cli_resume_without_a_run_is_one_error_line(tmp_path, corpus_file, cli):
    from conftest import assert_one_error_line

    r = cli("train", corpus_file, "--out", tmp_path / "none", "--resume", "--max-steps", "5")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "nothing to resume")


@pytest.mark.slow
def test_same_seed_same_model_with_default_threads_and_precision(tmp_path, corpus_file):
    """Real processes as a user runs them: all of the machine's threads, the default precision
    (bf16 on CPUs that have it). Two identical runs give the same model, and a run killed
    (SIGKILL) and resumed gives the one that ran through."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import subprocess_env

    env = {k: v for k, v in subprocess_env().items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    steps = 200
    args = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus_file),
        "--hidden",
        "64",
        "--layers",
        "2",
        "--dropout",
        "0.1",
        "--seq-len",
        "16",
        "--batch-size",
        "8",
        "--eval-every",
        "10",
        "--device",
        "cpu",
        "--max-steps",
        str(steps),
        "-q",
    ]
    for name in ("a", "b"):
        r = subprocess.run([*args, "--out", str(tmp_path / name)], capture_output=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr.decode()
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not ((killed / "metrics.jsonl").exists() and len((killed / "metrics.jsonl").read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert 0 < checkpoint.load(killed / "last.pt")["step"] < steps
    r = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", "--resume", "--out", str(killed), "-q"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr.decode()
    for other in ("b", "killed"):
        assert _history(tmp_path / other) == _history(tmp_path / "a"), other
        _assert_same_weights(tmp_path / other / "last.pt", tmp_path / "a" / "last.pt")
