"""The token cache: corpora tokenized once, kept on disk as raw ids, memory-mapped by later runs.

An entry is a folder ``<root>/<sha>-<settings>/`` holding ``ids.bin`` (the ids, raw, in the
smallest integer type that holds the vocabulary) and ``meta.json`` (the tokenizer, the dtype,
the count, the corpus' SHA-256, and the SHA-256 of ids.bin). Nothing read is trusted: an entry
whose ids.bin does not match its size and checksum is deleted and built again, with a line that
says so. Checking costs one read of ids.bin at each open: 0.15 s for the 200 MB of ids of a 200 MB
character corpus on an AMD EPYC Zen 4 (SHA-256 with SHA instructions, from the page cache),
against 0.3 ms unchecked. It is found by the SHA-256 of the corpus' bytes and the
tokenizer settings (``key``); a second index maps a fingerprint of the input files (path,
size, mtime, inode) to that hash, so an unchanged corpus is found without reading it. The root
is ``<cache folder>/tokens`` (``charrnn.files.cache_dir``).

A cache, not a store: entries can be deleted at any time, and after each build the least
recently used ones go while the cache holds more than ``$CHARRNN_TOKEN_CACHE_GB`` (default 20)
gigabytes (``prune``). Builds happen in a work folder of their own and are renamed into place,
so concurrent runs never see half an entry.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.files import atomic_write, cache_dir

FORMAT = 2
"""Of cache entries; a change makes new entries."""

CHUNK = 8 << 20


def root() -> Path:
    return cache_dir() / "tokens"


def key(spec: dict) -> str:
    """The settings part of an entry's folder name."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def folder(sha: str, spec: dict) -> Path:
    return root() / f"{sha[:24]}-{key(spec)}"


def open_entry(sha: str, spec: dict, damaged: Callable[[str], None] | None = None) -> dict | None:
    """The entry of the corpus with SHA-256 ``sha`` tokenized with ``spec`` (its meta.json and
    ``path``, its ids.bin), or None where there is none whole. An entry whose ids.bin does not
    match its size or checksum is deleted, and ``damaged`` hears a line saying so."""
    where = folder(sha, spec)
    meta = read_json(where / "meta.json")
    if meta.get("spec") != spec or meta.get("sha") != sha:
        return None
    path = where / "ids.bin"
    try:
        whole = path.stat().st_size == meta["tokens"] * np.dtype(meta["dtype"]).itemsize
        if not (whole and checksum(path) == meta.get("ids_sha256")):
            _remove(where)
            if damaged is not None:
                damaged(
                    f"the token cache entry {where} was damaged (its ids do not match their checksum); "
                    "tokenizing the corpus again"
                )
            return None
        os.utime(where)  # the entry's age says when it was last used
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return {**meta, "path": str(path)}


def checksum(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def lookup(fingerprint: str, spec: dict, damaged: Callable[[str], None] | None = None) -> dict | None:
    """The entry of input files known by their ``fingerprint``, without reading them."""
    sha = read_json(root() / "index" / f"{fingerprint}.json").get("sha")
    return open_entry(sha, spec, damaged) if sha else None


def remember(fingerprint: str, sha: str) -> None:
    """Note that the input files of ``fingerprint`` hold the corpus of ``sha``."""
    write_json(root() / "index" / f"{fingerprint}.json", {"sha": sha})


def work_folder() -> Path:
    """A new folder to build an entry in (``store`` moves it into place); stale ones of dead
    processes are removed first. Raises CharrnnError naming CHARRNN_CACHE when the cache folder
    cannot be written."""
    base = root()
    try:
        base.mkdir(parents=True, exist_ok=True)
        clean_stale(base)
        work = base / f".build-{os.getpid()}-{time.monotonic_ns()}"
        work.mkdir()
    except OSError as e:
        raise unwritable(base, e) from None
    return work


def unwritable(base: Path, e: OSError) -> CharrnnError:
    """The error for a cache folder the disk refuses: full, or not writable here."""
    if e.errno == errno.ENOSPC:
        fix = "free some space, or set CHARRNN_CACHE to a folder on another disk"
    else:
        fix = "set CHARRNN_CACHE to a folder you can write"
    return CharrnnError(f"cannot write the token cache in {base}: {e.strerror or e}; {fix}")


def store(work: Path, meta: dict) -> dict:
    """Move the built entry in ``work`` (its ids.bin) into place with ``meta`` (which holds
    ``spec`` and ``sha``); returns the entry as ``open_entry`` does. Another process that stored
    the same entry first wins."""
    sha, spec = meta["sha"], meta["spec"]
    existing = open_entry(sha, spec)
    if existing:
        return existing
    meta = {**meta, "ids_sha256": checksum(work / "ids.bin")}
    (work / "meta.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k != "path"}, ensure_ascii=False), encoding="utf-8"
    )
    target = folder(sha, spec)
    if target.exists():  # damaged or half deleted: set it aside
        _remove(target)
    try:
        os.rename(work, target)
    except OSError:  # another process finished the same entry first
        existing = open_entry(sha, spec)
        if existing:
            return existing
        raise
    return {**meta, "path": str(target / "ids.bin")}


def _remove(path: Path) -> bool:
    """Rename ``path`` out of the cache at once, then delete it; False where it cannot be moved."""
    stale = path.parent / f".stale-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, stale)
    except OSError:
        return False
    shutil.rmtree(stale, ignore_errors=True)
    return True


def limit() -> int:
    """Bytes the token cache may hold: ``$CHARRNN_TOKEN_CACHE_GB`` (default 20) gigabytes."""
    try:
        return max(0, int(float(os.environ.get("CHARRNN_TOKEN_CACHE_GB", "20")) * 1e9))
    except ValueError:
        return int(20e9)


def prune(keep: Path | None = None, most: int | None = None) -> list[Path]:
    """Delete the least recently used entries until the cache holds at most ``most`` bytes
    (default ``limit()``); ``keep`` (the entry just built) stays whatever its size. Index
    files that point to a deleted entry go too. Returns the entries deleted. A run that has an
    entry mapped keeps reading it (the pages stay until it unmaps them); a later run rebuilds."""
    base = root()
    most = limit() if most is None else most
    entries = []
    for entry in base.glob("*-*"):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            size = sum(f.stat().st_size for f in entry.iterdir())
            entries.append((entry.stat().st_mtime, size, entry))
        except OSError:
            continue
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, entry in sorted(entries):  # oldest use first
        if total <= most:
            break
        if keep is not None and entry == keep:
            continue
        if not _remove(entry):
            continue
        total -= size
        deleted.append(entry)
    if deleted:
        gone = {f.name.split("-")[0] for f in deleted}
        live = {f.name.split("-")[0] for _, _, f in entries if f not in deleted}
        for index in (base / "index").glob("*.json"):
            sha = read_json(index).get("sha", "")
            if sha[:24] in gone and sha[:24] not in live:
                index.unlink(missing_ok=True)
    return deleted


def clean_stale(base: Path) -> None:
    """Builds and spools left by processes that died."""
    for p in base.glob(".*-*"):
        try:
            pid = int(p.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            pass


def read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json(path: Path, obj: dict) -> None:
    try:
        atomic_write(path, lambda f: f.write(json.dumps(obj, ensure_ascii=False).encode("utf-8")), sync=False)
    except OSError:
        pass  # a cache that cannot be written only costs time
