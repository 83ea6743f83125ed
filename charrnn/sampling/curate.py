"""Curated samples (``draw``): copies of the training data (``--novel``), repeats (``--unique``)
and empty records dropped, and more drawn until enough are kept.

Is a sample a copy of the training data? A membership index on disk, in bounded memory.

Records models: a sample is a copy when, trimmed of surrounding whitespace, it equals a training
record (trimmed likewise). Free text: a sample is a copy when it shares a window of ``WINDOW``
characters with the training text that starts at a content-defined anchor: a position whose
next ``ANCHOR`` characters hash to 0 modulo ``EVERY``. The anchors of a copied span are the
same in the sample and in the corpus, so a span of 24 + k characters copied from the corpus
is missed only when none of its k + 1 first positions is an anchor: about (15/16)^(k+1) for
varied text (measured on Tiny Shakespeare: 0.8% of 88-character spans missed), more for very
repetitive text, while the index holds about one entry per 16 characters.

The index is a sorted array of 63-bit hashes (numpy, ``np.load(mmap_mode="r")``), built on
first use from the run's corpus file and kept in the run folder beside the checkpoints; a
changed corpus file (size, mtime) gets a new one. Membership is a binary search: memory stays
bounded by what the operating system pages in, whatever the corpus size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import CharrnnError, UsageError

WINDOW, ANCHOR, EVERY = 24, 8, 16
_P = np.uint64(0x100000001B3)  # FNV prime: multiplier of the polynomial rolling hashes


def record_hashes(texts: list[str]) -> np.ndarray:
    """Sorted unique hashes of trimmed records."""
    h = [
        int.from_bytes(hashlib.blake2b(t.strip().encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
        >> 1
        for t in texts
    ]
    return np.unique(np.array(h, dtype=np.uint64))


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)


def _poly(cp: np.ndarray, width: int) -> np.ndarray:
    """Hash of every window of ``width`` code points (len(cp) - width + 1 of them), wrapping uint64."""
    n = len(cp) - width + 1
    h = np.zeros(max(n, 0), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):
            h = h * _P + cp[j : j + n]
    return h


def window_hashes(text: str) -> np.ndarray:
    """Hashes of the WINDOW-character windows of ``text`` that start at an anchor (unsorted)."""
    cp = _codepoints(text)
    if len(cp) < WINDOW:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        anchor = _poly(cp, ANCHOR)[: len(cp) - WINDOW + 1]
        mixed = (anchor * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    starts = np.nonzero(mixed % np.uint64(EVERY) == 0)[0]
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    idx = starts[:, None] + np.arange(WINDOW)[None, :]
    windows = cp[idx]  # (anchors, WINDOW)
    h = np.zeros(len(starts), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(WINDOW):
            h = h * _P + windows[:, j]
    return h >> np.uint64(1)


SLICE = 1 << 18
"""Characters hashed at once: bounds the work arrays of ``window_hashes`` (a few MB each)."""


def window_parts(text: str) -> list[np.ndarray]:
    """The anchored-window hashes of every window that lies whole in ``text``, slice by slice
    (slices overlap by WINDOW - 1 characters, so none is missed), each part sorted and unique."""
    return [
        np.unique(window_hashes(text[lo : lo + SLICE + WINDOW - 1]))
        for lo in range(0, max(len(text) - WINDOW + 1, 0), SLICE)
    ]


def text_hashes(text: str) -> np.ndarray:
    """Sorted unique anchored-window hashes of a whole text in memory."""
    return _sorted_unique(window_parts(text))


class Index:
    """A sorted hash array and the rule it answers for ('records' or 'text')."""

    def __init__(self, hashes: np.ndarray, kind: str):
        self.hashes, self.kind = hashes, kind

    def _has(self, h: np.ndarray) -> np.ndarray:
        if len(self.hashes) == 0 or len(h) == 0:
            return np.zeros(len(h), dtype=bool)
        at = np.searchsorted(self.hashes, h)
        at[at >= len(self.hashes)] = 0
        return self.hashes[at] == h

    def is_copy(self, sample: str) -> bool:
        """True when ``sample`` counts as a copy of the training data under this index's rule."""
        if self.kind == "records":
            return bool(self._has(record_hashes([sample]))[0])
        return bool(self._has(window_hashes(sample)).any())


