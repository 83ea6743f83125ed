"""Shared fixtures: a small generated corpus, tiny run configs, one trained run per session,
and helpers to run the real CLI in-process (CliRunner) and as a subprocess.

Everything is sized to run in seconds on two CPU cores: hidden 32, tens of steps, a few KB of text.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# The machine is shared: one thread keeps the suite polite and the numbers deterministic.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The compiled kernels and packed weights of this session go to a cache of its own, not the user's.
_CACHE = tempfile.mkdtemp(prefix="charrnn-test-cache-")
os.environ["CHARRNN_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

WORDS = (
    "the quick brown fox jumps over lazy dog and then runs away from a cat "
    "while birds sing in old green trees near river bank"
).split()


def make_corpus(n_chars: int = 4000, seed: int = 0) -> str:
    """Sentences of a small vocabulary, one per line: structured enough to learn a little."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize()
        line += rng.choice([".", ".", ",", "!", "?"])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


def labelled_names(n: int, seed: int, longest: int = 7) -> str:
    """JSON lines of made-up names labelled by alphabet: "low" names use a-f, "up" names U-Z."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        kind = rng.choice(["low", "up"])
        name = "".join(rng.choice("abcdef" if kind == "low" else "UVWXYZ") for _ in range(rng.randint(3, longest)))
        lines.append(json.dumps({"name": name, "kind": kind}))
    return "\n".join(lines) + "\n"


def tiny_config(out: Path | str, **overrides):
    """A RunConfig for a tiny, deterministic CPU run. ``overrides``: 'section.field' -> value."""
    from charrnn.config import RunConfig

    cfg = RunConfig()
    cfg.model.cell = "lstm"
    cfg.model.layers = 2
    cfg.model.hidden = 32
    cfg.model.embed = 16
    cfg.model.dropout = 0.1
    cfg.data.seq_len = 16
    cfg.data.batch_size = 4
    cfg.data.batching = "stream"
    cfg.train.max_steps = 40
    cfg.train.eval_every = 10
    cfg.train.warmup_steps = 5
    cfg.train.lr = 1e-2
    cfg.train.device = "cpu"
    cfg.train.precision = "fp32"
    cfg.train.out = str(out)
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


# The tiny model's flags, for CLI runs (same sizes as tiny_config).
TINY_FLAGS = "--hidden 32 --layers 1 --embed 16 --seq-len 16 --batch-size 4 --device cpu --precision fp32 --lr 0.01 --warmup-steps 5".split()


# The settings of a tiny records model through the Python API (give its hidden size and limits).
TINY_RECORDS = dict(layers=1, embed=16, batch_size=16, device="cpu", precision="fp32", lr=0.02, warmup_steps=5)


@pytest.fixture(scope="session")
def corpus_text() -> str:
    return make_corpus(4000, seed=0)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory, corpus_text) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_bytes(corpus_text.encode("utf-8"))
    return p


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, corpus_text):
    """One char-level LSTM run trained through the public API, shared by the whole session.
    Returns (run folder, training summary)."""
    import charrnn

    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = tiny_config(out, **{"train.max_steps": 60, "train.eval_every": 20})
    return out, charrnn.train(text=corpus_text, config=cfg.to_dict()).to_dict()


@pytest.fixture(scope="session")
def run_dir(trained_run) -> Path:
    return trained_run[0]


@pytest.fixture(scope="session")
def loaded(run_dir):
    """(model in eval mode, tokenizer, checkpoint dict) of the session run."""
    from charrnn.checkpoint import load_model

    return load_model(run_dir)


@pytest.fixture(params=["native", "torch"])
def engine(request, monkeypatch) -> str:
    """Run a test once with the native kernels and once with the torch path they stand in for."""
    from charrnn.sampling.native import build as native

    if request.param == "torch":
        monkeypatch.setenv("CHARRNN_NATIVE", "0")
    elif native.lib() is None:
        pytest.skip("no C compiler here: the native kernels cannot be built")
    return request.param


@pytest.fixture
def cli():
    """Invoke the real Typer app in-process; stdout and stderr come back separately."""
    from typer.testing import CliRunner

    from charrnn.cli import app

    runner = CliRunner()

    def invoke(*args, input: str | bytes | None = None):
        import time

        import charrnn.cli

        charrnn.cli.T0 = time.monotonic()  # as a fresh process would: budgets count from the command's start
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONIOENCODING="utf-8", NO_COLOR="1")
    env.pop("PYTHONWARNINGS", None)
    return env


CHARRNN = [sys.executable, "-m", "charrnn"]


def run_charrnn(*args, input: bytes | None = None, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m charrnn ARGS` as a real process with real pipes; bytes in, bytes out."""
    return subprocess.run(
        CHARRNN + [str(a) for a in args],
        input=input,
        capture_output=True,
        cwd=cwd,
        env=subprocess_env(),
        timeout=timeout,
    )


def run_torchrun(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m charrnn ARGS` (a free port of its own); fails
    the test unless every rank exits 0, showing first what the ranks printed: a rank's own message
    (an abort's included) comes before torchrun's traceback, which fills the end of stderr."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "charrnn",
        *[str(a) for a in args],
    ]
    r = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, env=subprocess_env(), timeout=timeout)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, err if len(err) <= 5000 else err[:3500] + "\n[...]\n" + err[-1500:]
    return r


def assert_one_error_line(stderr: str, *needles: str) -> str:
    """The CLI's contract for a user mistake: exactly one line, 'charrnn: error: ...', no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    assert lines[0].startswith("charrnn: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------- tools outside Python: Chromium, Node

REQUIRED = os.environ.get("CHARRNN_BROWSER_TEST") == "required"
"""CI (.ci/run) installs Chromium and Node and sets CHARRNN_BROWSER_TEST=required: there a missing
one fails its tests; elsewhere they are skipped with the command that installs it."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need(what: str, fix: str):
    """Fail (in CI) or skip (elsewhere) a test that needs ``what``, naming the ``fix``."""
    if REQUIRED:
        pytest.fail(f"{what} is missing: {fix}")
    pytest.skip(f"{what} is missing: {fix}")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's), driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("Playwright", "pip install -e '.[test]'")
    if CHROMIUM is None:
        need("Chromium", "apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()
