"""Tokenizers for texts of any size, fed chunk by chunk and vectorised with numpy.

They give exactly what ``Tokenizer`` gives (the same vocabulary, the same ids; the tests
compare them), without a Python step per character or per word:

- characters: a chunk becomes its code points (``str.encode('utf-32-le')`` viewed as uint32),
  counted with ``np.bincount`` and mapped to ids through a lookup table of all code points;
- words: every code point gets its class (word, space, digit, joiner) from a table built with
  Python's own ``re`` (so ``\\w``, ``\\s``, ``\\d`` mean what they mean in ``Tokenizer``), token
  starts are where the class changes, and each token gets a 64-bit key (a polynomial hash of
  random per-code-point values), looked up in a table of the keys seen so far. Two different
  words share a key with probability about n^2 / 2^64 for n distinct words (1 in 10^7 at a
  million); their lengths are checked too.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from charrnn.data.tokenizer import UNK, WORD_RES

N_CODE_POINTS = 0x110000
_W, _S, _D, _J, _N = 1, 2, 4, 8, 16  # word char, whitespace, decimal digit, word joiner, digit joiner


def code_points(text: str) -> np.ndarray:
    """(len(text),) code points: uint8 for ASCII text, else uint32."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


def smallest_dtype(vocab_size: int) -> np.dtype:
    """The smallest integer type that holds every id (torch-rnn's rule)."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 2**15:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


class CharCounter:
    """Pass 1 at character level: which characters occur, and how often."""

    def __init__(self) -> None:
        self.counts = np.zeros(256, np.int64)

    def feed(self, text: str) -> None:
        c = np.bincount(code_points(text))
        if len(c) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(c) - len(self.counts)))
        self.counts[: len(c)] += c

    def vocab(self) -> list[str]:
        """Sorted by code point, as ``Tokenizer.build`` sorts them."""
        return [chr(i) for i in np.flatnonzero(self.counts)]


class CharEncoder:
    """Pass 2 at character level: text -> int32 ids, -1 for characters not in ``vocab``."""

    def __init__(self, vocab: list[str]) -> None:
        self.lut = np.full(N_CODE_POINTS, -1, np.int32)
        single = [(i, ord(c)) for i, c in enumerate(vocab) if len(c) == 1]  # not <unk>, <|end|>, ...
        if single:
            ids, cps = zip(*single)
            self.lut[list(cps)] = ids

    def encode(self, text: str) -> np.ndarray:
        return self.lut[code_points(text)]


@functools.cache
def _classes() -> np.ndarray:
    """(0x110000,) uint8 class bits of every code point, from ``re`` itself."""
    every = np.arange(N_CODE_POINTS, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    cls = np.zeros(N_CODE_POINTS, np.uint8)
    for bit, pattern in ((_W, r"\w+"), (_S, r"\s+"), (_D, r"\d+")):
        for m in re.finditer(pattern, every):
            cls[m.start() : m.end()] |= bit
    for c in "'’-":
        cls[ord(c)] |= _J
    for c in ".,":
        cls[ord(c)] |= _N
    return cls


@functools.cache
def _code_point_values() -> np.ndarray:
    """A fixed random 64-bit value per code point."""
    return np.random.default_rng(0x5EED).integers(0, 2**64 - 1, N_CODE_POINTS, dtype=np.uint64, endpoint=True)


_P = 0x9E3779B97F4A7C15  # odd, so invertible mod 2^64


@functools.cache
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i mod 2^64 for i < n (numpy's uint64 arithmetic wraps)."""
    powers = np.full(n, _P, np.uint64)
    powers[0] = 1
    inverse = np.full(n, pow(_P, -1, 2**64), np.uint64)
    inverse[0] = 1
    return np.cumprod(powers), np.cumprod(inverse)


_LEN_MIX = np.uint64(0xD6E8FEB86659FD93)


