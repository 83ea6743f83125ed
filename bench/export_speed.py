"""The web export beside the native kernel, in one run: speed, size, first character, fidelity.

    python bench/export_speed.py checkpoints/tinyshakespeare checkpoints/ts-2x512

For each checkpoint (a run folder or .pt file; the first should be the 90-second default model)
it prints, as JSON:
- ``c_kernel``: characters/s of one stream as `charrnn sample` samples it (charrnn.load().sample,
  which bench/sample_speed.py measures the same way): the default precision (bf16 weights where
  the CPU has bf16 dot products) and fp32;
- ``node``: charrnn.js in Node, WebAssembly SIMD product and plain JavaScript, from the fp16
  export (weights widened to float32 on load), characters/s after loading, and the load time;
- ``chromium``: the exported page opened from disk in headless Chromium (the engine in its Web
  Worker, as the page runs it) characters/s, and the first character: navigation start to the
  first output text of the page's own first sample, median of 5 openings;
- ``folder_bytes``: the fp16 export's folder, all files;
- ``kl_fp16``: KL(p_fp32 || p_fp16) of the next-token distributions, nats/token, mean and max over
  the first 20,000 tokens of the run's validation split (its corpus' last val_fraction), the
  weights rounded to fp16 as the export stores them and computed in float32 as charrnn.js does;
- ``onnx_max_abs_logit_diff``: onnxruntime (fp32 export) against torch over 200 tokens of that text.
Then the random numbers: nanoseconds per call of charrnn.js's uniform() in 32-bit halves and in
BigInt. Rates are medians of 3 (the page's of 3 too); the machine's load average is printed
before and after, as these figures move with what else runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import charrnn  # noqa: F401  (first: it sets the OpenMP wait policy before torch loads)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe  # noqa: E402

from charrnn.checkpoint import load, load_model  # noqa: E402

CHROMIUM = "/usr/bin/chromium"

NODE_SPEED = r"""
const charrnn = require(process.argv[2] + "/charrnn.js");
(async () => {
  const n = Number(process.argv[3]), out = {};
  for (const wasm of [true, false]) {
    const len = wasm ? n : Math.ceil(n / 6);
    let t0 = performance.now();
    const m = await charrnn.load(process.argv[2] + "/weights.js", { wasm });
    const loadMs = performance.now() - t0;
    await m.sample({ length: 200, seed: "99" });
    const rates = [];
    for (let i = 0; i < 3; i++) {
      t0 = performance.now();
      await m.sample({ length: len, seed: String(i) });
      rates.push(len / ((performance.now() - t0) / 1000));
    }
    rates.sort((a, b) => a - b);
    out[m.info.kernel] = { chars_per_s: Math.round(rates[1]), load_ms: Math.round(loadMs) };
  }
  // The random numbers: charrnn.js's 32-bit halves (the stream's part kept between steps), against
  // BigInt, whole and with the stream's part kept too (one mix per step, as the halves).
  const E = charrnn._engine, calls = 1000000, M = (1n << 64n) - 1n;
  const mix = (z) => {
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    return z ^ (z >> 31n);
  };
  const prefix = mix(mix(12345n + 0x9e3779b97f4a7c15n) ^ 0n);
  const time = (f) => {
    let s = 0;
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) s += f(i);
    return [(performance.now() - t0) * 1e6 / calls, s];
  };
  const [halves, a] = time((i) => E.uniform(0, 12345, 0, i));
  const [big, b] = time((i) => E.uniformBig(12345n, 0, i));
  const [bigStep, c] = time((i) => Number(mix((prefix + BigInt(i) * 0x9e3779b97f4a7c15n) & M) >> 11n) * 2 ** -53);
  if (a !== b || b !== c) throw new Error("the generators disagree");
  out.uniform_ns = { halves: Math.round(halves), bigint: Math.round(big), bigint_stream_kept: Math.round(bigStep) };
  process.stdout.write(JSON.stringify(out));
})();
"""

FIRST_TEXT = """
new MutationObserver((_, obs) => {
  const o = document.getElementById('output');
  if (o && o.textContent.length && window.__first === undefined) { window.__first = performance.now(); obs.disconnect(); }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def c_kernel(path: Path, n: int) -> dict[str, int]:
    out = {}
    for precision in ("auto", "fp32"):
        model = charrnn.load(path, precision=precision)
        model.sample("", 200, seed=99)
        rates = []
        for i in range(3):
            t0 = time.perf_counter()
            model.sample("", n, 0.8, seed=i)
            rates.append(n / (time.perf_counter() - t0))
        out[precision] = round(statistics.median(rates))
    return out


def chromium(folder: Path, n: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        firsts = []
        for _ in range(5):
            page = browser.new_page()
            page.add_init_script(FIRST_TEXT)
            page.goto((folder / "index.html").as_uri())
            page.wait_for_function("window.__first !== undefined", timeout=60_000)
            firsts.append(page.evaluate("window.__first"))
            page.wait_for_function("document.getElementById('status').dataset.state === 'done'", timeout=120_000)
            page.close()
        page = browser.new_page()
        page.goto((folder / "index.html").as_uri())
        page.wait_for_function("document.getElementById('status').dataset.state === 'done'", timeout=120_000)
        rates = page.evaluate(
            """async (n) => {
            const m = await charrnn.load();            // in a Web Worker, as the page runs it
            await m.sample({ length: 200, seed: "99" });
            const rates = [];
            for (let i = 0; i < 3; i++) {
              const t0 = performance.now();
              await m.sample({ length: n, seed: String(i) });
              rates.push(n / ((performance.now() - t0) / 1000));
            }
            m.close();
            return rates.sort((a, b) => a - b);
        }""",
            n,
        )
        version = browser.version
        browser.close()
    return {
        "version": version,
        "chars_per_s": round(rates[1]),
        "first_char_ms": round(statistics.median(firsts), 1),
        "first_char_ms_all": [round(f, 1) for f in firsts],
    }


def validation_ids(path: Path, n: int) -> torch.Tensor:
    ckpt = load(path)
    data = ckpt["config"]["data"]
    text = Path(data["corpus"]).read_text(encoding="utf-8")
    _, tok, _ = load_model(path)
    val = text[int(len(text) * (1 - data["val_fraction"])) :]
    return torch.tensor(tok.encode(val[: 2 * n], unknown="skip")[:n])


@torch.no_grad()
def kl_fp16(path: Path, ids: torch.Tensor) -> dict[str, float]:
    model, _, _ = load_model(path)
    logp32 = torch.log_softmax(model(ids[None])[0][0].double(), -1)
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    logp16 = torch.log_softmax(model(ids[None])[0][0].double(), -1)
    kl = (logp32.exp() * (logp32 - logp16)).sum(-1)
    return {"mean_nats": float(kl.mean()), "max_nats": float(kl.max()), "tokens": int(ids.numel())}


@torch.no_grad()
def onnx_diff(path: Path, ids: torch.Tensor, tmp: Path) -> float:
    import onnxruntime as ort

    model, _, _ = load_model(path)
    charrnn.load(path).export(tmp, "onnx", "fp32")
    spec = json.loads((tmp / "tokenizer.json").read_text())
    names, L, H = spec["state"]["inputs"][1:], spec["state"]["layers"], spec["state"]["hidden"]
    sess = ort.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
    want = model(ids[None, :200])[0][0].numpy()
    state, worst = {k: np.zeros((L, 1, H), np.float32) for k in names}, 0.0
    for t in range(200):
        out = sess.run(None, {"tokens": ids[None, t : t + 1].numpy(), **state})
        state = dict(zip(names, out[1:]))
        worst = max(worst, float(np.abs(out[0][0] - want[t]).max()))
    return worst


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or [Path("checkpoints/tinyshakespeare")]
    results: dict = {"machine": describe()}
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            info = charrnn.load(path).info
            name = f"{info['cell']} {info['layers']}x{info['hidden']} ({path})"
            folder = Path(tmp) / f"web-{len(results)}"
            charrnn.load(path).export(folder, "web", "fp16")
            big = info["hidden"] * info["layers"] >= 1024
            n = 5000 if big else 20000
            script = Path(tmp) / "speed.js"
            script.write_text(NODE_SPEED)
            r = subprocess.run(["node", str(script), str(folder), str(n)], capture_output=True, text=True, check=True)
            node = json.loads(r.stdout)
            uniform_ns = node.pop("uniform_ns")
            ids = validation_ids(path, 20000)
            results[name] = {
                "parameters": info["parameters"],
                "c_kernel_chars_per_s": c_kernel(path, n),
                "node": node,
                "chromium": chromium(folder, n),
                "folder_bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
                "kl_fp16": kl_fp16(path, ids),
                "onnx_max_abs_logit_diff": onnx_diff(path, ids, Path(tmp) / f"onnx-{len(results)}"),
            }
            results["uniform_ns_per_call_node"] = uniform_ns
    results["node_version"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
