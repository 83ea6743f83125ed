"""The native LSTM (one stream and batches) and the build that provides it: exact in fp32, close in bf16, the
same tokens as the torch path for the same seed, and a quiet fallback where nothing can be built."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import CHARRNN, TINY_FLAGS, run_charrnn, subprocess_env
from test_step import ATOL, V, make_model

from charrnn.config import SampleConfig
from charrnn.sampling.decode import uniform
from charrnn.sampling.engine import generate
from charrnn.sampling.native import build as native

pytestmark = pytest.mark.skipif(native.lib() is None, reason="no C compiler here: the native kernels cannot be built")


def test_uniform_numbers_agree_between_c_and_python():
    lib = native.lib()
    for seed, index, step in [(0, 0, 0), (1, 2, 3), (2**63 + 5, 31, 10**12), (2**64 - 1, 2**40, 7)]:
        u = uniform(seed, index, step)
        assert lib.charrnn_uniform(seed, index, step) == u
        assert 0 <= u < 1


# Shapes that are not multiples of the kernel's blocks (16 rows, 8 columns) exercise the padding.
SHAPES = [(1, 32), (2, 37), (3, 20), (2, 4)]


@pytest.mark.parametrize("layers, hidden", SHAPES)
def test_native_step_equals_nn_lstm_forward(layers, hidden):
    from charrnn.sampling.native.pack import NativeLSTM

    model = make_model("lstm", layers, hidden=hidden, seed=layers)
    ids = torch.randint(V, (1, 30), generator=torch.Generator().manual_seed(hidden))
    with torch.no_grad():
        ref, _, (h, c) = model(ids)
    net = NativeLSTM(model)
    last = net.prefill(ids[:, :7])
    torch.testing.assert_close(last[0], ref[0, 6], atol=ATOL, rtol=0)
    for t in range(7, 30):
        torch.testing.assert_close(
            net.step(ids[:, t])[0], ref[0, t], atol=ATOL, rtol=0, msg=lambda m, t=t: f"t={t}: {m}"
        )
    for l in range(layers):
        torch.testing.assert_close(net.h(l), h[l], atol=ATOL, rtol=0)
        torch.testing.assert_close(net.c(l), c[l], atol=ATOL, rtol=0)


@pytest.mark.parametrize("layers, hidden", SHAPES)
def test_native_bf16_step_stays_close(layers, hidden):
    from charrnn.sampling.native.pack import NativeLSTM

    model = make_model("lstm", layers, hidden=hidden, seed=layers)
    ids = torch.randint(V, (1, 30), generator=torch.Generator().manual_seed(hidden))
    with torch.no_grad():
        ref, _, _ = model(ids)
    net = NativeLSTM(model, torch.bfloat16)
    net.prefill(ids[:, :1])
    for t in range(1, 30):
        torch.testing.assert_close(net.step(ids[:, t])[0], ref[0, t], atol=0.05, rtol=0)


def _batches_native(dtype: torch.dtype) -> bool:
    from charrnn.sampling.native.kernel import Kernel

    return Kernel.supports(native.lib(), {"bf16": dtype == torch.bfloat16}, 2)


# Stream counts and shapes off the kernel's tiles (8 streams x 2 row blocks, 8 row blocks for one
# stream, 16-row blocks, 32-column pairs) exercise every tail.
BATCHES = [(1, 32, 3), (2, 37, 17), (3, 20, 32), (2, 4, 9), (1, 136, 2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layers, hidden, streams", BATCHES)
def test_native_batch_rows_equal_single_streams(layers, hidden, streams, dtype):
    """Each row of a batch is the lone stream fed the same tokens: bit for bit where both use the
    register-tiled products (one sum per row and stream, in column order); to bf16 rounding on
    AMX tiles. The batch also stays close to nn.LSTM."""
    from charrnn.sampling.native.pack import NativeLSTM

    if not _batches_native(dtype):
        pytest.skip(f"several {dtype} streams use torch's products on this CPU")
    model = make_model("lstm", layers, hidden=hidden, seed=layers)
    ids = torch.randint(V, (streams, 30), generator=torch.Generator().manual_seed(hidden))
    with torch.no_grad():
        ref, _, _ = model(ids)
    batch = NativeLSTM(model, dtype, streams)
    singles = [NativeLSTM(model, dtype, packed=batch.packed) for _ in (0, streams - 1)]
    batch.prefill(ids[:, :5])
    for one, row in zip(singles, (0, streams - 1)):
        one.prefill(ids[row : row + 1, :5])
    exact = not (dtype == torch.bfloat16 and native.lib().amx)
    for t in range(5, 30):
        got = batch.step(ids[:, t]).clone()
        torch.testing.assert_close(got, ref[:, t], atol=ATOL if dtype == torch.float32 else 0.05, rtol=0)
        for one, row in zip(singles, (0, streams - 1)):
            alone = one.step(ids[row : row + 1, t])[0]
            if exact:
                assert torch.equal(alone, got[row]), f"t={t} row={row}"
            else:
                torch.testing.assert_close(alone, got[row], atol=1e-4, rtol=0)
    for l in range(layers):
        if exact:
            assert torch.equal(batch.h(l)[-1], singles[1].h(l)[0]) and torch.equal(batch.c(l)[-1], singles[1].c(l)[0])


def _tokens(model, prompt, **kw) -> torch.Tensor:
    cfg = SampleConfig(**{"length": 200, "temperature": 1.0, "seed": 42, "precision": "fp32", **kw})
    return torch.cat(list(generate(model, prompt, cfg)), dim=1)


def test_native_and_torch_paths_draw_the_same_tokens(loaded, monkeypatch):
    model, tok, _ = loaded
    prompt = tok.encode("The ")
    for kw in [{}, {"top_k": 5}, {"top_p": 0.8, "temperature": 0.7}]:
        fast = _tokens(model, prompt, **kw)
        monkeypatch.setenv("CHARRNN_NATIVE", "0")
        slow = _tokens(model, prompt, **kw)
        monkeypatch.delenv("CHARRNN_NATIVE")
        assert fast.tolist() == slow.tolist(), kw


def test_a_sample_does_not_depend_on_how_many_are_drawn(loaded):
    """Stream i's random numbers depend on (seed, i, step) only: sample 0 of three is the lone sample."""
    model, tok, _ = loaded
    prompt = tok.encode("A")
    one = _tokens(model, prompt)
    three = _tokens(model, prompt, num_samples=3)
    assert three[0].tolist() == one[0].tolist()
    assert three[1].tolist() != three[0].tolist()


