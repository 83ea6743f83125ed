"""Records: a corpus as a list of documents (names, titles, one-liners, recipes), each with an
optional label, for models that learn where a record starts and ends.

``--records lines`` takes one record per line, ``paragraphs`` one per blank-line-separated block,
``jsonl:FIELD`` the string FIELD of each JSON object per line, ``csv:COLUMN`` a column of a CSV
file with a header row (Python's csv module). A label comes from ``--label-field`` (a JSON field
or a CSV column). Records are trimmed of surrounding whitespace; empty ones are skipped.

The tokenizer gives every record model a boundary token of its own (``END``, never produced
by splitting text): a record is trained as ``start, r1 .. rn, END`` where ``start`` is END too,
or the record's label token (``label_token(name)``) in a labelled model, so sampling can begin a
fresh record of a label and knows where it ends.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass

from charrnn.config import check_records
from charrnn.data.tokenizer import Tokenizer, encode_prompt
from charrnn.errors import UsageError


@dataclass
class Records:
    texts: list[str]
    labels: list[str] | None = None
    """One label per record, or None when the records carry none."""


def encode_record(
    tok: Tokenizer, text: str, label: str | None = None, unknown: str = "error", end: bool = True
) -> tuple[list[int], Counter]:
    """A record as a records model reads it: its start (the label's token, or END), its tokens,
    and END (left off with ``end`` False: the beginning of a record still to be written); and
    the unseen tokens left out under ``unknown`` (see ``Tokenizer.encode_counted``). Raises
    UsageError for a label the model does not know, UnknownTokenError for unseen tokens under
    'error'. Every place that turns a record into ids calls this."""
    ids, left_out = tok.encode_counted(text, unknown)
    return [tok.record_start(label)] + ids + ([tok.end_id] if end else []), left_out


def prompt_ids(tok: Tokenizer, prompt: str, unknown: str = "error", label: str | None = None) -> list[int]:
    """The ids sampling feeds before its first draw: a records model's record start (of
    ``label``) and the prompt as the record's beginning; else the prompt (``encode_prompt``).
    Raises UsageError for a label on a model without labels or an unknown one,
    UnknownTokenError for prompt tokens the model never saw (``unknown`` 'error')."""
    if tok.end_id is not None:
        return encode_record(tok, prompt, label, unknown, end=False)[0]
    if label is not None:
        raise UsageError("--label needs a records model trained with --label-field; drop --label")
    return encode_prompt(tok, prompt, unknown)


def parse(text: str, mode: str, label_field: str | None = None) -> Records:
    """The records of a corpus. Raises UsageError for input that does not fit the mode (a line
    that is not JSON, a missing field or column) or that holds no record."""
    check_records(mode, label_field)
    kind, _, field = mode.partition(":")
    if kind == "lines":
        recs = Records([t.strip() for t in text.split("\n")])
    elif kind == "paragraphs":
        recs = Records([t.strip() for t in text.replace("\r\n", "\n").split("\n\n")])
    elif kind == "jsonl":
        recs = _jsonl(text, field, label_field)
    else:
        recs = _csv(text, field, label_field)
    keep = [i for i, t in enumerate(recs.texts) if t]
    if not keep:
        raise UsageError(f"the corpus holds no {kind} record; check --records")
    return Records([recs.texts[i] for i in keep], None if recs.labels is None else [recs.labels[i] for i in keep])


def _jsonl(text: str, field: str, label_field: str | None) -> Records:
    texts, labels = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(
                f"line {n} of the corpus is not JSON; --records jsonl:{field} reads one JSON object per line"
            ) from None
        if not isinstance(obj, dict) or field not in obj:
            raise UsageError(
                f"line {n} of the corpus has no field {field!r}; give the field that holds the text: --records jsonl:FIELD"
            )
        texts.append(str(obj[field]))
        if label_field:
            if label_field not in obj:
                raise UsageError(f"line {n} of the corpus has no label field {label_field!r}")
            labels.append(str(obj[label_field]))
    return Records(texts, labels if label_field else None)


def _csv(text: str, column: str, label_field: str | None) -> Records:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    for name in [column] + ([label_field] if label_field else []):
        if name not in header:
            raise UsageError(f"the CSV header has no column {name!r}; its columns: {', '.join(header) or 'none'}")
    texts, labels = [], []
    for row in reader:
        texts.append(row[column] or "")
        if label_field:
            labels.append(row[label_field] or "")
    return Records(texts, labels if label_field else None)