def load_or_build(
    run_folder: Path,
    corpus: str | list[str] | None,
    corpus_sha: str | None,
    records_mode: str | None,
    label_field: str | None,
) -> Index:
    """The run's index, built from its corpus file on first use. Raises CharrnnError when the run
    was trained from stdin or text in memory, or its corpus file is gone or changed (nothing to
    compare with): ``corpus_sha`` is the checkpoint's hash of the text it was trained on."""
    from charrnn.files import atomic_write

    kind = "records" if records_mode else "text"
    if corpus is None:
        key = "the built-in default corpus"
    else:
        from charrnn.data.corpus import fingerprint

        inputs = corpus if isinstance(corpus, list) else [corpus]
        unreadable = next((c for c in inputs if c == "-" or not Path(c).exists()), None)
        stamp = None if unreadable else fingerprint(inputs)  # several files and folders too
        if stamp is None:
            where = "stdin" if unreadable == "-" else unreadable or corpus
            raise CharrnnError(
                f"--novel compares samples with the training corpus, but {where} cannot be read again; "
                "retrain from a file, or drop --novel"
            )
        key = f"{stamp}|{records_mode}|{label_field}"
    digest = hashlib.sha256(f"{kind}|{WINDOW}|{ANCHOR}|{EVERY}|{key}".encode()).hexdigest()[:16]
    path = run_folder / f"novelty-{kind}-{digest}.npy"
    if path.is_file():
        try:
            return Index(np.load(path, mmap_mode="r"), kind)
        except (OSError, ValueError):
            pass  # damaged: build it again
    hashes, sha = _build(corpus, records_mode, label_field)
    if corpus_sha is not None and sha != corpus_sha:
        where = corpus or "the built-in default corpus"
        raise CharrnnError(
            f"--novel compares samples with the training corpus, but {where} has changed since training "
            "(or the run was trained on text in memory); drop --novel, or retrain"
        )
    try:
        for old in run_folder.glob(f"novelty-{kind}-*.npy"):
            old.unlink()
        atomic_write(path, lambda f: np.save(f, hashes), sync=False)
    except OSError:
        pass  # a cache: a read-only run folder still answers, from memory
    return Index(hashes, kind)


def _build(corpus: str | list[str] | None, records_mode: str | None, label_field: str | None) -> tuple[np.ndarray, str]:
    """(sorted unique hashes, the corpus' sha). Free text and one-record-per-line modes (lines,
    jsonl) stream the corpus chunk by chunk, so memory holds the hashes, not the text; paragraphs
    and CSV (whose records may span chunks in ways only a parser knows) read the text whole."""
    from charrnn.data.corpus import iter_text
    from charrnn.data.records import parse

    kind = (records_mode or "text").partition(":")[0]
    parts: list[np.ndarray] = []
    sha = None
    if kind in ("paragraphs", "csv"):
        chunks = []
        for piece, done in iter_text(corpus):
            chunks.append(piece)
            sha = done or sha
        return record_hashes(parse("".join(chunks), records_mode, label_field).texts), sha
    tail = ""
    for piece, done in iter_text(corpus):
        if done is not None:
            sha = done
        text = tail + piece
        if kind == "text":
            parts += window_parts(text)  # windows that start in the tail were not whole before
            tail = text[-(WINDOW - 1) :]
        else:  # lines, jsonl: records are whole lines
            cut = text.rfind("\n") + 1 if done is None else len(text)
            if cut:
                parts.append(
                    record_hashes(parse(text[:cut], records_mode, label_field).texts)
                    if text[:cut].strip()
                    else np.zeros(0, dtype=np.uint64)
                )
            tail = text[cut:]
    return _sorted_unique(parts), sha


