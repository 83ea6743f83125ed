"""Real text, real failures (issue 9): tiny temperatures, text with unseen characters, ASCII and
full stdouts, advice that works, a full disk during a save."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import charrnn
from charrnn.config import SampleConfig
from charrnn.sampling.decode import choose
from charrnn.sampling.engine import generate
from tests.conftest import CHARRNN, assert_one_error_line, run_charrnn, subprocess_env

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


def test_tiny_temperature_on_the_cli_prints_the_greedy_text(run_dir):
    greedy = run_charrnn("sample", "-c", run_dir, "--greedy", "-n", "80", "--prompt", "The ")
    assert greedy.returncode == 0
    for t in ("1e-38", "1e-39"):
        r = run_charrnn("sample", "-c", run_dir, "--temp", t, "-n", "80", "--prompt", "The ", "--seed", "3")
        assert r.returncode == 0 and r.stdout == greedy.stdout, (t, r.stdout[:80])
