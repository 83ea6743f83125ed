"""Inputs -> token ids, streamed into a cache that later runs reuse.

Inputs: text files, folders (read recursively: files sorted by path, names starting with '.'
and ``__pycache__`` folders skipped), ``-`` for stdin, or nothing for the built-in default corpus. Several inputs are read
in the order given and joined with ``SEPARATOR`` (one newline) between files; a single file is
its bytes exactly. Files must be UTF-8.

The token ids go to the token cache (cache.py) and are memory-mapped from it, so a corpus of
any size costs its vocabulary plus the pages being read; an unchanged corpus is found there
without reading it again, and an edited file is read again.

The build reads the text in chunks twice at most: pass 1 hashes it and finds the vocabulary
(character counts, or word indices written to a temporary file), pass 2 writes the ids.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn.data import cache
from charrnn.data.tokenizer import UNK, WORD_RULE, Tokenizer, UnknownTokenError, show_tokens
from charrnn.data.vectorized import CharCounter, CharEncoder, WordIndexer, grown_vocab, smallest_dtype, word_vocab
from charrnn.errors import CharrnnError, UsageError

SEPARATOR = "\n"
"""Written between two input files."""
DEFAULT_CORPUS = "python-stdlib"
DEFAULT_CORPUS_CHARS = 1_200_000
CHUNK_BYTES = 4 << 20


class BudgetExceeded(CharrnnError):
    pass


@dataclass
class Corpus:
    """Token ids of some inputs, memory-mapped from the cache."""

    ids: np.ndarray
    """(tokens,) the ids, a read-only numpy memmap of the smallest integer type."""
    tokenizer: Tokenizer
    sha: str
    """The first 16 hex digits of the SHA-256 of the text's bytes (separators included)."""
    name: str
    """For the default run folder: the input's name (the first one's, '+N' for N more)."""
    inputs: list[str]
    """The inputs as given, absolute paths (or '-'), to read again on --resume."""
    chars: int
    nbytes: int
    cached: bool
    """True when the ids came from the cache."""
    seconds: float
    """Time spent finding or building the ids."""
    unknown: dict[str, int] = field(default_factory=dict)
    """Tokens outside a given vocabulary (up to 1000 distinct) and their counts."""
    unknown_total: int = 0
    added: list[str] = field(default_factory=list)
    """With unknown='grow': the tokens appended to the given vocabulary."""


@dataclass
class _Files:
    paths: list[Path]
    name: str
    spooled: dict[Path, str] = field(default_factory=dict)
    """stdin and pipes, copied to files to read twice: spool file -> the input's name."""


def resolve(inputs: list[str] | str | None) -> tuple[list[Path], str]:
    """The files ``inputs`` stand for, in reading order, and the corpus name. UsageError for a
    missing input or a folder with no files."""
    if inputs is None or inputs == []:
        return default_files(), DEFAULT_CORPUS
    if isinstance(inputs, (str, Path)):
        inputs = [str(inputs)]
    paths: list[Path] = []
    for item in inputs:
        if item == "-":
            paths.append(Path("-"))
            continue
        p = Path(item)
        if p.is_dir():
            found = _walk(p)
            if not found:
                raise UsageError(f"the folder {item} holds no files to read; give text files or another folder")
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise UsageError(f"corpus not found: {item}")
    first = inputs[0]
    name = "stdin" if first == "-" else (Path(first).resolve().name if Path(first).is_dir() else Path(first).stem)
    name = name or "corpus"
    return paths, name if len(inputs) == 1 else f"{name}+{len(inputs) - 1}"


