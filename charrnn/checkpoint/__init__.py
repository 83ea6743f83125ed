"""Checkpoints: io.py (the format, atomic saves, safe loads, finding a run's checkpoint),
verify.py (the checksum and the consistency checks every load runs), describe.py (what
``charrnn info`` shows). The names most callers need are here."""

from charrnn.checkpoint.describe import describe, list_run
from charrnn.checkpoint.io import (
    DEFAULT_ROOT,
    FORMAT,
    load,
    load_model,
    prune_steps,
    resolve,
    save,
    step_file,
    step_files,
    tokenizer,
    write_text,
)
from charrnn.checkpoint.verify import digest

__all__ = [
    "DEFAULT_ROOT",
    "FORMAT",
    "describe",
    "digest",
    "list_run",
    "load",
    "load_model",
    "prune_steps",
    "resolve",
    "save",
    "step_file",
    "step_files",
    "tokenizer",
    "write_text",
]
