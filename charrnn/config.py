"""Run configuration: one dataclass per concern, YAML in, plain dicts out.

A field left at ``None`` means "choose for me": the trainer sizes it from the
corpus and the time budget (see ``autosize.py``) and saves the resolved value.
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import math
import os
import re
import textwrap
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from charrnn.errors import UsageError

CELLS = ("lstm", "gru", "rnn")
LEVELS = ("char", "word")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BATCHING = ("stream", "random")


def check_choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise UsageError(f"{name} must be one of {', '.join(options)}, not {value!r}")


def _positive(name: str, value: float | None, allow_zero: bool = False, most: float = math.inf) -> None:
    """A finite number > 0 (>= 0 with ``allow_zero``) and at most ``most``, or None (not given)."""
    if value is None:
        return
    low = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number {low}, not {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > most:
        upper = f" and at most {most}" if most < math.inf else ""
        raise UsageError(f"{name} must be a finite number {low}{upper}, not {value}")


def _fraction(name: str, value: float | None, closed_top: bool = False) -> None:
    """A number in [0, 1) ([0, 1] with ``closed_top``), or None."""
    if value is None:
        return
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (0 <= value <= 1 if closed_top else 0 <= value < 1)
    )
    if not ok:
        raise UsageError(f"{name} must be in [0, 1{']' if closed_top else ')'}, not {value}")


RECORDS = ("lines", "paragraphs", "jsonl", "csv")
"""The kinds of records ``--records`` reads (charrnn/data/records.py parses them)."""


def check_records(mode: str | None, label_field: str | None = None) -> None:
    """Raise UsageError for a --records value that is not one of RECORDS (with FIELD/COLUMN where needed)."""
    if mode is None:
        if label_field:
            raise UsageError("--label-field needs --records jsonl:FIELD or csv:COLUMN")
        return
    kind, _, field = mode.partition(":")
    if kind not in RECORDS:
        raise UsageError(f"--records must be lines, paragraphs, jsonl:FIELD or csv:COLUMN, not {mode!r}")
    if kind in ("jsonl", "csv") and not field:
        raise UsageError(
            f"--records {kind} needs the {'field' if kind == 'jsonl' else 'column'} that holds the text, e.g. {kind}:text"
        )
    if kind in ("lines", "paragraphs") and field:
        raise UsageError(f"--records {kind} takes no field; use --records {kind}")
    if label_field and kind not in ("jsonl", "csv"):
        raise UsageError(
            "--label-field needs --records jsonl:FIELD or csv:COLUMN (lines and paragraphs carry no labels)"
        )


# Bounds that keep a typo from asking for terabytes: a 16384-wide LSTM layer is already 4 GB of fp32.
MAX_WIDTH = 16384
MAX_LAYERS = 64
MAX_SEED = 2**63 - 1
MAX_PARAMETERS = 10**9  # 4 GB of fp32 weights, 12 GB more for AdamW's moments and the gradients
MAX_STREAMS = 65536
YAML_MAX_BYTES = 1 << 20


def auto(text: str = "auto", **more) -> dict:
    """A field's metadata: what None resolves to, for the help text (``[default: auto]``)."""
    return {"default": text, **more}


@dataclass
class TokenizerConfig:
    level: str = field(default="char", metadata={"choices": LEVELS})
    """Tokens: characters (every Unicode character, exactly) or words (words, punctuation and
    whitespace runs)."""
    max_vocab: int | None = field(default=None, metadata=auto("all"))
    """Word level: keep the N most frequent tokens; the rest become <unk>."""
    min_count: int = 1
    """Word level: tokens seen fewer times become <unk>."""

    def __post_init__(self) -> None:
        check_choice("--level", self.level, LEVELS)
        _positive("--max-vocab", self.max_vocab, most=2**31 - 1)
        _positive("--min-count", self.min_count)


