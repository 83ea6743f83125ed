"""Building and loading kernels.c: compiled once per machine on first use, loaded with ctypes.

Sampling one token at a time is bound by memory bandwidth and per-call overhead, and a compiled
step (AVX-512 bf16 dot products, both cores, no Python per token) is several times faster than
what torch ops can do from Python. It needs a C compiler (``cc``, or ``$CC``, which may carry arguments) when first used;
without one, or with ``CHARRNN_NATIVE=0``, ``lib()`` is None and charrnn uses its torch path.
The library is cached under ``$CHARRNN_CACHE`` (default ``~/.cache/charrnn``), keyed by the
source, the compiler and the CPU, and written to a temporary file and renamed, so concurrent
first runs are safe. A failed build is remembered (a ``.failed`` file beside it): delete it, or
the cache folder, to try again.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from charrnn.sampling.native.abi import declare

SOURCE = Path(__file__).with_name("kernels.c")
PACKAGE = Path(__file__).parents[2]  # charrnn/
_FLAG_SETS = [
    ["-march=native", "-mprefer-vector-width=512", "-fopenmp"],
    ["-march=native", "-fopenmp"],
    ["-march=native"],
    [],
]
_COMMON = ["-O3", "-fno-trapping-math", "-shared", "-fPIC"]
_loaded: ctypes.CDLL | None = None
_tried = False

def cache_dir() -> Path:
    if os.environ.get("CHARRNN_CACHE"):
        return Path(os.environ["CHARRNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charrnn"


@functools.cache
def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [l for l in f.read().splitlines() if l.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compile(cc: list[str], out: Path) -> bool | None:
    """True when built; False when the compiler refused every flag set; None when it could not
    be run or timed out (worth another try next time)."""
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(prefix=".kernels.", suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            r = subprocess.run([*cc, *_COMMON, *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, timeout=120)
            if r.returncode == 0:
                os.replace(tmp, out)
                return True
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return False


@functools.cache
def code_signature() -> str:
    """What packed weights depend on besides the checkpoint: charrnn's code (the packing, the
    model and tokenizer it reads, the kernels) and the CPU."""
    key = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")) + [SOURCE]:
        key.update(path.read_bytes())
    key.update(_cpu_signature().encode())
    return key.hexdigest()


def _build() -> Path | None:
    if sys.platform == "win32":
        return None
    cc = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or shutil.which("clang") or ""]
    if not cc[0]:
        return None
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join(cc).encode())
    key.update(_cpu_signature().encode())
    key.update(platform.machine().encode())
    path = cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    failed = path.with_suffix(".failed")  # a compiler that cannot build it is not asked again
    if path.exists():
        return path
    if failed.exists():
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    built = _compile(cc, path)
    if built:
        return path
    if built is False:
        try:
            failed.touch()
        except OSError:
            pass
    return None


def lib() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot be built (the caller uses torch instead)."""
    global _loaded, _tried
    if os.environ.get("CHARRNN_NATIVE", "1") == "0":
        return None
    if not _tried:
        _tried = True
        try:
            # Where torch is loaded, its OpenMP runtime (same soname) serves the kernels too.
            path = _build()
            _loaded = declare(ctypes.CDLL(str(path))) if path else None
        except OSError:
            _loaded = None
    return _loaded