def _walk(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]  # Python's bytecode
        found += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def default_files() -> list[Path]:
    """The running interpreter's own standard library source: on every machine, no download,
    and nothing copied into this repository. Files in sorted order, about 1.2M characters."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files, size = [], 0
    for f in sorted(root.glob("*.py")):
        try:
            size += len(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        files.append(f)
        if size >= DEFAULT_CORPUS_CHARS:
            break
    if not files:
        raise CharrnnError(f"no Python sources found under {root}; give a corpus file instead")
    return files


def load(
    inputs: list[str] | str | None = None,
    *,
    text: str | None = None,
    level: str = "char",
    max_vocab: int | None = None,
    min_count: int = 1,
    tokenizer: Tokenizer | None = None,
    unknown: str = "unk",
    deadline: float | None = None,
    message: Callable[[str], None] | None = None,
) -> Corpus:
    """The token ids of ``inputs`` (or of ``text``), from the cache or built into it.

    With ``tokenizer`` its vocabulary is used as it is (resume, fine-tuning, scoring), and
    ``unknown`` says what becomes of tokens outside it: 'unk' (word level: <unk>; character level:
    an error), 'skip' (dropped, counted in ``Corpus.unknown``), 'error', or 'grow' (fine-tuning:
    ``Tokenizer.grown``'s vocabulary, the new tokens appended within ``max_vocab`` and
    ``min_count``, the rest <unk>; listed in ``Corpus.added``). Otherwise the vocabulary
    is built at ``level`` with ``max_vocab``/``min_count``. ``deadline`` (time.monotonic) stops a
    build that would pass it (BudgetExceeded). ``message`` hears one line when a build starts. A
    damaged cache entry is built again, with a line on stderr, --quiet or not: it is a warning.
    Raises UsageError for missing or non-UTF-8 inputs, CharrnnError for an empty corpus,
    UnknownTokenError for unseen tokens under 'error'."""
    t0 = time.monotonic()
    if tokenizer is not None:
        level = tokenizer.level
    spec = _spec(level, max_vocab, min_count, tokenizer, unknown)
    if text is not None:
        files = _Files([], "corpus")
        given = []
    else:
        paths, name = resolve(inputs)
        files = _Files(paths, name)
        given = [
            p if p == "-" else str(Path(p).absolute()) for p in ([inputs] if isinstance(inputs, str) else inputs or [])
        ]
    fingerprint = _fingerprint(files.paths) if text is None else None
    hit = cache.lookup(fingerprint, spec, _note) if fingerprint else None
    if hit:
        return _corpus(hit, files.name, given, True, t0)
    try:
        _spool_special(files)
        entry = _build(files, text, spec, level, max_vocab, min_count, tokenizer, unknown, deadline, message)
    finally:
        for spool in files.spooled:
            spool.unlink(missing_ok=True)
    if fingerprint:
        cache.remember(fingerprint, entry["sha"])
    cache.prune(keep=Path(entry["path"]).parent)
    return _corpus(entry, files.name, given, False, t0)


def read_text(inputs: list[str] | str | None = None) -> tuple[str, str]:
    """(text, name) of ``inputs`` read whole, joined as ``load`` joins them: for small texts
    (records, per-line scoring). Raises UsageError for missing or non-UTF-8 inputs."""
    paths, name = resolve(inputs)
    files = _Files(paths, name)
    try:
        _spool_special(files)
        text = "".join(_Reader(files, None, None, 0).chunks())
    finally:
        for spool in files.spooled:
            spool.unlink(missing_ok=True)
    return text, name


def iter_text(inputs: list[str] | str | None = None) -> Iterator[tuple[str, str | None]]:
    """The text of ``inputs`` as ``read_text`` joins it, in chunks of about CHUNK_BYTES, for work
    that must not hold a whole corpus in memory: yields (chunk, None) pairs, then ("", sha) once,
    the 16-hex-digit SHA-256 of the text's bytes (as runs keep it in ``corpus_sha``)."""
    paths, name = resolve(inputs)
    files = _Files(paths, name)
    try:
        _spool_special(files)
        reader = _Reader(files, None, None, 0)
        for piece in reader.chunks():
            yield piece, None
        yield "", reader.sha.hexdigest()[:16]
    finally:
        for spool in files.spooled:
            spool.unlink(missing_ok=True)


