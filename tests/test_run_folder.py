"""A run folder is never lost by accident, and --resume / --init-from say what they cannot change."""

from __future__ import annotations

import json

import torch

from conftest import TINY_FLAGS, assert_one_error_line


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


def test_resume_refuses_changed_settings_but_takes_new_limits(cli, tmp_path, corpus_file):
    out = tmp_path / "run"
    assert _train(cli, corpus_file, out, "--time-budget", "3s").exit_code == 0
    r = cli("train", corpus_file, "--out", out, "--resume", "--hidden", "64", "--quiet")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--hidden")
    done = torch.load(out / "last.pt", weights_only=True)["step"]
    # A new --max-steps replaces the saved time budget instead of being capped by it.
    r = cli("train", corpus_file, "--out", out, "--resume", "--max-steps", str(done + 7), "--quiet", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == done + 7


def test_init_from_keeps_the_parent_shape(cli, tmp_path, corpus_file):
    parent = tmp_path / "parent"
    assert _train(cli, corpus_file, parent, "--max-steps", "3").exit_code == 0
    r = cli("train", corpus_file, "--out", tmp_path / "child", "--init-from", parent, "--cell", "gru", "--quiet")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--cell", "--init-from")


def test_divergence_is_one_line_not_a_traceback(cli, tmp_path, corpus_file):
    r = _train(cli, corpus_file, tmp_path / "run", "--max-steps", "40", "--eval-every", "8", "--lr", "10000",
               "--warmup-steps", "0", "--grad-clip", "0")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "diverged", "--lr")


def test_checkpoints_have_a_normal_file_mode(tmp_path, run_dir):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (run_dir / "best.pt").stat().st_mode & 0o777 == 0o666 & ~umask
