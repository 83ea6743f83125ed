"""Sampling speed: charrnn's generation loop against the plain `nn.LSTM` step loop, in the same run.

Prints characters/s for one stream (2x512 and 1x256) with the default (native kernel, bf16
weights where the CPU has them) and with the torch path (CHARRNN_NATIVE=0), for 32 streams in
one batch, the fraction of the memory-bandwidth limit (weight bytes read per character /
bandwidth measured here, both from DRAM and for a buffer the size of the weights, which stays
in cache), `charrnn --help` start-up, and the time to the first sampled character of a real
`charrnn sample` process. Medians of several repeats; figures vary with the machine's load.

    python bench/sample_speed.py            # about two minutes
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import charrnn  # noqa: F401  (first: it sets the OpenMP wait policy before torch loads)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe, sampling_plan  # noqa: E402

from charrnn.config import SampleConfig
from charrnn.model.lm import RNNLM, ModelShape
from charrnn.sampling.engine import generate, step_dtype
from charrnn.sampling.native import build as native
from charrnn.sampling.torch_step import Stepper

V = 65


def median_rate(fn, n: int, repeats: int = 5) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def make_model(layers: int, hidden: int) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelShape(V, "lstm", layers, hidden, 64, 0.0)).eval()


def plain_loop(model: RNNLM):
    """The usual way: call nn.LSTM on one token at a time, state carried."""
    g = torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def run(n: int) -> None:
        x, state, out = torch.tensor([[1]]), None, []
        for _ in range(n):
            logits, _, state = model(x, state)
            x = torch.multinomial(torch.softmax(logits[:, -1] / 0.8, -1), 1, generator=g)
            out.append(int(x))

    return run


def charrnn_loop(model: RNNLM, streams: int = 1, use_native: bool = True):
    """charrnn's generate(): exact temperature sampling, stream 0 decoded and written out."""
    vocab = [chr(32 + i) for i in range(V)]
    sink = io.StringIO()

    def run(n: int) -> None:
        if not use_native:
            os.environ["CHARRNN_NATIVE"] = "0"
        try:
            cfg = SampleConfig(length=n, temperature=0.8, num_samples=streams, seed=0)
            for chunk in generate(model, [1], cfg):
                sink.write("".join([vocab[i] for i in chunk[0].tolist()]))
        finally:
            os.environ.pop("CHARRNN_NATIVE", None)

    return run


def weight_bytes(model: RNNLM) -> int:
    """Bytes the default one-stream step reads per token: every layer's matrices and biases (bf16
    matrices where sampling uses them), the head, one table row."""
    dtype = step_dtype("auto", model)
    s = Stepper(model, 1, dtype)
    lins = s.rec + [x for x in s.inp if x is not None] + [s.head]
    return (
        sum(t.numel() * t.element_size() for lin in lins for t in (lin.w, lin.b) if t is not None)
        + s.table[0].numel() * 4
    )


def bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes/s summing a tensor of about nbytes, median of repeats (all cores, as torch uses them)."""
    x = torch.ones(nbytes // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    return x.numel() * 4 / statistics.median(times)


def startup(tmp: str) -> dict[str, float]:
    """Median seconds of `charrnn --help`, and until the first sampled byte of `charrnn sample`:
    for a checkpoint whose pack is cached (by the training run, or an earlier sample) and for one
    never packed on this machine (torch loads it)."""
    helps = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "charrnn", "--help"], capture_output=True, check=True)
        helps.append(time.perf_counter() - t0)
    text_file = os.path.join(tmp, "t.txt")
    with open(text_file, "w") as f:
        f.write("".join(chr(32 + (i * 7) % V) for i in range(20000)))
    run = os.path.join(tmp, "run")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            text_file,
            "--max-steps",
            "1",
            "--layers",
            "2",
            "--hidden",
            "512",
            "--out",
            run,
            "--quiet",
        ],
        check=True,
    )
    firsts: dict[str, list[float]] = {"unpacked": [], "cached": []}
    for i in range(10):
        kind = "unpacked" if i % 2 == 0 else "cached"
        if kind == "unpacked":  # a new checkpoint file as far as the cache can tell
            os.utime(os.path.join(run, "best.pt"), ns=(time.time_ns(), time.time_ns()))
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "sample", "-c", run, "--length", "200", "--seed", "1"],
            stdout=subprocess.PIPE,
        )
        p.stdout.read(1)
        firsts[kind].append(time.perf_counter() - t0)
        p.communicate()
    return {
        "help_seconds": round(statistics.median(helps), 3),
        "first_char_seconds": round(statistics.median(firsts["cached"]), 3),
        "first_char_seconds_never_packed_checkpoint": round(statistics.median(firsts["unpacked"]), 3),
    }


def main() -> None:
    results = {"machine": describe(), "native_kernels": native.lib() is not None}
    bw = bandwidth(2**30, 5)
    results["dram_bandwidth_GBps"] = round(bw / 1e9, 1)
    for layers, hidden in [(2, 512), (1, 256)]:
        m = make_model(layers, hidden)
        name = f"{layers}x{hidden}"
        plain = median_rate(plain_loop(m), 300 if hidden >= 512 else 1000)
        ours = median_rate(charrnn_loop(m), 10000 if hidden >= 512 else 30000)
        torch_path = median_rate(charrnn_loop(m, use_native=False), 2000 if hidden >= 512 else 5000)
        wb = weight_bytes(m)
        cached_bw = bandwidth(wb, 200)
        results[name] = {
            "plan_one_stream": sampling_plan(m, 1),
            "plain_nn_lstm_chars_per_s": round(plain),
            "charrnn_chars_per_s": round(ours),
            "speedup": round(ours / plain, 1),
            "charrnn_torch_path_chars_per_s": round(torch_path),
            "weight_MB_per_char": round(wb / 1e6, 2),
            "fraction_of_dram_bandwidth_limit": round(ours / (bw / wb), 3),
            "weights_sized_read_GBps": round(cached_bw / 1e9, 1),
            "fraction_of_weights_sized_read_limit": round(ours / (cached_bw / wb), 3),
        }
        if (layers, hidden) == (2, 512):
            results[name]["plan_32_streams"] = sampling_plan(m, 32)
            results[name]["batch32_chars_per_s"] = round(32 * median_rate(charrnn_loop(m, 32), 1000, 3))
            results[name]["batch32_torch_path_chars_per_s"] = round(
                32 * median_rate(charrnn_loop(m, 32, False), 500, 3)
            )
    with tempfile.TemporaryDirectory() as tmp:
        results.update(startup(tmp))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
