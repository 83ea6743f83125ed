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
from dataclasses import dataclass

from charrnn.errors import UsageError

MODES = ("lines", "paragraphs", "jsonl", "csv")


@dataclass
class Records:
    texts: list[str]
    labels: list[str] | None = None
    """One label per record, or None when the records carry none."""


def check_mode(mode: str | None, label_field: str | None = None) -> None:
    """Raise UsageError for a --records value that is not one of MODES (with FIELD/COLUMN where needed)."""
    if mode is None:
        if label_field:
            raise UsageError("--label-field needs --records jsonl:FIELD or csv:COLUMN")
        return
    kind, _, field = mode.partition(":")
    if kind not in MODES:
        raise UsageError(f"--records must be lines, paragraphs, jsonl:FIELD or csv:COLUMN, not {mode!r}")
    if kind in ("jsonl", "csv") and not field:
        raise UsageError(f"--records {kind} needs the {'field' if kind == 'jsonl' else 'column'} that holds the text, e.g. {kind}:text")
    if kind in ("lines", "paragraphs") and field:
        raise UsageError(f"--records {kind} takes no field; use --records {kind}")
    if label_field and kind not in ("jsonl", "csv"):
        raise UsageError("--label-field needs --records jsonl:FIELD or csv:COLUMN (lines and paragraphs carry no labels)")


def parse(text: str, mode: str, label_field: str | None = None) -> Records:
    """The records of a corpus. Raises UsageError for input that does not fit the mode (a line
    that is not JSON, a missing field or column) or that holds no record."""
    check_mode(mode, label_field)
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
            raise UsageError(f"line {n} of the corpus is not JSON; --records jsonl:{field} reads one JSON object per line") from None
        if not isinstance(obj, dict) or field not in obj:
            raise UsageError(f"line {n} of the corpus has no field {field!r}; give the field that holds the text: --records jsonl:FIELD")
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
