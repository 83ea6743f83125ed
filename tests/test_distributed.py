"""Several processes through PyTorch's own torchrun and DistributedDataParallel (gloo on CPU)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import TINY_FLAGS, run_torchrun

pytestmark = pytest.mark.slow  # real processes: see `pytest -m 'not slow'` for the quick loop


def test_torchrun_two_processes_train_one_model(tmp_path, corpus_file):
    out = tmp_path / "ddp"
    r = run_torchrun(
        "train",
        corpus_file,
        "--max-steps",
        12,
        "--eval-every",
        6,
        "--out",
        out,
        "--json",
        "--quiet",
        *TINY_FLAGS,
        timeout=120,
    )
    lines = [l for l in r.stdout.decode().splitlines() if l.startswith("{")]
    assert len(lines) == 1, "only rank 0 prints the summary"
    summary = json.loads(lines[0])
    assert summary["steps"] == 12
    # Each rank reads its own streams, so a step covers both ranks' batches.
    assert summary["tokens"] == 12 * 2 * 4 * 16
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 12
    assert not any(k.startswith("module.") for k in ckpt["model"]), "the unwrapped model is saved"
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [6, 12]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return run_torchrun("train", *args)


def test_torchrun_resume_is_exact_for_every_rank(tmp_path, corpus_file):
    """N steps, then --resume for N more, in new processes: the same weights as 2N steps at once.
    Each rank carries its own streams' hidden state and dropout RNG, so each must get its own back."""
    constant_lr = tmp_path / "constant_lr.yaml"  # so that the schedule does not depend on --max-steps
    constant_lr.write_text("train:\n  min_lr_ratio: 1.0\n")
    common = [
        str(corpus_file),
        *TINY_FLAGS,
        "--warmup-steps",
        "0",
        "--dropout",
        "0.3",
        "--eval-every",
        "6",
        "--config",
        str(constant_lr),
        "--quiet",
    ]
    _torchrun(*common, "--max-steps", "12", "--out", str(tmp_path / "straight"))
    _torchrun(*common, "--max-steps", "6", "--out", str(tmp_path / "resumed"))
    _torchrun("--resume", "--max-steps", "12", "--out", str(tmp_path / "resumed"), "--quiet")
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    assert len(b["ranks"]) == 2
    assert not torch.equal(b["ranks"][0]["state"][0], b["ranks"][1]["state"][0]), "the ranks carry different streams"
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