@dataclass
class DataConfig:
    corpus: str | list[str] | None = field(default=None, metadata={"cli": False})
    """The text file (- for stdin), or several files and folders; None: the built-in default corpus."""
    val_fraction: float = 0.1
    """The tail of the corpus held out for validation (nanoGPT's split)."""
    seq_len: int | None = field(default=None, metadata=auto())
    """Tokens per truncated-BPTT chunk."""
    batch_size: int | None = field(default=None, metadata=auto())
    """Streams per step."""
    batching: str = field(default="stream", metadata={"choices": BATCHING})
    """stream: B contiguous streams, the state carried from chunk to chunk; random: random windows."""
    records: str | None = field(default=None, metadata=auto("free text"))
    """Train on records: lines, paragraphs, jsonl:FIELD or csv:COLUMN."""
    label_field: str | None = None
    """Records: the JSON field or CSV column of each record's label, to condition on."""

    def __post_init__(self) -> None:
        _fraction("--val-fraction", self.val_fraction)
        _positive("--seq-len", self.seq_len, most=2**31 - 1)
        _positive("--batch-size", self.batch_size, most=2**31 - 1)
        check_choice("--batching", self.batching, BATCHING)
        check_records(self.records, self.label_field)


@dataclass
class ModelConfig:
    cell: str = field(default="lstm", metadata={"choices": CELLS})
    """Recurrent cell: LSTM, GRU or a plain tanh RNN."""
    layers: int | None = field(default=None, metadata=auto())
    """Recurrent layers."""
    hidden: int | None = field(default=None, metadata=auto())
    """Units per layer."""
    embed: int | None = field(default=None, metadata=auto())
    """Embedding width."""
    dropout: float | None = field(default=None, metadata=auto("0; 0.1-0.2 where the run would overfit"))
    """Locked dropout on the embedding, between layers and before the head."""

    def __post_init__(self) -> None:
        check_choice("--cell", self.cell, CELLS)
        _positive("--layers", self.layers, most=MAX_LAYERS)
        _positive("--hidden", self.hidden, most=MAX_WIDTH)
        _positive("--embed", self.embed, most=MAX_WIDTH)
        _fraction("--dropout", self.dropout)
        if self.layers and self.hidden:
            # Each layer's gates: (input + hidden + 2 biases) x gates*hidden; the embedding and head
            # depend on the vocabulary, small beside this for any size that could be meant.
            H, E = self.hidden, self.embed or self.hidden
            gates = {"lstm": 4, "gru": 3, "rnn": 1}[self.cell]
            params = sum(gates * H * ((E if l == 0 else H) + H + 2) for l in range(self.layers))
            if params > MAX_PARAMETERS:
                raise UsageError(
                    f"{self.layers} layers of {H} units are {params / 1e9:.1f} billion parameters, "
                    f"more than {MAX_PARAMETERS / 1e9:g} billion; lower --hidden or --layers"
                )


TEN_YEARS = 10 * 365 * 86400
"""The longest --time-budget, in seconds."""