def _keys(cp: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The 64-bit key of each token cp[s:e]: sum of value[c_k] * P^k over its code points, mixed
    with its length; position independent (scaled by P^-s)."""
    n = len(cp)
    powers, inverse = _powers(_table_size(n))
    prefix = np.zeros(n + 1, np.uint64)
    np.cumsum(_code_point_values()[cp] * powers[:n], out=prefix[1:])
    keys = (prefix[ends] - prefix[starts]) * inverse[starts]
    keys ^= (ends - starts).astype(np.uint64) * _LEN_MIX
    return keys


_SLOT_BITS = 22


class WordIndexer:
    """Pass 1 at word level: splits chunks into tokens by the word ``rule`` and gives each distinct
    token an index in order of first appearance (``strings``), counting them (``counts``).

    ``feed`` returns the chunk's token indices (int32) and the text it kept back: a chunk is cut
    at the start of its last whitespace run, where no token can span the cut. With ``known``
    (a fixed vocabulary), tokens outside it get -1 and nothing is added, unless ``grow``: then
    they are indexed after the known ones."""

    def __init__(self, rule: int, known: list[str] | None = None, grow: bool = False) -> None:
        if rule not in WORD_RES:
            raise ValueError(f"unknown word rule {rule}")
        self.rule = rule
        self.strings: list[str] = []
        self.lengths = np.zeros(1024, np.int64)
        self.keys = np.zeros(1024, np.uint64)
        self.counts = np.zeros(1024, np.int64)
        self.index: dict[int, int] = {}
        self.slots = np.full(1 << _SLOT_BITS, -1, np.int32)
        self.frozen = False
        self.missing: dict[str, int] = {}
        """With ``known``: the tokens outside it (the first 1000 distinct) and their counts."""
        if known is not None:
            # A known string that is not one token under the rule (such as <unk>) is never matched.
            lengths = np.array([len(t) for t in known], np.int64)
            ends = np.cumsum(lengths)
            keys = _keys(code_points("".join(known)), ends - lengths, ends)
            for key, token in zip(keys.tolist(), known):
                self._add(key, token)
            self.frozen = not grow

    def __len__(self) -> int:
        return len(self.strings)

    def feed(self, text: str, final: bool) -> tuple[np.ndarray, str]:
        if not final:
            cut = self._cut(text)
            text, rest = text[:cut], text[cut:]
        else:
            rest = ""
        if not text:
            return np.zeros(0, np.int32), rest
        keys, starts, ends = self._split(text)
        ids = self._lookup(keys, starts, ends, text)
        return ids, rest

    def _cut(self, text: str) -> int:
        """The start of the last whitespace run that follows something else (0: none)."""
        for tail in (1 << 16, len(text)):  # the tail almost always has one
            base = max(len(text) - tail, 0)
            space = (_classes()[code_points(text[base:])] & _S) != 0
            edges = np.flatnonzero(space[1:] & ~space[:-1])
            if len(edges):
                return base + int(edges[-1]) + 1
        return 0

    def _split(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, starts, ends) of the tokens of ``text``."""
        cp = code_points(text)
        n = len(cp)
        cls = _classes()[cp]
        word = (cls & _W) != 0
        if self.rule >= 2 and n >= 3:
            digit = (cls & _D) != 0
            inner = cls[1:-1]
            joined = ((inner & _J) != 0) & word[:-2] & word[2:]
            joined |= ((inner & _N) != 0) & digit[:-2] & digit[2:]
            word[1:-1] |= joined
        space = (cls & _S) != 0
        other = ~(word | space)
        kind = space.view(np.uint8) + 2 * other.view(np.uint8)  # 0 word, 1 space, 2 other
        start = np.empty(n, bool)
        start[0] = True
        np.not_equal(kind[1:], kind[:-1], out=start[1:])
        start[1:] |= other[1:]
        starts = np.flatnonzero(start)
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:]
        ends[-1] = n
        return _keys(cp, starts, ends), starts, ends

    def _lookup(self, keys: np.ndarray, starts: np.ndarray, ends: np.ndarray, text: str) -> np.ndarray:
        cand = self.slots[(keys >> np.uint64(64 - _SLOT_BITS)).astype(np.intp)]
        hit = cand >= 0
        hit[hit] = self.keys[cand[hit]] == keys[hit]
        ids = cand.astype(np.int32)
        miss = np.flatnonzero(~hit)
        if len(miss):
            uniq, first, inverse, counts = np.unique(
                keys[miss], return_index=True, return_inverse=True, return_counts=True
            )
            found = np.empty(len(uniq), np.int32)
            for k in np.argsort(first, kind="stable").tolist():  # first appearance order
                key = int(uniq[k])
                g = self.index.get(key)
                if g is None:
                    t = miss[first[k]]
                    token = text[starts[t] : ends[t]]
                    if self.frozen:
                        g = -1
                        if token in self.missing or len(self.missing) < 1000:
                            self.missing[token] = self.missing.get(token, 0) + int(counts[k])
                    else:
                        g = self._add(key, token)
                found[k] = g
            ids[miss] = found[inverse.reshape(-1)]
        known = ids >= 0
        if np.any(self.lengths[ids[known]] != (ends - starts)[known]):
            raise RuntimeError("two different words share a hash key; please report this corpus")
        c = np.bincount(ids[known], minlength=len(self.strings))
        self.counts[: len(c)] += c
        return ids

    def _add(self, key: int, token: str) -> int:
        g = len(self.strings)
        self._grow(g + 1)
        self.strings.append(token)
        self.lengths[g] = len(token)
        self.keys[g] = key
        self.index.setdefault(key, g)
        slot = key >> (64 - _SLOT_BITS)
        if self.slots[slot] < 0:
            self.slots[slot] = g
        return g

    def _grow(self, n: int) -> None:
        if n > len(self.keys):
            size = max(n, 2 * len(self.keys))
            self.keys = np.pad(self.keys, (0, size - len(self.keys)))
            self.lengths = np.pad(self.lengths, (0, size - len(self.lengths)))
            self.counts = np.pad(self.counts, (0, size - len(self.counts)))