def load_ranked(main: bool, world: int, **kwargs) -> Corpus:
    """``load`` under torchrun: rank 0 finds or builds the cache entry, the other ranks wait for
    it and then read the same one."""
    if world > 1:
        from charrnn.runtime import ranks

        if not main:
            ranks.barrier()
        c = load(**kwargs)
        if main:
            ranks.barrier()
        return c
    return load(**kwargs)


def _note(text: str) -> None:
    print(f"charrnn: note: {text}", file=sys.stderr)


def _corpus(entry: dict, name: str, given: list[str], cached: bool, t0: float) -> Corpus:
    n = entry["tokens"]
    ids = np.memmap(entry["path"], dtype=entry["dtype"], mode="r", shape=(n,)) if n else np.zeros(0, entry["dtype"])
    return Corpus(
        ids,
        Tokenizer.from_dict(entry["tokenizer"]),
        entry["sha"][:16],
        name,
        given,
        entry["chars"],
        entry["bytes"],
        cached,
        time.monotonic() - t0,
        entry.get("unknown", {}),
        entry.get("unknown_total", 0),
        entry.get("added", []),
    )


def _spec(level: str, max_vocab: int | None, min_count: int, tok: Tokenizer | None, unknown: str) -> dict:
    spec = {"format": cache.FORMAT, "separator": SEPARATOR, "level": level}
    if tok is not None:
        vocab = json.dumps(tok.to_dict(), ensure_ascii=False).encode("utf-8", "surrogatepass")
        spec.update(vocab=hashlib.sha256(vocab).hexdigest()[:32], unknown=unknown)
        if unknown == "grow":
            spec.update(max_vocab=max_vocab, min_count=min_count)
    elif level == "word":
        spec.update(max_vocab=max_vocab, min_count=min_count, rule=WORD_RULE)
    return spec


def fingerprint(inputs: list[str] | str | None) -> str | None:
    """A key that changes when any input file changes (path, size, mtime, inode), without reading
    them; None for stdin."""
    return _fingerprint(resolve(inputs)[0])


def _fingerprint(paths: list[Path]) -> str | None:
    """Cheap identity of the input files (path, size, mtime, inode); None for stdin."""
    parts = []
    for p in paths:
        if str(p) == "-":
            return None
        try:
            st = p.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):  # a pipe: its content is known only by reading it
            return None
        parts.append([str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev])
    key = json.dumps([cache.FORMAT, SEPARATOR, parts]).encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()[:32]


def _regular(p: Path) -> bool:
    try:
        return str(p) != "-" and stat.S_ISREG(p.stat().st_mode)
    except OSError:
        return False


def _spool_special(files: _Files) -> None:
    """stdin and pipes are read once (inputs.read_bytes: a named pipe without a writer is waited
    for, then refused; devices are refused) into files under the cache, so they can be read twice."""
    from charrnn.files import read_bytes

    for i, p in enumerate(files.paths):
        if _regular(p):
            continue
        if str(p) == "-" and sys.stdin is None:
            raise UsageError("the corpus comes from stdin (-), but stdin is closed; pipe something in or give a file")
        spool_root = cache.root()
        spool = spool_root / f".stdin-{os.getpid()}-{i}"
        try:
            spool_root.mkdir(parents=True, exist_ok=True)
            with open(spool, "wb") as f:
                if str(p) == "-":
                    shutil.copyfileobj(sys.stdin.buffer, f, CHUNK_BYTES)
                else:
                    f.write(read_bytes(str(p), "corpus"))
        except OSError as e:
            spool.unlink(missing_ok=True)
            raise cache.unwritable(spool_root, e) from None
        files.spooled[spool] = "-" if str(p) == "-" else str(p)
        files.paths[i] = spool