@dataclass
class TrainConfig:
    lr: float | None = field(default=None, metadata=auto())
    """Peak learning rate of AdamW."""
    min_lr_ratio: float = 0.0
    """The learning rate decays linearly to lr x this at the end."""
    warmup_steps: int | None = field(default=None, metadata=auto("50, at most a fifth of --max-steps or --epochs"))
    """Linear warmup steps."""
    weight_decay: float | None = field(default=None, metadata=auto("0.1; 0.2 where the run would overfit"))
    """AdamW weight decay of the weight matrices (not biases or embeddings)."""
    grad_clip: float = 5.0
    """Clip the global gradient norm to this (0: off)."""
    max_steps: int | None = None
    """Stop after N optimizer steps."""
    epochs: float | None = None
    """Stop after N passes over the training split."""
    time_budget: float | str | None = field(default=None, metadata=auto("5m when no other limit is given"))
    """Wall clock for the whole command, tokenizing and saving included: 90s, 5m, 1h."""
    eval_every: int | None = field(default=None, metadata=auto("about four evaluations a run"))
    """Steps between evaluations."""
    eval_tokens: int | None = field(default=None, metadata=auto("250000; fewer for vocabularies over 1024"))
    """Validation tokens each evaluation scores at most, in evenly spaced windows (0: all)."""
    device: str = field(default="auto", metadata={"choices": DEVICES})
    """Where to train: auto picks a GPU where there is one."""
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    """Autocast precision: auto picks bf16 on CPUs that have it, fp16 on CUDA, where faster."""
    seed: int = 1337
    """Random seed: the same seed gives the same run on the same machine."""
    out: str | None = field(default=None, metadata={"flags": ("--out", "-o"), "default": "checkpoints/<corpus name>"})
    """Run folder."""
    sample_every: int | None = field(default=None, metadata=auto("1"))
    """A sample at every N-th evaluation, shown and kept in samples.jsonl (0: none)."""
    sample_length: int | None = field(default=None, metadata=auto("200"))
    """Tokens per sample during training."""
    sample_temp: float | None = field(default=None, metadata=auto("0.8"))
    """Temperature of those samples (the run's seed each time)."""
    patience: int | None = None
    """Stop after N evaluations without a new best validation loss."""
    keep: int | None = field(default=None, metadata=auto("0"))
    """Keep the K most recent evaluation checkpoints (step-000500.pt ...) besides best.pt and last.pt."""

    def __post_init__(self) -> None:
        given = self.time_budget
        if isinstance(self.time_budget, str):
            self.time_budget = parse_duration(self.time_budget)
        b = self.time_budget
        if b is not None and not isinstance(b, bool) and isinstance(b, (int, float)) and not 0 < b <= TEN_YEARS:
            shown = given if isinstance(given, str) else f"{given:g}s"
            raise UsageError(
                f"--time-budget must be more than 0 and at most ten years, not {shown}; write it like 90s, 10m or 1h"
            )
        _positive("--lr", self.lr)
        _fraction("min_lr_ratio", self.min_lr_ratio, closed_top=True)
        _positive("--weight-decay", self.weight_decay, allow_zero=True)
        _positive("--max-steps", self.max_steps)
        _positive("--epochs", self.epochs)
        _positive("--time-budget", self.time_budget)  # a number at all; its range is checked above
        _positive("--eval-every", self.eval_every)
        _positive("--eval-tokens", self.eval_tokens, allow_zero=True)
        _positive("--warmup-steps", self.warmup_steps, allow_zero=True)
        _positive("--grad-clip", self.grad_clip, allow_zero=True)
        _positive("--seed", self.seed, allow_zero=True, most=MAX_SEED)
        _positive("--sample-every", self.sample_every, allow_zero=True)
        _positive("--sample-length", self.sample_length)
        _positive("--sample-temp", self.sample_temp, allow_zero=True)
        _positive("--patience", self.patience)
        _positive("--keep", self.keep, allow_zero=True)
        check_choice("--device", self.device, DEVICES)
        check_choice("--precision", self.precision, PRECISIONS)


