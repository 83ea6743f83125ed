"""Character and word tokenizers: build from a corpus, encode, decode, to/from plain dicts.

Both are lossless: ``decode(encode(text)) == text`` for any text made of known tokens.
Characters are exact Unicode code points (a BOM, CR, tabs are data). Words keep the
whitespace between them as tokens of their own, so decoded text reads like the corpus.

The word rule (``WORD_RULE`` 2): a token is a run of whitespace, or a word, or any other single
character. A word is a run of word characters (letters, digits, underscore, in any script) that
may hold an apostrophe (' or ’) or a hyphen between two word characters, and a '.' or ','
between two digits: ``don't``, ``well-known``, ``rock'n'roll``, ``3.14``, ``1,000`` stay whole;
``dogs'``, ``--`` and a sentence's final '.' are tokens of their own. Rule 1 (checkpoints made
before it) split at every apostrophe, hyphen and dot. ``token_stream`` applies the same rules
to large texts with numpy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from charrnn.errors import CharrnnError, UsageError

UNK = "<unk>"
WORD_RULE = 2
"""The word rule new tokenizers use (see the module docstring)."""
# Records models (records.py): the boundary token, and one start token per label. Splitting text
# never produces them (a character token is one character; WORD_RE never matches "<|").
END = "<|end|>"
LABEL_PREFIX, LABEL_SUFFIX = "<|label:", "|>"


def label_token(label: str) -> str:
    return f"{LABEL_PREFIX}{label}{LABEL_SUFFIX}"


# Every character falls in exactly one alternative, so the tokens partition the text.
WORD_RES = {
    1: re.compile(r"\w+|[^\w\s]|\s+"),
    2: re.compile(r"(?:\w|(?<=\w)['’-](?=\w)|(?<=\d)[.,](?=\d))+|[^\w\s]|\s+"),
}
WORD_RE = WORD_RES[WORD_RULE]


class UnknownTokenError(UsageError):
    """Text holds tokens the model never saw (a prompt, a text to score): the message names them
    and the --unknown setting that takes them."""


def show_tokens(tokens: Iterable[str], limit: int = 8) -> str:
    items = sorted(set(tokens))
    shown = ", ".join(repr(t) for t in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class Tokenizer:
    """A vocabulary of string tokens; ``level`` says how text is split into them."""

    def __init__(self, level: str, vocab: list[str], rule: int = WORD_RULE, records: str | None = None):
        """``records``: the kind of records a records model was trained on (lines, paragraphs,
        jsonl, csv), which says what a record may hold: a lines record never holds a newline."""
        self.level, self.records = level, records
        if rule not in WORD_RES:
            raise CharrnnError(f"unknown word rule {rule!r}; this checkpoint needs a newer charrnn")
        self.rule = rule
        self.vocab = list(vocab)
        self.stoi = {t: i for i, t in enumerate(self.vocab)}
        if len(self.stoi) != len(self.vocab):
            raise CharrnnError("tokenizer vocabulary has duplicate tokens; the checkpoint is damaged")
        self.unk_id = self.stoi.get(UNK) if level == "word" else None
        self.end_id = self.stoi.get(END)
        self.labels = {
            t[len(LABEL_PREFIX) : -len(LABEL_SUFFIX)]: i
            for i, t in enumerate(self.vocab)
            if t.startswith(LABEL_PREFIX) and t.endswith(LABEL_SUFFIX) and len(t) > 1
        }

    def __len__(self) -> int:
        return len(self.vocab)

    @classmethod
    def build(cls, text: str, level: str = "char", max_vocab: int | None = None, min_count: int = 1) -> Tokenizer:
        if not text:
            raise UsageError("the corpus is empty; give a file with some text in it")
        if level == "char":
            return cls("char", sorted(set(text)))
        counts = Counter(WORD_RE.findall(text))  # the reference for token_stream's word counts
        kept = [t for t, n in counts.most_common() if n >= min_count and t != UNK]
        if max_vocab is not None:
            kept = kept[: max(max_vocab - 1, 1)]
        if not kept:
            top = max(counts.values(), default=0)
            raise UsageError(
                f"no word occurs {min_count} times; use --min-count {top} or less (the most frequent occurs {top} times)"
            )
        return cls("word", [UNK] + sorted(kept))

    def grown(self, text: str, max_vocab: int | None = None, min_count: int = 1) -> tuple[Tokenizer, list[str]]:
        """This vocabulary with the tokens of ``text`` it lacks appended (ids of known tokens stay
        put), for fine-tuning on new text: every new character; at word level the new words seen
        at least ``min_count`` times, most frequent first, while the vocabulary stays within
        ``max_vocab``. Returns (tokenizer, the tokens added)."""
        if self.level == "char":
            new = sorted(set(text) - set(self.stoi))
        else:
            counts = Counter(t for t in self.split(text) if t not in self.stoi and t != UNK)
            new = [t for t, n in counts.most_common() if n >= min_count]
            if max_vocab is not None:
                new = new[: max(0, max_vocab - len(self.vocab))]
        return (Tokenizer(self.level, self.vocab + new, self.rule, self.records), new) if new else (self, [])

    def split(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else WORD_RES[self.rule].findall(text)

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """Token ids of ``text``. ``unknown``: 'error' names unseen tokens, 'skip' drops them,
        'unk' maps them to <unk> (word level only), 'auto' is 'unk' for word models (any new text
        has new words) and 'error' for character models."""
        if unknown == "auto":
            unknown = "unk" if self.unk_id is not None else "error"
        stoi = self.stoi
        pieces = self.split(text)
        try:
            return [stoi[p] for p in pieces]
        except KeyError:
            pass
        missing = [p for p in pieces if p not in stoi]
        if unknown == "skip":
            return [stoi[p] for p in pieces if p in stoi]
        if unknown == "unk" and self.unk_id is not None:
            return [stoi.get(p, self.unk_id) for p in pieces]
        what = "characters" if self.level == "char" else "words"
        hint = "use --unknown skip to drop them" + ("" if unknown == "error" else " (a character model has no <unk>)")
        raise UnknownTokenError(f"the model never saw these {what}: {show_tokens(missing)}; {hint}")

    def encode_counted(self, text: str, unknown: str = "error") -> tuple[list[int], Counter]:
        """Token ids of ``text``, as ``encode`` gives them, and the unseen tokens it left out (with
        'skip'), counted. Scoring uses it: what can be scored is, and the caller says what was not."""
        pieces = self.split(text)
        stoi = self.stoi
        try:
            return [stoi[p] for p in pieces], Counter()
        except KeyError:
            pass
        if unknown == "skip":
            return [stoi[p] for p in pieces if p in stoi], Counter(p for p in pieces if p not in stoi)
        return self.encode(text, unknown), Counter()

    def decode(self, ids: Iterable[int]) -> str:
        vocab = self.vocab
        return "".join(vocab[i] for i in ids)

    def char_lengths(self) -> list[int]:
        """Characters in each token, for bits per character: a record's end counts as one (the
        newline that would end a line), a label as none."""
        return [1 if t == END else 0 if i in self.labels.values() else len(t) for i, t in enumerate(self.vocab)]

    def with_records(self, kind: str, labels: list[str] | None = None) -> Tokenizer:
        """This vocabulary for records of ``kind`` (lines, paragraphs, jsonl, csv), with the
        boundary token and a start token per label appended where it lacks them."""
        extra = [END] + [label_token(l) for l in sorted(set(labels or []))]
        return Tokenizer(self.level, self.vocab + [t for t in extra if t not in self.stoi], self.rule, kind)

    def record_start(self, label: str | None = None) -> int:
        """The id a record starts from: its label's token, or the boundary. Raises UsageError for
        a label the model does not know (naming those it knows), or a label on an unlabelled model."""
        from charrnn.errors import UsageError

        if label is None:
            return self.end_id
        if not self.labels:
            raise UsageError("this model was trained without labels; drop --label")
        if label not in self.labels:
            raise UsageError(f"unknown label {label!r}; the model knows: {', '.join(sorted(self.labels))}")
        return self.labels[label]

    def to_dict(self) -> dict[str, Any]:
        d = {"level": self.level, "vocab": self.vocab}
        if self.level == "word":
            d["rule"] = self.rule
        if self.records is not None:
            d["records"] = self.records
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], records: str | None = None) -> Tokenizer:
        """``records``: the records kind of a checkpoint whose tokenizer does not name it (its
        run's config does)."""
        return cls(d["level"], d["vocab"], d.get("rule", 1), d.get("records") or records)  # no rule: before rule 2


def encode_prompt(tok: Tokenizer, prompt: str, unknown: str = "error") -> list[int]:
    ids = tok.encode(prompt, unknown=unknown)
    if not ids:
        # No prompt: start as a document would, after a newline where the model knows one.
        start = "\n" if "\n" in tok.stoi else None
        ids = [tok.stoi[start] if start else 0]
    return ids


def scoring_mode(tok: Tokenizer, unknown: str) -> str:
    """What scoring does with unseen tokens: ``auto`` is 'unk' for word models (any new text has
    new words) and 'skip' for character models (they are left out and counted)."""
    if unknown == "auto":
        return "unk" if tok.unk_id is not None else "skip"
    return unknown


def describe_left_out(left_out: Counter, limit: int = 8) -> str:
    """'3 tokens (2 x '?', 1 x '(')': how many tokens were left out and which."""
    n = sum(left_out.values())
    shown = ", ".join(f"{c} x {t!r}" for t, c in left_out.most_common(limit))
    more = f" and {len(left_out) - limit} more kinds" if len(left_out) > limit else ""
    return f"{n} token{'s' if n != 1 else ''} ({shown}{more})"


def banned_tokens(tok: Tokenizer) -> list[int]:
    """Tokens sampling never emits: the word model's <unk>, label tokens, and in a model of
    one record per line every token that holds a newline (no training record holds one)."""
    banned = [tok.stoi[UNK]] if UNK in tok.stoi and tok.level == "word" else []
    if tok.records == "lines":
        banned += [i for i, t in enumerate(tok.vocab) if "\n" in t and i != tok.end_id]
    return sorted(set(banned + list(tok.labels.values())))