@pytest.mark.slow
def test_without_a_compiler_sampling_falls_back_to_the_same_text(run_dir, tmp_path):
    args = ["sample", "-c", run_dir, "--length", "300", "--seed", "9", "--precision", "fp32"]
    fast = run_charrnn(*args)
    env = {**subprocess_env(), "CC": str(tmp_path / "no-such-compiler"), "CHARRNN_CACHE": str(tmp_path / "cache")}
    slow = subprocess.run(CHARRNN + [str(a) for a in args], capture_output=True, env=env, timeout=60)
    assert fast.returncode == slow.returncode == 0, slow.stderr
    assert slow.stderr == b""
    assert not any((tmp_path / "cache").glob("*.so"))
    assert slow.stdout == fast.stdout


TORCH_CHECK = (
    "import sys, runpy\n"
    "sys.argv = ['charrnn'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('charrnn', run_name='__main__')\n"
    "finally:\n"
    "    sys.stderr.write('torch imported: %s\\n' % ('torch' in sys.modules))\n"
)


@pytest.mark.slow
def test_a_second_run_reads_the_cached_pack_without_torch(run_dir, tmp_path):
    """The first run packs the weights with torch and caches them; the next run of the same
    checkpoint starts from the pack, never imports torch, and writes the same text."""
    env = {**subprocess_env(), "CHARRNN_CACHE": str(tmp_path / "cache")}
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes((run_dir / "best.pt").read_bytes())
    outs = []
    for args in (["-N", "1"], ["-N", "1"], ["-N", "3"], ["-N", "3"]):
        r = subprocess.run(
            [sys.executable, "-c", TORCH_CHECK, "sample", "-c", str(ckpt), "--length", "300", "--seed", "5", *args],
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        outs.append((r.stdout, r.stderr.decode().strip()))
    from charrnn.sampling.native.cache import load_pack
    from charrnn.sampling.native.kernel import Kernel

    (pack,) = (tmp_path / "cache" / "packs").glob("*.pack")
    batches_native = Kernel.supports(native.lib(), load_pack(pack)[0], 3)  # else -N 3 packs anew, with torch
    assert [o[1] for o in outs] == [
        f"torch imported: {x}" for x in (True, False, not batches_native, not batches_native)
    ]
    assert outs[0][0] == outs[1][0] and outs[2][0] == outs[3][0]
    assert len(list((tmp_path / "cache" / "packs").glob("*.pack"))) == 1
    # A changed checkpoint file is a different pack: never stale weights.
    ckpt.write_bytes((run_dir / "last.pt").read_bytes())
    r = subprocess.run(
        [sys.executable, "-c", TORCH_CHECK, "sample", "-c", str(ckpt), "--length", "300", "--seed", "5"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0 and r.stderr.decode().strip() == "torch imported: True"


@pytest.mark.slow
def test_sampling_right_after_training_needs_no_torch(tmp_path, corpus_file):
    """Training on CPU caches the pack of its final best.pt: the first sample is already fast."""
    env = {**subprocess_env(), "CHARRNN_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    args = [
        "train",
        str(corpus_file),
        "--max-steps",
        "30",
        "--eval-every",
        "1000",
        "--out",
        str(run),
        "--quiet",
        *TINY_FLAGS,
    ]
    r = subprocess.run(CHARRNN + args, capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-c", TORCH_CHECK, "sample", "-c", str(run), "--length", "50", "--seed", "1"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().strip() == "torch imported: False"


def test_both_paths_break_top_p_ties_the_same_way(monkeypatch):
    """Equal logits at the nucleus boundary: the lower index is kept first, on either path."""
    from charrnn.sampling.decode import choose

    g = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 4, (2560, 12), generator=g).float()  # many ties
    fast = choose(logits, 1.0, top_k=None, top_p=0.6, seed=3)
    monkeypatch.setenv("CHARRNN_NATIVE", "0")
    slow = choose(logits, 1.0, top_k=None, top_p=0.6, seed=3)
    assert fast.tolist() == slow.tolist()


def test_all_tokens_banned_still_gives_a_valid_id(engine):
    from charrnn.sampling.decode import Chooser

    cfg = SampleConfig(temperature=1.0, seed=0)
    ids = Chooser(cfg, banned=list(range(V)))(torch.randn(3, V))
    assert ids.shape == (3,) and all(0 <= i < V for i in ids.tolist())


@pytest.mark.parametrize("streams", [1, 3])
def test_tokens_do_not_depend_on_the_thread_count_or_its_trials(streams):
    """The kernel's thread tuner splits chunks into trials of 1 and 2 threads: same tokens as one thread."""
    from charrnn.runtime.threads import ThreadTuner
    from charrnn.sampling.native.abi import make_sampler
    from charrnn.sampling.native.pack import NativeLSTM

    dtype = torch.bfloat16 if streams == 1 or _batches_native(torch.bfloat16) else torch.float32
    if not _batches_native(dtype) and streams > 1:
        pytest.skip("several streams use torch's products on this CPU")
    model = make_model("lstm", 2, hidden=40, seed=5)
    runs = []
    for tuner in (ThreadTuner(1), ThreadTuner(2, recheck=0.0)):
        net = NativeLSTM(model, dtype, streams)
        net.kernel.tuner = tuner
        sampler, _keep = make_sampler(1.0, None, None, 3, [])
        net.kernel.prefill([[1, 2, 3]] * streams)
        runs.append([net.kernel.generate(sampler, n) for n in (1, 7, 64, 200)])
    assert runs[0] == runs[1]
    assert set(tuner.cost) == {1, 2}