@dataclass
class RunConfig:
    """Every setting of a training run, one dataclass per concern; saved as config.yaml in the
    run folder and inside every checkpoint. A field left at None is chosen by charrnn
    (training/plan/autosize.py), and config.yaml holds what was chosen."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        parts = {}
        for f in fields(cls):
            section = d.get(f.name) or {}
            if not isinstance(section, dict):
                raise UsageError(f"config section {f.name!r} must be a mapping")
            known = {g.name for g in fields(f.default_factory)}
            unknown = set(section) - known
            if unknown:
                raise UsageError(
                    f"unknown setting {f.name}.{sorted(unknown, key=str)[0]}; known: {', '.join(sorted(known))}"
                )
            for g in fields(f.default_factory):
                if g.name in section:
                    section[g.name] = _typed(f"{f.name}.{g.name}", section[g.name], g.type)
            parts[f.name] = f.default_factory(**section)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise UsageError(
                f"unknown config section {sorted(unknown, key=str)[0]!r}; use tokenizer, data, model, train"
            )
        return cls(**parts)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Each field of the dataclass ``cls`` and its docstring (the string right after it in the
    class body), on one line: the CLI's help text comes from here."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:]):
        if (
            isinstance(a, ast.AnnAssign)
            and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
            and isinstance(b.value.value, str)
        ):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _typed(name: str, value: Any, annotation: str) -> Any:
    """Check a YAML value against its field's annotation ('int | None', 'float', 'str', ...)."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return value
    if "float" in kinds and isinstance(value, str) and "str" not in kinds:
        try:  # YAML 1.1 reads 2e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if "float" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if "int" in kinds and isinstance(value, int) else float(value)
    if "int" in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "list[str]" in kinds and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if "str" in kinds and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value) if not isinstance(value, str) else value
    want = " or ".join(k for k in kinds if k != "None")
    raise UsageError(f"{name} must be {want}, not {value!r}")


