"""The on-disk cache of packed weights, keyed by the checkpoint file, next to the compiled kernels.

A second ``charrnn sample`` of the same checkpoint reads the blob and never imports torch, so
text starts in a fraction of a second. A pack is found by the checkpoint's contents (``pack_path``). A cache: every failure to read or write it is ignored,
and a damaged entry is rebuilt from the checkpoint. Nothing in it is trusted: the path must be a
regular file (a named pipe there must not hang us), every size is bounded by the file's own, a
SHA-256 over the header and the blob must match, and the header must describe exactly the arrays
the kernel will read. Any mismatch reads as no pack, and the next save replaces the file.

A pack file: PACK_MAGIC, the header's length (8 bytes, little-endian), the header (JSON), the
blob (``nbytes``), then the SHA-256 of everything between the magic and it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from charrnn.files import atomic_write, cache_dir
from charrnn.sampling.native.build import code_signature
from charrnn.sampling.native.kernel import aligned_buffer, check_header

PACK_MAGIC = b"charrnn-pack 2\n"
PACKS_KEPT = 8
_DIGEST = 32


def contents_key(checkpoint: Path) -> str:
    """The SHA-256 of a checkpoint file's bytes (about 1 ms a MB): a pack belongs to the very
    contents it was packed from, which ``checkpoint.load`` verified. A flipped bit in the
    checkpoint finds no pack, and the load that follows says the file is damaged."""
    key = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        while chunk := f.read(8 << 20):
            key.update(chunk)
    return key.hexdigest()


def pack_path(contents: str, precision: str) -> Path:
    """Where the pack of a checkpoint's ``contents`` (``contents_key``) and precision lives."""
    key = hashlib.sha256()
    for part in (contents, precision, code_signature()):
        key.update(str(part).encode() + b"\0")
    return cache_dir() / "packs" / f"{key.hexdigest()[:24]}.pack"


def save_pack(path: Path, header: dict[str, Any], blob: bytearray, offset: int) -> None:
    """Write atomically; keep only the newest PACKS_KEPT packs. A cache: failures are ignored."""
    head = json.dumps(header).encode()
    body = memoryview(blob)[offset : offset + header["nbytes"]]
    size = len(head).to_bytes(8, "little")
    digest = hashlib.sha256(size + head)
    digest.update(body)

    def write(f) -> None:
        f.write(PACK_MAGIC + size + head)
        f.write(body)
        f.write(digest.digest())

    try:
        atomic_write(path, write, sync=False)
        packs = sorted(path.parent.glob("*.pack"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in packs[PACKS_KEPT:]:
            old.unlink()
    except OSError:
        pass


def load_pack(path: Path) -> tuple[dict[str, Any], bytearray, int] | None:
    """(header, blob, offset), or None where there is no whole, intact, consistent pack."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, even on a named pipe
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            found = _read(f, st.st_size)
    except (OSError, ValueError, KeyError, TypeError, IndexError, OverflowError, MemoryError):
        return None
    if found is None:
        return None
    try:
        os.utime(path)  # recently used: kept longest
    except OSError:
        pass
    return found


def _read(f, size: int) -> tuple[dict[str, Any], bytearray, int] | None:
    if f.read(len(PACK_MAGIC)) != PACK_MAGIC:
        return None
    room = size - len(PACK_MAGIC) - 8 - _DIGEST
    raw = f.read(8)
    n_head = int.from_bytes(raw, "little")
    if len(raw) != 8 or not 0 < n_head <= room:
        return None
    head = f.read(n_head)
    header = json.loads(head)
    if not isinstance(header, dict) or not isinstance(header.get("nbytes"), int) or header["nbytes"] != room - n_head:
        return None  # the blob is exactly what the file holds: no size field can ask for more
    blob, offset = aligned_buffer(header["nbytes"])
    view = memoryview(blob)[offset : offset + header["nbytes"]]
    if f.readinto(view) != header["nbytes"]:
        return None
    digest = hashlib.sha256(raw + head)
    digest.update(view)
    if f.read(_DIGEST + 1) != digest.digest():
        return None
    check_header(header)
    return header, blob, offset
