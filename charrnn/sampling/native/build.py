"""Building and loading kernels.c: compiled once per machine on first use, loaded with ctypes.

Sampling one token at a time is bound by memory bandwidth and per-call overhead, and a compiled
step (AVX-512 bf16 dot products, both cores, no Python per token) is several times faster than
what torch ops can do from Python. It needs a C compiler (``cc``, or ``$CC``, which may carry arguments) when first used;
without one, or with ``CHARRNN_NATIVE=0``, ``lib()`` is None and charrnn uses its torch path.
The library is cached under ``$CHARRNN_CACHE`` (default ``~/.cache/charrnn``), keyed by the
source, the compiler and the CPU, and written to a temporary file and renamed, so concurrent
first runs are safe. A compiler that refuses the source is remembered for a day (a ``.failed``
file beside it, naming the compiler binary as it was): a new or updated compiler, or a day
later, tries again. A build that fails for the machine's sake (the compiler cannot even build
an empty file: a full disk, a broken install) or that cannot be run is not remembered.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charrnn.files import cache_dir
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


@functools.cache
def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [l for l in f.read().splitlines() if l.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


FAILURE_KEPT = 24 * 3600  # seconds a refusal is remembered


def _compile(cc: list[str], out: Path) -> bool | None:
    """True when built; False when the compiler refused every flag set though it builds an
    empty file; None when it could not be run, timed out, or fails on anything (the machine's
    trouble, such as a full disk: worth another try next time)."""
    for flags in _FLAG_SETS:
        if _run(cc, [*_COMMON, *flags, str(SOURCE)], out):
            return True
    try:
        with tempfile.TemporaryDirectory(dir=out.parent) as d:
            empty = Path(d) / "empty.c"
            empty.write_text("int charrnn_empty;\n")
            if not _run(cc, ["-shared", "-fPIC", str(empty)], Path(d) / "empty.so"):
                return None
    except OSError:
        return None
    return False


def _run(cc: list[str], args: list[str], out: Path) -> bool:
    """Compile to ``out`` through a temporary file; False on any failure."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kernels.", suffix=".so", dir=out.parent)
        os.close(fd)
    except OSError:
        return False
    try:
        r = subprocess.run([*cc, *args, "-o", tmp, "-lm"], capture_output=True, timeout=120)
        if r.returncode == 0:
            os.replace(tmp, out)
            return True
        return False
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compiler_identity(cc: list[str]) -> str:
    """The compiler binary as it is now (path, size, modification time): an update changes it."""
    path = shutil.which(cc[0]) or cc[0]
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        return f"{' '.join(cc)}|{real}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{' '.join(cc)}|missing"


def _remembered_failure(failed: Path, identity: str) -> bool:
    """A refusal recorded for this very compiler less than FAILURE_KEPT seconds ago."""
    try:
        st = os.stat(failed)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
            return False
        with open(failed, encoding="utf-8", errors="replace") as f:
            recorded = f.read()
    except OSError:
        return False
    return recorded == identity and 0 <= time.time() - st.st_mtime < FAILURE_KEPT


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
    cc = shlex.split(os.environ.get("CC", "")) or [
        shutil.which("cc") or shutil.which("gcc") or shutil.which("clang") or ""
    ]
    if not cc[0]:
        return None
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join(cc).encode())
    key.update(_cpu_signature().encode())
    key.update(platform.machine().encode())
    path = cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    failed = path.with_suffix(".failed")  # this compiler refused it: not asked again for a while
    if path.is_file():
        return path
    identity = compiler_identity(cc)
    if _remembered_failure(failed, identity):
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    built = _compile(cc, path)
    if built:
        try:
            failed.unlink(missing_ok=True)
        except OSError:
            pass
        return path
    if built is False:
        try:
            failed.write_text(identity, encoding="utf-8")
        except OSError:
            pass
    return None


def lib() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot be built (the caller uses torch instead):
    ``load()``'s answer, asked once per process; ``CHARRNN_NATIVE=0`` turns them off."""
    if os.environ.get("CHARRNN_NATIVE", "1") == "0":
        return None
    return _once()


@functools.cache
def _once() -> ctypes.CDLL | None:
    return load()


def load() -> ctypes.CDLL | None:
    """Build the kernels where they are not in the cache (or remember a compiler's refusal) and
    load them; None where they cannot be built or loaded. A damaged library (truncated, foreign)
    is removed and built again once."""
    for _ in range(2):
        path = None
        try:
            # Where torch is loaded, its OpenMP runtime (same soname) serves the kernels too.
            path = _build()
            return declare(ctypes.CDLL(str(path))) if path else None
        except (OSError, AttributeError):
            if path is None:
                return None
            try:
                path.unlink()
            except OSError:
                return None
    return None
