"""Several processes through PyTorch's own torchrun and DistributedDataParallel (gloo on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from conftest import TINY_FLAGS, subprocess_env


def test_torchrun_two_processes_train_one_model(tmp_path, corpus_file):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "charrnn", "train", str(corpus_file), "--max-steps", "12", "--eval-every", "6",
           "--out", str(out), "--json", "--quiet", *TINY_FLAGS]
    r = subprocess.run(cmd, capture_output=True, env=subprocess_env(), timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
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
