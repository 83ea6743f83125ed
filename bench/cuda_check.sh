#!/usr/bin/env bash
# The CUDA path on one GPU, and the native CPU kernels on that machine's CPU, in one short run
# (about 3 minutes; no download: the default corpus).
#
#   bash bench/cuda_check.sh [OUT_DIR]
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${1:-${OUT:-/tmp/cuda-check}}"
mkdir -p "$out"
py=python3
step() { echo; echo "== $*"; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
lscpu | grep "Model name"
for f in avx512f avx512_bf16 amx_tile; do grep -qw "$f" /proc/cpuinfo && echo "cpu has $f" || echo "cpu lacks $f"; done
$py -c "import torch, typer, rich, yaml; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'typer', typer.__version__)"

step "train 60 s on the GPU (default corpus)"
$py -m charrnn train --device cuda --time-budget 60s --out "$out/run" --json --quiet > "$out/train.json"
echo "exit $?"; cat "$out/train.json"

step "sample on the GPU (torch step), fp32, then the native kernel on CPU with the same seed"
$py -m charrnn sample -c "$out/run" --device cuda --precision fp32 --seed 1 --length 400 --prompt "def " > "$out/gpu.txt"; echo "exit $?"
$py -m charrnn sample -c "$out/run" --device cpu --precision fp32 --seed 1 --length 400 --prompt "def " > "$out/cpu.txt"; echo "exit $?"
head -c 400 "$out/gpu.txt"; echo
cmp -s "$out/gpu.txt" "$out/cpu.txt" && echo "GPU and CPU texts identical" || echo "GPU and CPU texts differ (float rounding flips a draw)"
$py -m charrnn sample -c "$out/run" --device cuda --seed 2 -N 32 --json --length 200 | $py -c "import sys, json; r=[json.loads(l) for l in sys.stdin]; print(len(r), 'json samples, indices', sorted(x['index'] for x in r) == list(range(32)))"

step "score on the GPU and on CPU"
$py -m charrnn score charrnn/train.py -c "$out/run" --device cuda --json
$py -m charrnn score charrnn/train.py -c "$out/run" --device cpu --json

step "sampling speed on the GPU (torch step), chars/s"
$py - "$out/run" <<'PY'
import sys, time, torch
from charrnn.checkpoint import load_model
from charrnn.config import SampleConfig
from charrnn.sample import generate
model, tok, _ = load_model(sys.argv[1], "cuda")
print("model", model.shape)
for n, length in [(1, 2000), (32, 1000), (256, 500)]:
    cfg = SampleConfig(length=length, temperature=0.8, num_samples=n, seed=0)
    list(generate(model, [1], SampleConfig(length=20, num_samples=n, seed=0)))
    t0 = time.perf_counter()
    list(generate(model, [1], cfg))
    torch.cuda.synchronize()
    print(f"{n} streams: {n * length / (time.perf_counter() - t0):,.0f} chars/s")
PY

step "CPU kernels on this machine's CPU: the sampling and step tests"
$py -m pytest -q -p no:cacheprovider tests/test_native.py tests/test_sampling.py tests/test_distributions.py tests/test_step.py 2>&1 | tail -5