class _AliasRefused(yaml.YAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases: a settings file has no use for them, and a chain of
    aliases (a 'billion laughs') expands a small file to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(event.anchor)
        return super().compose_node(parent, index)


def load_yaml(path: str | Path) -> dict[str, Any]:
    from charrnn.files import read_text

    text = read_text(str(path), "config file", limit=YAML_MAX_BYTES)
    try:
        d = yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise UsageError(f"config file {path} nests too deeply to be a settings file") from None
    except _AliasRefused as e:
        raise UsageError(
            f"config file {path} uses a YAML alias (*{e}), which charrnn does not read; write the values out"
        ) from None
    except yaml.YAMLError as e:
        raise UsageError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise UsageError(f"config file {path} must hold a mapping of sections")
    return d


# What a resumed run may change: its limits, where and how precisely it runs, how it is watched
# (samples, patience, kept checkpoints change nothing it learns), and the corpus path it reads
# (the text itself must be the same). A fine-tuned model keeps its parent's level and shape (its
# vocabulary grows with the new text, within max_vocab and min_count). Enforced for the library
# and the CLI alike.
LIMITS = ("max_steps", "epochs", "time_budget")
WATCH = ("sample_every", "sample_length", "sample_temp", "patience", "keep")
RESUMABLE_TRAIN = (*LIMITS, "eval_every", "eval_tokens", "device", "precision", "out", *WATCH)
RESUMABLE = {"corpus", *RESUMABLE_TRAIN}
SHAPE = {"level", "cell", "layers", "hidden", "embed"}


def section_of(name: str) -> str:
    """The section of RunConfig that holds the setting ``name``; UsageError when none does."""
    for f in fields(RunConfig):
        if name in {g.name for g in fields(f.default_factory)}:
            return f.name
    known = sorted(g.name for f in fields(RunConfig) for g in fields(f.default_factory))
    raise UsageError(f"unknown setting {name!r}; known: {', '.join(known)}")


def check_fixed(given: list[str], resume: bool, init_from: bool) -> None:
    """Refuse settings that a resumed run (``RESUMABLE``) or a fine-tuned one (``SHAPE``) cannot change."""
    if resume:
        fixed = [n for n in given if n not in RESUMABLE]
        if fixed:
            raise UsageError(
                f"--{fixed[0].replace('_', '-')} cannot change when resuming a run; "
                "start a new one with --out (or fine-tune with --init-from)"
            )
    elif init_from:
        fixed = [n for n in given if n in SHAPE]
        if fixed:
            raise UsageError(
                f"--{fixed[0].replace('_', '-')} cannot change with --init-from: "
                "the fine-tuned model keeps its parent's tokens and shape"
            )


def resumed_config(saved: RunConfig, given: RunConfig) -> RunConfig:
    """The configuration of a resumed run: a copy of the ``saved`` one with what
    ``RESUMABLE_TRAIN`` lets change taken from ``given``. New limits replace all the saved ones (a
    saved time budget must not cap a new max_steps)."""
    new = copy.deepcopy(saved)
    names = [n for n in RESUMABLE_TRAIN if n not in LIMITS]
    if any(getattr(given.train, n) is not None for n in LIMITS):
        names += LIMITS
    for name in names:
        value = getattr(given.train, name)
        if name in LIMITS or (value is not None and value != "auto"):
            setattr(new.train, name, value)
    return new


def build_run_config(
    config: str | Path | dict | None, settings: dict[str, Any], resume: bool = False, init_from: Any = None
) -> RunConfig:
    """A RunConfig from a YAML file (or a dict of sections) and flat ``settings`` by field name,
    which win; None values count as not given. Raises UsageError for unknown names, bad values,
    and settings a resumed or fine-tuned run cannot change."""
    given = {k: v for k, v in settings.items() if v is not None}
    check_fixed(list(given), resume, init_from is not None)
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in given.items():
        overrides.setdefault(section_of(name), {})[name] = value
    base = load_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    return RunConfig.from_dict(merge(base, overrides))


def merge(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flags given on the command line win over the YAML file."""
    for k, v in base.items():
        if v is not None and not isinstance(v, dict):
            raise UsageError(
                f"config section {k!r} must be a mapping of settings (like 'hidden: 256'), not {v!r}"[:300]
            )
    out = {str(k): dict(v or {}) for k, v in base.items()}
    for section, values in overrides.items():
        out.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    return out


_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def check_out(out: str | Path | None) -> None:
    """A run folder that can be made: not a file, not under one, somewhere this user may write.
    Raises UsageError naming the problem before any training starts."""
    if out is None:
        return
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--out {p} is a file, not a folder; give a folder for the run")
    ancestor = p
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"--out {p} cannot be made: {ancestor} is a file; give a folder for the run")
    import tempfile

    try:  # a probe: /proc, read-only mounts and foreign folders refuse it
        os.rmdir(tempfile.mkdtemp(prefix=".charrnn-probe-", dir=ancestor))
    except OSError as e:
        raise UsageError(
            f"--out {p} cannot be made in {ancestor} ({e.strerror}); give a folder you can write to"
        ) from None


def parse_duration(text: str | float) -> float:
    """'90s', '5m', '1h', '1h30m' or a plain number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    s = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|s|m|h|)", s)
    if not parts or "".join(n + u for n, u in parts) != s.replace(" ", ""):
        raise UsageError(f"cannot read duration {text!r}; write it like 90s, 5m or 1h")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass
class SampleConfig:
    """What `charrnn sample` draws; validated here, so the torch-free path checks it too."""

    length: int = 500
    """Tokens to generate per sample."""
    temperature: float = 0.8
    """0 means greedy."""
    top_k: int | None = None
    top_p: float | None = None
    num_samples: int = 1
    seed: int | None = None
    precision: str = "auto"
    """Weights of the step: fp32, or bf16 (half the bytes read per token; next-token distributions
    agree to a KL of about 1e-5 nats). auto: one of them for any number of samples
    (``sampling.engine.step_dtype``)."""

    def __post_init__(self) -> None:
        if self.length < 0:
            raise UsageError(f"--length must be >= 0, not {self.length}")
        if not 0 <= self.temperature < math.inf:
            raise UsageError(f"--temp must be a finite number >= 0, not {self.temperature}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed must be in [0, {MAX_SEED}], not {self.seed}")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError(f"--top-k must be >= 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], not {self.top_p}")
        if not 1 <= self.num_samples <= MAX_STREAMS:
            raise UsageError(f"--num-samples must be in [1, {MAX_STREAMS}], not {self.num_samples}")
        check_choice("--precision", self.precision, ("auto", "fp32", "bf16"))