class _Reader:
    """The text in chunks of about CHUNK_BYTES, SEPARATOR between files, hashing the bytes."""

    def __init__(self, files: _Files, text: str | None, deadline: float | None, total: int) -> None:
        self.files, self.text, self.deadline, self.total = files, text, deadline, total
        self.sha = hashlib.sha256()
        self.chars = self.nbytes = 0

    def chunks(self) -> Iterator[str]:
        self.sha, self.chars, self.nbytes = hashlib.sha256(), 0, 0
        for piece in self._pieces():
            self.chars += len(piece)
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise BudgetExceeded(
                    f"tokenizing the corpus ({self.total / 1e6:,.0f} MB) did not finish within the time budget: no training "
                    "step fits; give one run a larger --time-budget (the tokens are cached for the runs after it)"
                )
            yield piece

    def _pieces(self) -> Iterator[str]:
        if self.text is not None:
            for i in range(0, len(self.text), CHUNK_BYTES):
                piece = self.text[i : i + CHUNK_BYTES]
                raw = piece.encode("utf-8", "surrogatepass")
                self.sha.update(raw)
                self.nbytes += len(raw)
                yield piece
            return
        sep = SEPARATOR.encode()
        for i, path in enumerate(self.files.paths):
            lead = ""
            if i:
                self.sha.update(sep)
                self.nbytes += len(sep)
                lead = SEPARATOR
            decoder = codecs.getincrementaldecoder("utf-8")("strict")
            offset = 0
            shown = {"-": "stdin"}.get(self.files.spooled.get(path, ""), self.files.spooled.get(path, str(path)))
            try:
                f = open(path, "rb")
            except OSError as e:
                raise UsageError(f"cannot read {shown}: {e.strerror}") from None
            with f:
                while True:
                    try:
                        raw = f.read(CHUNK_BYTES)
                    except OSError as e:
                        raise UsageError(f"cannot read {shown}: {e.strerror}") from None
                    pending = len(decoder.getstate()[0])
                    try:
                        piece = decoder.decode(raw, final=not raw)
                    except UnicodeDecodeError as e:
                        raise _not_utf8(
                            raw, offset - pending + e.start, self.files.spooled.get(path, str(path))
                        ) from None
                    self.sha.update(raw)
                    self.nbytes += len(raw)
                    offset += len(raw)
                    if lead or piece:
                        yield lead + piece
                        lead = ""
                    if not raw:
                        break


def _build(files, text, spec, level, max_vocab, min_count, tok, unknown, deadline, message) -> dict:
    total = len(text) if text is not None else sum(_size(p) for p in files.paths)
    if deadline is not None and time.monotonic() > deadline:
        raise BudgetExceeded(
            "the time budget ran out while setting up, before the corpus was read: no training step fits; give a larger --time-budget"
        )
    if message and total > 20e6:
        message(f"tokenizing {total / 1e6:,.0f} MB once; later runs on the same files reuse the tokens")
    work = cache.work_folder()
    try:
        reader = _Reader(files, text, deadline, total)
        if level == "char":
            meta = _build_chars(reader, tok, unknown, work)
            meta["added"] = meta["tokenizer"]["vocab"][len(tok) :] if tok is not None else []
        else:
            meta = _build_words(reader, tok, unknown, max_vocab, min_count, work)
        meta.update(spec=spec, sha=reader.sha.hexdigest(), chars=reader.chars, bytes=reader.nbytes)
        if reader.chars == 0:
            raise UsageError("the corpus is empty; give a file with some text in it")
        return cache.store(work, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _build_chars(reader: _Reader, tok: Tokenizer | None, unknown: str, work: Path) -> dict:
    if tok is None or unknown == "grow":
        counter = CharCounter()
        for piece in reader.chunks():
            counter.feed(piece)
        if tok is None:
            tok = Tokenizer("char", counter.vocab())
        else:
            known = set(tok.vocab)
            tok = Tokenizer("char", tok.vocab + [c for c in counter.vocab() if c not in known])
    encoder = CharEncoder(tok.vocab)
    dtype = smallest_dtype(len(tok))
    missing: dict[str, int] = {}
    n = 0
    with open(work / "ids.bin", "wb") as f:
        for piece in reader.chunks():
            ids = encoder.encode(piece)
            bad = ids < 0
            if bad.any():
                cps, counts = np.unique(
                    np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), np.uint32)[bad], return_counts=True
                )
                for c, k in zip(cps.tolist(), counts.tolist()):
                    missing[chr(c)] = missing.get(chr(c), 0) + k
                if unknown != "skip":
                    raise _unknown_error("characters", missing, unknown)
                ids = ids[~bad]
            f.write(ids.astype(dtype).data)
            n += len(ids)
    return {
        "tokenizer": tok.to_dict(),
        "dtype": dtype.str,
        "tokens": n,
        "unknown": missing,
        "unknown_total": sum(missing.values()),
    }