def _table_size(n: int) -> int:
    """Hash tables come in powers of two, so a few sizes serve every chunk."""
    return 1 << max(16, (n - 1).bit_length())


def word_vocab(indexer: WordIndexer, max_vocab: int | None, min_count: int) -> tuple[list[str], np.ndarray]:
    """``Tokenizer.build``'s word vocabulary from streamed counts: ``<unk>`` then the kept tokens
    (the most frequent, ties in order of first appearance), sorted; and the (len(indexer),) int32
    map from pass-1 indices to final ids (dropped tokens go to ``<unk>``, id 0)."""
    n = len(indexer)
    counts = indexer.counts[:n]
    order = np.argsort(-counts, kind="stable")
    kept = [int(i) for i in order if counts[i] >= min_count and indexer.strings[i] != UNK]
    if max_vocab is not None:
        kept = kept[: max(max_vocab - 1, 1)]
    vocab = [UNK] + sorted(indexer.strings[i] for i in kept)
    final = {t: i for i, t in enumerate(vocab)}
    remap = np.zeros(n, np.int32)
    for i in kept:
        remap[i] = final[indexer.strings[i]]
    return vocab, remap


def grown_vocab(indexer: WordIndexer, tok, max_vocab: int | None, min_count: int):
    """``Tokenizer.grown`` from streamed counts: (tokenizer, pass-1 index -> id map, tokens added).
    ``indexer`` was made with ``known=tok.vocab, grow=True``."""
    from charrnn.data.tokenizer import Tokenizer

    n_known, n = len(tok), len(indexer)
    counts = indexer.counts[n_known:n]
    order = np.argsort(-counts, kind="stable") + n_known
    new = [int(i) for i in order if counts[i - n_known] >= min_count and indexer.strings[i] != UNK]
    if max_vocab is not None:
        new = new[: max(0, max_vocab - n_known)]
    remap = np.full(n, tok.stoi.get(UNK, 0), np.int32)
    remap[:n_known] = np.arange(n_known)
    remap[new] = np.arange(n_known, n_known + len(new))
    added = [indexer.strings[i] for i in new]
    return (Tokenizer(tok.level, tok.vocab + added, tok.rule) if added else tok), remap, added
