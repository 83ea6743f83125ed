"""A run folder is never lost by accident, and --resume / --init-from say what they cannot change."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_FLAGS, assert_one_error_line

from charrnn import checkpoint


def _train(cli, corpus_file, out, *extra):
    return cli("train", corpus_file, "--out", out, "--quiet", "--json", *TINY_FLAGS, *extra)


def test_a_new_run_does_not_overwrite_an_old_one(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    assert _train(cli, corpus_file, out, "--max-steps", "4").exit_code == 0
    before = (out / "last.pt").read_bytes()
    r = _train(cli, corpus_file, out, "--max-steps", "4")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--resume", "--overwrite")
    assert (out / "last.pt").read_bytes() == before
    r = _train(cli, corpus_file, out, "--max-steps", "4", "--overwrite")
    assert r.exit_code == 0, r.stderr
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4, "metrics start over with the new run"


@pytest.mark.slow
def test_resume_refuses_changed_settings_but_takes_new_limits(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    assert _train(cli, corpus_file, out, "--time-budget", "3s").exit_code == 0
    r = cli("train", corpus_file, "--out", out, "--resume", "--hidden", "64", "--quiet")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--hidden")
    # The saved budget spent: a plain --resume is told to give a budget of its own.
    ckpt = checkpoint.load(out / "last.pt")
    checkpoint.save(dict(ckpt, train_seconds=3.0), out / "last.pt")
    r = cli("train", corpus_file, "--out", out, "--resume", "--quiet")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "used up", "--resume --time-budget")
    checkpoint.save(ckpt, out / "last.pt")
    done = ckpt["step"]
    # A new --max-steps replaces the saved time budget instead of being capped by it.
    r = cli("train", corpus_file, "--out", out, "--resume", "--max-steps", str(done + 7), "--quiet", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["steps"] == done + 7 and summary["resumed_from_step"] == done


def test_init_from_keeps_the_parent_shape(cli, tmp_path, corpus_file):
    parent = tmp_path / "parent"
    assert _train(cli, corpus_file, parent, "--max-steps", "3").exit_code == 0
    r = cli("train", corpus_file, "--out", tmp_path / "child", "--init-from", parent, "--cell", "gru", "--quiet")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--cell", "--init-from")


def test_divergence_is_one_line_not_a_traceback(cli, tmp_path, corpus_file):
    r = _train(
        cli,
        corpus_file,
        tmp_path / "run",
        "--max-steps",
        "40",
        "--eval-every",
        "8",
        "--lr",
        "10000",
        "--warmup-steps",
        "0",
        "--grad-clip",
        "0",
    )
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "diverged", "--lr")


def test_checkpoints_have_a_normal_file_mode(tmp_path, run_dir):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (run_dir / "best.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_second_writer_is_refused_while_the_first_holds_the_run(cli, tmp_path, corpus_file):
    """The run lock: a live writer's folder (here: its lock held by this test) refuses another
    train and a --resume in one line; once released, the folder is usable again."""
    import fcntl
    import os

    out = tmp_path / "run"
    assert _train(cli, corpus_file, out, "--max-steps", "4").exit_code == 0
    fd = os.open(out / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        before = (out / "last.pt").read_bytes()
        for extra in (["--overwrite"], ["--resume"]):
            r = (
                _train(cli, corpus_file, out, "--max-steps", "8", *extra)
                if extra == ["--overwrite"]
                else cli("train", corpus_file, "--out", out, "--resume", "--max-steps", "8", "--quiet")
            )
            assert r.exit_code == 2, r.stderr
            assert_one_error_line(r.stderr, "another charrnn train", "--out")
        assert (out / "last.pt").read_bytes() == before
    finally:
        os.close(fd)
    r = cli("train", corpus_file, "--out", out, "--resume", "--max-steps", "8", "--quiet", "--json")
    assert r.exit_code == 0, r.stderr


def test_stale_temporaries_are_removed_and_metrics_agree_with_last_pt_after_resume(cli, tmp_path, corpus_file):
    """A kill mid-save leaves a temporary file; a kill between the metrics line and last.pt leaves
    a line last.pt does not know. The next run in the folder removes the one and drops the other."""
    out = tmp_path / "run"
    assert _train(cli, corpus_file, out, "--max-steps", "8", "--eval-every", "4").exit_code == 0
    (out / ".last.pt.abc123.tmp").write_bytes(b"x" * 1000)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 12, "train_loss": 1.0}) + "\n")
    r = cli("train", corpus_file, "--out", out, "--resume", "--max-steps", "16", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    history = torch.load(out / "last.pt", weights_only=True)["history"]
    assert lines == history
    assert [l["step"] for l in lines] == [4, 8, 12, 16]


def test_a_folder_with_only_best_pt_is_not_overwritten(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    assert _train(cli, corpus_file, out, "--max-steps", "4").exit_code == 0
    (out / "last.pt").unlink()
    (out / "metrics.jsonl").unlink()
    before = (out / "best.pt").read_bytes()
    r = _train(cli, corpus_file, out, "--max-steps", "4")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--overwrite")
    assert (out / "best.pt").read_bytes() == before


def test_overwrite_with_a_setting_that_fails_keeps_the_old_run(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    assert _train(cli, corpus_file, out, "--max-steps", "4").exit_code == 0
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # Fails in setup (too many streams for the corpus), after the folder was claimed.
    r = _train(cli, corpus_file, out, "--max-steps", "4", "--overwrite", "--batch-size", "100000")
    assert r.exit_code == 2, r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


def test_out_naming_a_file_is_one_line(cli, tmp_path, corpus_file):
    f = tmp_path / "afile"
    f.write_text("x")
    r = _train(cli, corpus_file, f, "--max-steps", "4")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "is a file")
