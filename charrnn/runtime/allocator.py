"""The C allocator's settings for training and scoring on a CPU; no torch here.

A training step of a two-layer LSTM allocates its gate buffers and their gradients afresh:
tens of blocks of 5-30 MB each. glibc's malloc serves blocks that big with mmap and returns them
with munmap, and hands the freed top of its heap back to the kernel, so every step faults all of
that memory in again, page by page. On a 2-core AMD EPYC (Zen 5, bf16, 32 x 64 tokens) a 2x320
step took about 5,000 page faults and a 2x384 step 12,000; with the thresholds below, about
1,000 and 500. `charrnn train --max-steps 400` then ran 2x320 at 65-71k tokens/s against 46-57k
and 2x384 at 52-53k against 32-35k, with the same losses to the last digit, and peak memory
grew by 0-80 MB. One-layer shapes, whose blocks are smaller, did not change (bench/allocator.py;
bench/RESULTS.md, "the allocator").

``keep_freed_memory()`` raises glibc's mmap threshold to 128 MB (blocks under it come from the
heap and are reused) and its trim threshold to 256 MB (at most that much freed memory stays
with the process). It leaves other C libraries, and a user's own ``MALLOC_*`` or
``GLIBC_TUNABLES`` settings, alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 128 << 20
"""Bytes: blocks at least this big still get their own mmap (a corpus, a big evaluation batch)."""
TRIM_THRESHOLD = 256 << 20
"""Bytes of freed memory at the top of the heap that the process keeps before returning it."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; later calls return the first call's answer.
    Returns whether they were set: False off glibc (macOS, Windows, musl) and where the user set
    malloc's own environment variables."""
    global _done
    if _done is None:
        _done = _set()
    return _done


def _set() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