def _build_words(reader: _Reader, tok: Tokenizer | None, unknown: str, max_vocab, min_count, work: Path) -> dict:
    given = tok is not None
    indexer = WordIndexer(tok.rule if given else WORD_RULE, tok.vocab if given else None, grow=unknown == "grow")
    rest = ""
    n = 0
    with open(work / "pass1.bin", "wb") as f:
        for piece in reader.chunks():
            ids, rest = indexer.feed(rest + piece, final=False)
            f.write(ids.tobytes())
            n += len(ids)
            if len(rest) > 64 * CHUNK_BYTES:  # no whitespace for that long: cut anyway
                ids, rest = indexer.feed(rest, final=True)
                f.write(ids.tobytes())
                n += len(ids)
        ids, _ = indexer.feed(rest, final=True)
        f.write(ids.tobytes())
        n += len(ids)
    if not given:
        vocab, remap = word_vocab(indexer, max_vocab, min_count)
        if len(vocab) == 1:
            top = int(indexer.counts[: len(indexer)].max(initial=0))
            raise UsageError(
                f"no word occurs {min_count} times; use --min-count {top} or less (the most frequent occurs {top} times)"
            )
        tok = Tokenizer("word", vocab)
    elif unknown == "grow":
        tok, remap, added = grown_vocab(indexer, tok, max_vocab, min_count)
    else:
        remap = np.arange(len(tok), dtype=np.int32)
        if indexer.missing and unknown not in ("unk", "skip"):
            raise _unknown_error("words", indexer.missing, unknown)
    dtype = smallest_dtype(len(tok))
    unk = tok.stoi.get(UNK, 0)
    out = 0
    # Read back in chunks, not mapped: mapped pages would count as this process' memory.
    with open(work / "pass1.bin", "rb") as src, open(work / "ids.bin", "wb") as f:
        for _ in range(0, n, CHUNK_BYTES):
            part = np.fromfile(src, np.int32, CHUNK_BYTES)
            if unknown == "skip":
                part = part[part >= 0]
            ids = np.where(part >= 0, remap[part], unk).astype(dtype)
            f.write(ids.data)
            out += len(ids)
    (work / "pass1.bin").unlink()
    missing = indexer.missing if given else {}
    return {
        "tokenizer": tok.to_dict(),
        "dtype": dtype.str,
        "tokens": out,
        "unknown": missing,
        "unknown_total": sum(missing.values()),
        "added": added if unknown == "grow" else [],
    }


def _unknown_error(what: str, missing: dict[str, int], unknown: str) -> UnknownTokenError:
    hint = "use --unknown skip to drop them" if unknown == "error" else "retrain with them in the corpus"
    return UnknownTokenError(f"the model never saw these {what}: {show_tokens(missing)}; {hint}")


def _not_utf8(raw: bytes, where: int, path: str) -> UsageError:
    """inputs.decode_utf8's error for the file ``path`` whose byte ``where`` is not UTF-8."""
    from charrnn.files import decode_utf8

    try:
        decode_utf8(raw, path, "corpus")
    except UsageError as e:
        return UsageError(re.sub(r"offset \d+", f"offset {where}", str(e), count=1))
    return UsageError(f"corpus {path} is not UTF-8 (bad byte at offset {where})")
