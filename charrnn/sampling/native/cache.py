"""The on-disk cache of packed weights, keyed by the checkpoint file, next to the compiled kernels.

A second ``charrnn sample`` of the same checkpoint reads the blob and never imports torch, so
text starts in a fraction of a second. A cache: every failure to read or write it is ignored,
and a damaged entry is rebuilt from the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from charrnn.checkpoint import atomic_write
from charrnn.sampling.native.build import cache_dir, code_signature
from charrnn.sampling.native.kernel import aligned_buffer, check_sizes

PACK_MAGIC = b"charrnn-pack 1\n"
PACKS_KEPT = 8

def pack_path(checkpoint: Path, precision: str) -> Path:
    """Where the pack of this checkpoint file (as it is now) and precision lives."""
    st = checkpoint.stat()
    key = hashlib.sha256()
    for part in (os.path.realpath(checkpoint), st.st_size, st.st_mtime_ns, st.st_ino, precision, code_signature()):
        key.update(str(part).encode() + b"\0")
    return cache_dir() / "packs" / f"{key.hexdigest()[:24]}.pack"


def save_pack(path: Path, header: dict[str, Any], blob: bytearray, offset: int) -> None:
    """Write atomically; keep only the newest PACKS_KEPT packs. A cache: failures are ignored."""
    head = json.dumps(header).encode()

    def write(f) -> None:
        f.write(PACK_MAGIC + len(head).to_bytes(8, "little") + head)
        f.write(memoryview(blob)[offset : offset + header["nbytes"]])

    try:
        atomic_write(path, write, sync=False)
        packs = sorted(path.parent.glob("*.pack"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in packs[PACKS_KEPT:]:
            old.unlink()
    except OSError:
        pass


def load_pack(path: Path) -> tuple[dict[str, Any], bytearray, int] | None:
    """(header, blob, offset), or None where there is no complete pack."""
    try:
        with open(path, "rb") as f:
            if f.read(len(PACK_MAGIC)) != PACK_MAGIC:
                return None
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            check_sizes(header)
            blob, offset = aligned_buffer(header["nbytes"])
            if f.readinto(memoryview(blob)[offset : offset + header["nbytes"]]) != header["nbytes"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.utime(path)  # recently used: kept longest
    except OSError:
        pass
    return header, blob, offset
