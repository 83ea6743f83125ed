"""Files below the flow, shared by every stage: reading the user's input files (a corpus, a text
to score, a config, a prompt on stdin), atomic writes, and the cache folder.

A regular file, stdin, or a pipe (``<(cmd)``, a named pipe another process writes to). A named
pipe that no process opens for writing is waited on for ``pipe_wait()`` seconds, then refused;
devices and sockets are refused at once (``/dev/zero`` never ends). Text must be UTF-8; when it
is not, the error names a conversion that runs on the file as it is.
"""

from __future__ import annotations

import os
import select
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import UsageError


def pipe_wait() -> float:
    """Seconds to wait for a named pipe's writer: $CHARRNN_PIPE_WAIT, default 10."""
    try:
        return float(os.environ.get("CHARRNN_PIPE_WAIT", "10"))
    except ValueError:
        return 10.0


def read_bytes(path: str, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of ``path`` (``-``: stdin), at most ``limit`` of them. Raises UsageError for a
    missing, unreadable or unsuitable file, and for one over ``limit`` bytes."""
    if path == "-":
        if sys.stdin is None:
            raise UsageError(f"{what} comes from stdin (-), but stdin is closed; pipe something in or give a file")
        data = sys.stdin.buffer.read() if limit is None else sys.stdin.buffer.read(limit + 1)
        return _bounded(data, path, what, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a named pipe without a writer must not block the open
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder; give a text file (or - for stdin)") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}; check that it exists and you may read it") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UsageError(f"{path} is a folder; give a text file (or - for stdin)")
        if stat.S_ISFIFO(mode) and "pipe:[" not in os.path.realpath(path):
            _wait_for_writer(fd, path, what)  # a named pipe; <(cmd) is an anonymous one, its writer running
        elif not stat.S_ISREG(mode):
            raise UsageError(f"{path} is not a regular file or a pipe; give a text file (or - for stdin)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    return _bounded(data, path, what, limit)


def read_text(path: str, what: str = "file", limit: int | None = None) -> str:
    """The UTF-8 text of ``path`` (``-``: stdin); ``read_bytes`` and ``decode_utf8`` say what
    they raise."""
    return decode_utf8(read_bytes(path, what, limit), path, what)


def _wait_for_writer(fd: int, path: str, what: str) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    # Linux reports nothing on a pipe no writer has opened yet: data or a writer's close wakes us.
    wait = pipe_wait()
    if not poller.poll(wait * 1000):
        raise UsageError(
            f"{what} {path} is a named pipe that nothing wrote to in {wait:g}s; "
            "start the writer first (or give a regular file)"
        )


def _bounded(data: bytes, path: str, what: str, limit: int | None) -> bytes:
    if limit is not None and len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit:,} bytes; is it the right file?")
    return data


def decode_utf8(data: bytes, path: str, what: str = "file") -> str:
    """``data`` as UTF-8 text; UsageError naming a conversion that works when it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        source = guess_encoding(data)
        if path == "-":
            fix = f"convert it first, e.g. iconv -f {source} -t UTF-8 < yourfile | charrnn ..."
        else:
            q = shlex.quote(path)
            out = shlex.quote(f"{os.path.splitext(path)[0]}.utf8.txt")
            drop = " -c" if source == "UTF-8" else ""
            fix = f"convert it, e.g. iconv -f {source} -t UTF-8{drop} {q} > {out}"
        guess = "mostly UTF-8 with stray bytes (-c drops them)" if source == "UTF-8" else f"it looks like {source}"
        raise UsageError(f"{what} {path} is not UTF-8 (bad byte at offset {e.start}; {guess}); {fix}") from None


def guess_encoding(data: bytes) -> str:
    """The likely encoding of bytes that are not UTF-8, by name iconv knows: UTF-16 (a BOM, or
    zero bytes in every other place), UTF-8 itself when only a few bytes are stray, else
    WINDOWS-1252 where it decodes, else ISO-8859-1 (which decodes anything)."""
    data = data[: 1 << 20]  # a guess: the first megabyte tells
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    half = len(data) // 2
    if half >= 2:
        if data[1::2].count(0) > 0.3 * half:
            return "UTF-16LE"
        if data[0::2].count(0) > 0.3 * half:
            return "UTF-16BE"
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    multibyte = sum(1 for ch in text if "\u0080" <= ch and ch != "\ufffd")
    if multibyte > 4 * bad:
        return "UTF-8"
    try:
        data.decode("cp1252")
        return "WINDOWS-1252"
    except UnicodeDecodeError:
        return "ISO-8859-1"


def cache_dir() -> Path:
    """charrnn's cache folder (token ids, compiled kernels, packed weights): ``$CHARRNN_CACHE``,
    else ``$XDG_CACHE_HOME/charrnn``, else ``~/.cache/charrnn``. Anything in it may be deleted."""
    if os.environ.get("CHARRNN_CACHE"):
        return Path(os.environ["CHARRNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charrnn"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], sync: bool = True) -> None:
    """Call ``write`` on a temporary file in the same folder, then rename it to ``path``: a crash
    never leaves half a file, and readers see the old file or the new one. ``sync``: flush to disk
    before the rename (for files that must survive a power cut, such as checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())  # the rename must not land before the data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