def _sorted_unique(parts: list[np.ndarray]) -> np.ndarray:
    """np.unique of the concatenated parts, sorted in place: about twice the hashes' size at the
    peak rather than three times."""
    if not parts:
        return np.zeros(0, dtype=np.uint64)
    a = np.concatenate(parts)
    parts.clear()
    a.sort()
    keep = np.empty(len(a), dtype=bool)
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


# ---------------------------------------------------------------- drawing until enough are kept

ROUND = 256
"""Samples drawn side by side in one round of a draw that drops samples (a round lasts as long as
its longest sample: kept small)."""


@dataclass
class Sample:
    """One curated sample: its text (without the prompt), where it came from (``seed`` and its
    ``index`` among that seed's samples), its temperature, and its mean loss under the model in
    nats per character (None unless asked for)."""

    text: str
    index: int
    seed: int
    temperature: float
    nats_per_char: float | None = None


@dataclass
class Draw:
    """What ``draw`` kept, and how many it drew and dropped."""

    samples: list[Sample]
    drawn: int
    dropped_copies: int
    dropped_repeats: int
    dropped_empty: int = 0

    @property
    def summary(self) -> dict[str, int]:
        return {
            "kept": len(self.samples),
            "drawn": self.drawn,
            "dropped_copies": self.dropped_copies,
            "dropped_repeats": self.dropped_repeats,
            "dropped_empty": self.dropped_empty,
        }


def draw(
    texts: Callable[[int, float, int], list[str]],
    n: int,
    prompt: str,
    temperatures: list[float],
    seed: int,
    *,
    records: bool,
    index: Index | None = None,
    unique: bool = False,
    max_attempts: int | None = None,
) -> Draw:
    """``n`` samples at each of ``temperatures``, drawn with ``texts(k, temperature, seed)`` (k
    samples of a seed, side by side) and kept unless: a copy of the training data under
    ``index`` (a records model: the whole record, prompt included; free text: the sample),
    a repeat of one kept (``unique``: records trimmed), or an empty record (a records model's
    sample is never empty). Rounds go on with seeds derived from ``seed`` (the first round uses
    ``seed`` itself, so with nothing dropped sample i is that seed's sample i) until ``n`` are
    kept or ``max_attempts`` (default 10 n + 100) were drawn per temperature. Raises UsageError
    for ``max_attempts`` below 1."""
    check_max_attempts(max_attempts)
    limit = max_attempts if max_attempts is not None else 10 * n + 100
    dropping = index is not None or unique
    out = Draw([], 0, 0, 0)
    for temp in temperatures:
        kept: list[Sample] = []
        seen: set[str] = set()
        drawn, rounds = 0, 0
        while len(kept) < n and drawn < limit:
            want = min(limit - drawn, n - len(kept))
            if dropping:  # draw ahead: some will go
                want = min(limit - drawn, 2 * (n - len(kept)) + 8, ROUND)
            round_seed = seed if rounds == 0 else _derive(seed, temp, rounds)
            for i, text in enumerate(texts(want, temp, round_seed)):
                drawn += 1
                record = prompt + text
                if records and not record.strip():
                    out.dropped_empty += 1
                elif index is not None and index.is_copy(record if records else text):
                    out.dropped_copies += 1
                elif unique and record.strip() in seen:
                    out.dropped_repeats += 1
                else:
                    seen.add(record.strip())
                    kept.append(Sample(text, i, round_seed, temp))
                    if len(kept) == n:
                        break
            rounds += 1
        out.drawn += drawn
        out.samples += kept
    return out


def check_max_attempts(max_attempts: int | None) -> None:
    """UsageError for a limit of attempts below 1 (None: the default)."""
    if max_attempts is not None and max_attempts < 1:
        raise UsageError(f"--max-attempts must be at least 1, not {max_attempts}")


def _derive(seed: int, temperature: float, round_: int) -> int:
    """The seed of a further round of curated sampling: a pure function of its inputs."""
    digest = hashlib.blake2b(f"{seed}|{temperature!r}|{round_}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 33
