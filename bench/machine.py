"""What the benchmarks ran on: the CPU model, the features charrnn's choices depend on, the load.

Every bench script prints ``describe()`` with its figures, so that RESULTS.md can keep a row per
CPU seen, and a figure measured on a busy machine says so.
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The model name, with the family and model numbers (a virtual machine may hide the name:
    "AMD EPYC", family 26 being Zen 5)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return name


def cpu_features() -> list[str]:
    """The features that pick charrnn's kernels and precision: AMX, AVX-512 bf16, AVX-512, AVX2."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
    except OSError:
        flags = []
    return [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]


def describe() -> dict:
    """CPU model, features, usable CPUs and the load average when the script started."""
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "features": cpu_features(), "cpus": cpus, "load_average_1_5_15min": load}


def sampling_plan(model, streams: int) -> str:
    """How charrnn samples ``streams`` streams of ``model`` here by default (sampling/engine.py)."""
    from charrnn.sampling.engine import Engine, step_dtype
    from charrnn.sampling.native import build

    dtype = "bf16" if "bfloat16" in str(step_dtype("auto", model)) else "fp32"
    if Engine(None, model=model).kernel(streams) is None:
        return f"torch products, {dtype} weights"
    lib = build.lib()
    if streams > 1 and dtype == "bf16" and lib.amx:
        how = "AMX tiles"
    elif dtype == "bf16" and lib.bf16_dot:
        how = "AVX512-BF16 dot products, register-tiled"
    else:
        how = "fp32 multiply-adds, register-tiled" if lib.fp32_vector else "plain C loops"
    return f"native kernel, {dtype} weights, {how}"
