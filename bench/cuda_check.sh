#!/usr/bin/env bash
# The CUDA path on one GPU, and the native CPU kernels on that machine's CPU, in one short run
# (about 4 minutes; no download: the default corpus).
#
#   bash bench/cuda_check.sh [OUT_DIR]
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${1:-${OUT:-/tmp/cuda-check}}"
mkdir -p "$out"
py=python3
dev="${DEVICE:-cuda}"  # DEVICE=cpu runs the same steps on a machine without a GPU (a dry run)
step() { echo; echo "== $*"; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
lscpu | grep "Model name"
for f in avx512f avx512_bf16 amx_tile; do grep -qw "$f" /proc/cpuinfo && echo "cpu has $f" || echo "cpu lacks $f"; done
$py -c "import torch, typer, rich, yaml; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'typer', typer.__version__)"

step "train 60 s on the GPU (default corpus): the probe times two-layer widths and picks the plan"
$py -m charrnn train --device "$dev" --time-budget 60s --out "$out/run" --json > "$out/train.json" 2> "$out/train.err"
echo "exit $?"; grep -E "measured plan|auto settings" "$out/train.err"; tail -n 1 "$out/train.json"

step "the same 60 s with the corpus-sized default the probe replaced (two layers, 512 units here)"
$py -m charrnn train --device "$dev" --time-budget 60s --layers 2 --hidden 512 --out "$out/table" --json --quiet > "$out/table.json"
echo "exit $?"; tail -n 1 "$out/table.json"

step "sample on the GPU (torch step), fp32, then the native kernel on CPU with the same seed"
$py -m charrnn sample -c "$out/run" --device "$dev" --precision fp32 --seed 1 --length 400 --prompt "def " > "$out/gpu.txt"; echo "exit $?"
$py -m charrnn sample -c "$out/run" --device cpu --precision fp32 --seed 1 --length 400 --prompt "def " > "$out/cpu.txt"; echo "exit $?"
head -c 400 "$out/gpu.txt"; echo
cmp -s "$out/gpu.txt" "$out/cpu.txt" && echo "GPU and CPU texts identical" || echo "GPU and CPU texts differ (float rounding flips a draw)"
$py -m charrnn sample -c "$out/run" --device "$dev" --seed 2 -N 32 --json --length 200 | $py -c "import sys, json; r=[json.loads(l) for l in sys.stdin]; print(len(r), 'json samples, indices', sorted(x['index'] for x in r) == list(range(32)))"

step "score on the GPU and on CPU"
$py -m charrnn score charrnn/cli.py -c "$out/run" --device "$dev" --json
$py -m charrnn score charrnn/cli.py -c "$out/run" --device cpu --json

step "sampling speed on the GPU (torch step), chars/s"
$py - "$out/run" "$dev" <<'PY'
import sys, time, torch
import charrnn
model = charrnn.load(sys.argv[1], device=sys.argv[2])
print("model", {k: model.info[k] for k in ("cell", "layers", "hidden", "parameters")})
for n, length in [(1, 2000), (32, 1000), (256, 500)]:
    model.samples(n, length=20, seed=0)  # warm-up
    t0 = time.perf_counter()
    model.samples(n, length=length, temperature=0.8, seed=0)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    print(f"{n} streams: {n * length / (time.perf_counter() - t0):,.0f} chars/s")
PY

step "CPU kernels on this machine's CPU: the sampling and step tests"
$py -m pytest -q -p no:cacheprovider tests/test_native.py tests/test_sampling.py tests/test_distributions.py tests/test_step.py 2>&1 | tail -5
