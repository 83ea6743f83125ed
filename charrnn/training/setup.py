"""Setting a run up, in small named steps that each return what they make and change nothing
they are given:

1. ``starting_config``: the settings as given, with a time budget where no limit was (each
   budget times CHARRNN_BUDGET_SCALE); a resumed run's saved settings with what may change
   (``config.resumed_config``); a fine-tuned run's level and records mode from its parent.
2. ``read_tokens``: the corpus as token ids (the token cache, or records parsed whole), split
   into training and validation.
3. ``resolve_config``: every setting left to charrnn settled (the probe times candidate shapes
   on a budget, then ``autosize`` fills the rest), before anything is built.
4. ``build_model``: the model, its DistributedDataParallel wrapper, AdamW and the grad scaler.
5. ``make_batches`` and ``step_limit``: the batches, and the steps the limits allow.
6. ``make_budget``: the clock, with the final evaluation's cost timed.

``setup`` runs them in order and returns the ``Run`` that ``loop.fit`` trains.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn import checkpoint
from charrnn.config import RunConfig, resumed_config
from charrnn.data import corpus
from charrnn.data.batches import RecordBatches, split
from charrnn.data.batches import make_batches as text_batches
from charrnn.data.records import encode_record, parse
from charrnn.data.tokenizer import Tokenizer, show_tokens
from charrnn.data.vectorized import smallest_dtype
from charrnn.errors import CharrnnError, UsageError
from charrnn.evaluate import chunk_seconds, chunks, default_eval_tokens, spaced_records
from charrnn.model.lm import RNNLM, ModelShape
from charrnn.runtime.device import Env, setup_env
from charrnn.training.budget import BUDGET_SCALE, Budget, budget_scale, warmup_steps
from charrnn.training.plan import probe
from charrnn.training.plan.autosize import Plan, autosize, corpus_hidden
from charrnn.training.report import Reporter
from charrnn.training.run_folder import RunFolder
from charrnn.training.state import TrainState
from charrnn.training.watch import Watch

DEFAULT_BUDGET = 300
"""Seconds a run trains when no limit (--time-budget, --max-steps, --epochs) is given."""


@dataclass(frozen=True)
class Tokens:
    """The corpus as the run trains on it."""

    tokenizer: Tokenizer
    train: Any
    """(n,) integer ids of the training split: a memmap of the token cache, or a records run's
    sequences end to end."""
    val: Any
    """(m,) ids of the validation split."""
    corpus: str
    """The corpus' name (the first input's), for the default run folder."""
    sha: str
    """The first 16 hex digits of the SHA-256 of the text."""
    seconds: float
    """Spent finding or building the ids."""
    added: list[str]
    """Fine-tuning: the tokens the new text added to the parent's vocabulary."""
    train_lengths: list[int] | None = None
    """A records run: the length of each training record's sequence (start, tokens.., END)."""
    val_records: list[list[int]] | None = None
    """A records run: the validation records each evaluation scores, each on its own."""

    @property
    def is_records(self) -> bool:
        return self.train_lengths is not None


@dataclass
class Progress:
    """This command's share of the run, for reports and the summary."""

    first_step: int
    """The step this command started from: a resumed run's saved step, else 0."""
    evaluated_at: int | None
    """The step of this rank's last evaluation (only rank 0 keeps the history as it grows, and
    every rank must agree on the final evaluation, which gathers their states)."""
    tokens: int = 0
    seconds: float = 0.0
    """Seconds spent in training steps."""
    thread_tuning: bool = False
    """Whether the steps chose between one thread and all (``loop.thread_count_changes_nothing``)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


@dataclass
class Run:
    """A run set up and ready to fit."""

    cfg: RunConfig
    """Every setting resolved, as config.yaml and the checkpoints hold them."""
    env: Env
    tokens: Tokens
    net: torch.nn.Module
    """The model, wrapped in DistributedDataParallel under torchrun."""
    batches: Any
    state: TrainState
    budget: Budget
    folder: RunFolder
    watch: Watch
    reporter: Reporter
    started: float
    """time.monotonic() at the command's start: the budget counts from it."""
    plan: Plan | None = None
    """What the probe timed and chose."""
    progress: Progress | None = None

    @property
    def model(self) -> RNNLM:
        return self.state.model

    @property
    def eval_tokens(self) -> int | None:
        """Validation tokens an evaluation scores at most (None: all)."""
        return eval_limit(self.cfg, len(self.tokens.tokenizer))

    @property
    def val_tokens_scored(self) -> int:
        return val_tokens_scored(self.cfg, self.tokens)


def setup(
    cfg: RunConfig,
    text: str | None,
    corpus_name: str,
    *,
    inputs: list[str] | str | None,
    resume: bool,
    overwrite: bool,
    init_from: str | None,
    reporter: Reporter,
    started: float,
) -> Run:
    """The run ``train`` fits: its folder claimed (and released again if setting up fails).
    Raises UsageError for settings that cannot work, CharrnnError when no step fits the budget."""
    if text is None:
        corpus_name = corpus.resolve(inputs)[1]  # a missing input fails before anything else
    folder_path = Path(cfg.train.out or checkpoint.DEFAULT_ROOT / corpus_name)
    resumed = _last_checkpoint(folder_path) if resume else None
    parent = checkpoint.load(init_from) if init_from else None
    saved_budget = resumed is not None and cfg.train.time_budget is None  # what is left of the saved one
    cfg, seconds = starting_config(cfg, resumed, parent, reporter.message)
    env = setup_env(cfg.train.device, cfg.train.precision)
    folder = RunFolder(cfg.train.out or folder_path, writer=env.main)
    folder.claim(resume, overwrite)
    try:
        return _set_up(
            cfg, seconds, saved_budget, (inputs, text, corpus_name), resumed, parent, env, folder, reporter, started
        )
    except BaseException:
        folder.release()
        raise


def _set_up(
    cfg: RunConfig,
    seconds: float | None,
    saved_budget: bool,
    source: tuple,
    resumed: dict | None,
    parent: dict | None,
    env: Env,
    folder: RunFolder,
    reporter: Reporter,
    started: float,
) -> Run:
    deadline = started + seconds if seconds else None
    if env.world == 1 and env.device.type == "cpu":
        from charrnn.sampling.native import build

        build.lib()  # a first build of the sampling kernel happens now, not in the timed final save
    tokens = read_tokens(cfg, *source, resumed or parent, parent is not None, env, deadline, reporter.message)
    if resumed and resumed["corpus_sha"] != tokens.sha:
        raise UsageError(
            f"the corpus differs from the one {folder.path} was trained on; to fine-tune on it, "
            f"drop --resume and add --init-from {folder.path} --out NEW_FOLDER"
        )
    if len(tokens.val) < 2:
        reporter.message(
            f"the corpus is too short to hold out a validation split ({len(tokens.val)} token(s) at "
            f"--val-fraction {cfg.data.val_fraction:g}): reporting training loss only; a longer corpus gives one"
        )
    shape_from = dict((resumed or parent)["shape"], vocab_size=len(tokens.tokenizer)) if resumed or parent else None
    cfg, plan, notes = resolve_config(cfg, tokens, env, shape_from, deadline, reporter.message)
    if not resumed:
        for note in notes:
            reporter.message(note)
    env = replace(env, precision=cfg.train.precision)
    model, net, optimizer, scaler = build_model(cfg, tokens, env, parent, reporter.message)
    batches = make_batches(cfg, tokens, env)
    max_steps = step_limit(cfg, batches)
    if max_steps is None and deadline is None:
        raise UsageError("give a limit: --max-steps, --epochs or --time-budget")
    cfg = replace(cfg, train=replace(cfg.train, warmup_steps=warmup_steps(cfg.train.warmup_steps, max_steps)))

    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * env.world
    identity = dict(
        cfg=cfg,
        tokenizer=tokens.tokenizer,
        corpus=tokens.corpus,
        corpus_sha=tokens.sha,
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        tokens_per_step=tokens_per_step,
    )
    if resumed:
        state = TrainState.from_checkpoint(resumed, **identity, device=env.device, rank=env.rank, world=env.world)
        state.eval_every = cfg.train.eval_every or state.eval_every
    else:
        state = TrainState(**identity, eval_every=cfg.train.eval_every)
    if state.carried is None:
        state.carried = model.zero_state(cfg.data.batch_size, env.device)
    val_tokens = val_tokens_scored(cfg, tokens) if len(tokens.val) >= 2 else 0
    budget = make_budget(model, state.train_seconds, deadline, max_steps, seconds, val_tokens, env)
    run = Run(
        cfg,
        env,
        tokens,
        net,
        batches,
        state,
        budget,
        folder,
        Watch(cfg.train, folder, tokens.tokenizer, reporter),
        reporter,
        started,
        plan,
        Progress(state.step, state.history[-1]["step"] if state.history else None),
    )
    if not run.budget.can_take_one_step():  # before the folder is touched
        if saved_budget:
            raise UsageError(budget_used_up(cfg.train.time_budget, seconds))
        raise CharrnnError(no_time(run))
    folder.start(cfg, state.history, fresh=resumed is None)
    if state.eval_every is None and deadline is None:
        state.eval_every = max(1, max_steps // 5)  # with a budget it is set from the first steps' speed
    return run


def _last_checkpoint(folder: Path) -> dict:
    """The last.pt of the run in ``folder``, to resume. UsageError when there is none."""
    last = RunFolder(folder).last
    if not last.is_file():
        others = any((last.parent / f).exists() for f in ("best.pt", "metrics.jsonl"))
        raise UsageError(
            f"nothing to resume: {last} does not exist; drop --resume to start a new run"
            + (" (with --overwrite: the folder holds a run's other files)" if others else "")
        )
    return checkpoint.load(last)


# ---------------------------------------------------------------- 1. the settings to start from


def starting_config(
    cfg: RunConfig, resumed: dict | None, parent: dict | None, message: Callable[[str], None]
) -> tuple[RunConfig, float | None]:
    """(the run's settings before anything is sized, the seconds this command may take: None for
    no time limit). A new run without a limit gets DEFAULT_BUDGET seconds; a resumed one takes its
    saved settings with what ``RESUMABLE`` lets change, and what is left of its saved budget
    unless it is given one of its own (UsageError when none is left); a fine-tuned one keeps its
    parent's token level and records mode. A budget given or defaulted here is multiplied by
    ``budget_scale()`` (CHARRNN_BUDGET_SCALE), and said so."""
    given = cfg.train.time_budget
    if resumed:
        cfg = resumed_config(RunConfig.from_dict(resumed["config"]), cfg)
    elif not (cfg.train.max_steps or cfg.train.epochs or cfg.train.time_budget):
        cfg = replace(cfg, train=replace(cfg.train, time_budget=DEFAULT_BUDGET))
        message(
            f"no limit given: training for {DEFAULT_BUDGET // 60} minutes (set --time-budget, --max-steps or --epochs)"
        )
    scale = budget_scale()
    if scale != 1 and cfg.train.time_budget and (given is not None or not resumed):  # a saved one was scaled when given
        scaled = cfg.train.time_budget * scale
        message(f"{BUDGET_SCALE}={scale:g}: the time budget of {cfg.train.time_budget:g}s becomes {scaled:.3g}s")
        cfg = replace(cfg, train=replace(cfg.train, time_budget=scaled))
    seconds = cfg.train.time_budget
    if resumed and seconds and given is None:
        # The saved budget covered the whole run: what is left of it is this command's.
        if seconds - resumed["train_seconds"] <= 0:
            raise UsageError(budget_used_up(seconds, 0.0))
        seconds = max(seconds - resumed["train_seconds"], 1.0)
    if parent is not None:
        cfg = copy.deepcopy(cfg)
        cfg.tokenizer.level = parent["tokenizer"]["level"]
        parent_data = parent["config"].get("data") or {}
        if cfg.data.records is None and parent_data.get("records"):  # a records model stays one
            cfg.data.records, cfg.data.label_field = parent_data["records"], parent_data.get("label_field")
        if cfg.tokenizer.max_vocab is None:
            cfg.tokenizer.max_vocab = (parent["config"].get("tokenizer") or {}).get("max_vocab")
    return cfg, seconds


def budget_used_up(budget: float, left: float) -> str:
    """A resumed run whose saved time budget cannot buy another step."""
    return (
        f"this run's {budget:g}s time budget is used up ({left:.1f}s left, setting up included, fits no "
        f"training step); give this command a budget of its own: --resume --time-budget 5m"
    )


# ---------------------------------------------------------------- 2. the tokens


def corpus_hash(text: str) -> str:
    """The hash a run keeps of the text it trained on (``corpus_sha``), to notice another text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def read_tokens(
    cfg: RunConfig,
    inputs: list[str] | str | None,
    text: str | None,
    corpus_name: str,
    source: dict | None,
    grow: bool,
    env: Env,
    deadline: float | None,
    message: Callable[[str], None],
) -> Tokens:
    """The corpus (``text``, else the files ``inputs``, else the default corpus) as token ids.
    ``source``: the checkpoint whose vocabulary the run keeps (resumed) or grows (``grow``:
    fine-tuning). Plain text goes through the token cache (rank 0 builds, the others wait);
    records are parsed from the whole text."""
    tok = checkpoint.tokenizer(source) if source else None
    if cfg.data.records:
        return _read_records(cfg, inputs, text, corpus_name, tok, grow)
    data = corpus.load_ranked(
        env.main,
        env.world,
        inputs=inputs,
        text=text,
        level=cfg.tokenizer.level,
        max_vocab=cfg.tokenizer.max_vocab,
        min_count=cfg.tokenizer.min_count,
        tokenizer=tok,
        unknown="grow" if grow else "unk",
        deadline=deadline,
        message=message,
    )
    train, val = split(data.ids, cfg.data.val_fraction)
    return Tokens(
        data.tokenizer, train, val, corpus_name if text is not None else data.name, data.sha, data.seconds, data.added
    )


def _read_records(
    cfg: RunConfig, inputs, text: str | None, corpus_name: str, tok: Tokenizer | None, grow: bool
) -> Tokens:
    """A records run's tokens: every record as (start, tokens.., END) (``encode_record``), all of
    a split's records end to end in the smallest integer type, with each one's length (no object
    per record). The first 1 - val_fraction of the records train, the rest validate."""
    t0 = time.monotonic()
    if text is None:
        text, corpus_name = corpus.read_text(inputs)
    sha = corpus_hash(text)
    added: list[str] = []
    if grow:
        tok, added = tok.grown(text, cfg.tokenizer.max_vocab, cfg.tokenizer.min_count)
    recs = parse(text, cfg.data.records, cfg.data.label_field)
    del text
    if tok is None:
        tok = Tokenizer.build(
            "\n".join(recs.texts), cfg.tokenizer.level, cfg.tokenizer.max_vocab, cfg.tokenizer.min_count
        )
    tok = tok.with_records(cfg.data.records.partition(":")[0], recs.labels)
    ids: list[int] = []
    lengths: list[int] = []
    for t, label in zip(recs.texts, recs.labels or [None] * len(recs.texts)):
        seq, _ = encode_record(tok, t, label, unknown="unk")
        ids += seq
        lengths.append(len(seq))
    del recs
    flat = np.asarray(ids, dtype=smallest_dtype(len(tok)))
    del ids
    n_train = max(1, int(len(lengths) * (1 - cfg.data.val_fraction) + 1e-9))
    cut = sum(lengths[:n_train])
    val, val_lengths = flat[cut:], lengths[n_train:]
    # Each evaluation scores the same evenly spaced validation records, eval_tokens at most.
    starts = np.cumsum([0] + val_lengths)
    picked = spaced_records(val_lengths, eval_limit(cfg, len(tok)))
    val_records = [val[starts[i] : starts[i + 1]].tolist() for i in picked]
    return Tokens(tok, flat[:cut], val, corpus_name, sha, time.monotonic() - t0, added, lengths[:n_train], val_records)


def eval_limit(cfg: RunConfig, vocab_size: int) -> int | None:
    """Validation tokens an evaluation scores at most (None: all): --eval-tokens, 0 for all, or
    the default for the vocabulary."""
    n = cfg.train.eval_tokens
    return default_eval_tokens(vocab_size) if n is None else (n or None)


def val_tokens_scored(cfg: RunConfig, tokens: Tokens) -> int:
    """The validation tokens each evaluation scores."""
    return min(len(tokens.val), eval_limit(cfg, len(tokens.tokenizer)) or len(tokens.val))


# ---------------------------------------------------------------- 3. every setting settled


def resolve_config(
    cfg: RunConfig,
    tokens: Tokens,
    env: Env,
    shape_from: dict | None,
    deadline: float | None,
    message: Callable[[str], None],
) -> tuple[RunConfig, Plan | None, list[str]]:
    """(a copy of ``cfg`` with every setting left to charrnn settled, the probe's plan, the lines
    saying what autosize chose). A budgeted run of a new model times its candidates first
    (``probe.plan_run``); the rest comes from ``autosize``. ``shape_from``: the shape of the model
    a resumed or fine-tuned run continues."""
    cfg = copy.deepcopy(cfg)
    n_train, vocab = len(tokens.train), len(tokens.tokenizer)
    if tokens.is_records and cfg.data.seq_len is None:
        # Chunks that hold 95% of the records whole.
        preds = sorted(n - 1 for n in tokens.train_lengths)
        cfg.data.seq_len = min(128, max(8, -(-preds[int(0.95 * (len(preds) - 1))] // 8) * 8))
    plan = None
    if shape_from is None and deadline is not None:
        plan = probe.plan_run(cfg, env, vocab, deadline - time.monotonic(), corpus_hidden(n_train), n_train=n_train)
        if plan is not None:
            message(plan.describe())
            cfg.model.layers, cfg.model.hidden, cfg.train.lr = plan.layers, plan.hidden, plan.lr
            if cfg.train.precision == "auto":
                cfg.train.precision = plan.precision
    if cfg.train.precision == "auto":  # config.yaml names what ran, as for the other settings 'auto' resolves
        cfg.train.precision = env.precision
    cfg, notes = autosize(cfg, n_train, vocab, env.device.type, shape_from, plan.epochs if plan else None)
    return cfg, plan, notes


# ---------------------------------------------------------------- 4. the model and its optimizer


def build_model(
    cfg: RunConfig, tokens: Tokens, env: Env, parent: dict | None, message: Callable[[str], None]
) -> tuple[RNNLM, torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """(model, the module that trains it: DistributedDataParallel under torchrun, AdamW over it,
    the fp16 grad scaler, off in other precisions). Seeded by the run's seed and rank; a
    fine-tuned model starts from its ``parent``'s weights."""
    torch.manual_seed(cfg.train.seed + env.rank)
    m = cfg.model
    model = RNNLM(ModelShape(len(tokens.tokenizer), m.cell, m.layers, m.hidden, m.embed, m.dropout))
    if parent is not None:
        model.load_parent(parent["model"])
        if tokens.added:
            what = "characters" if tokens.tokenizer.level == "char" else "words"
            message(
                f"fine-tuning adds {len(tokens.added)} new {what} to the vocabulary: {show_tokens(tokens.added, 20)}"
            )
    model.to(env.device)
    net = torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.train.weight_decay),
        lr=cfg.train.lr,
        betas=(0.9, 0.99),
        fused=env.device.type in ("cuda", "cpu"),
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=env.precision == "fp16")
    return model, net, optimizer, scaler


def param_groups(model: RNNLM, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases and the embedding table are left alone."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith("emb") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------- 5. batches and the step limit


def make_batches(cfg: RunConfig, tokens: Tokens, env: Env):
    """This rank's batches: whole records in chunks of their own, or streams or random windows."""
    d = cfg.data
    if tokens.is_records:
        return RecordBatches(
            (tokens.train, tokens.train_lengths), d.batch_size, d.seq_len, cfg.train.seed, env.rank, env.world
        )
    return text_batches(d.batching, tokens.train, d.batch_size, d.seq_len, cfg.train.seed, env.rank, env.world)


def step_limit(cfg: RunConfig, batches) -> int | None:
    """The steps --max-steps and --epochs allow, the smaller of the two (None: neither given)."""
    max_steps = cfg.train.max_steps
    if cfg.train.epochs:
        max_steps = min(max_steps or math.inf, math.ceil(cfg.train.epochs * batches.steps_per_epoch))
    return max_steps


# ---------------------------------------------------------------- 6. the budget


def make_budget(
    model: RNNLM,
    trained_seconds: float,
    deadline: float | None,
    max_steps: int | None,
    seconds: float | None,
    val_tokens: int,
    env: Env,
) -> Budget:
    """The run's clock: a save's cost guessed at 200 MB/s of weights and two Adam moments until
    one is timed, and with a deadline the final evaluation's cost (of ``val_tokens``) timed on one
    chunk now, at most a fifth of the command's ``seconds`` (an evaluation that would take longer
    is cut to fit; 0: nothing to evaluate). ``trained_seconds``: what a resumed run trained before."""
    budget = Budget(deadline, max_steps, trained_seconds, 0.05 + 12 * model.num_parameters() / 2e8)
    if deadline is not None and val_tokens:
        budget.eval_chunk_seconds = chunk_seconds(model, autocast=env.autocast())
        budget.eval_seconds = min(budget.eval_chunk_seconds * chunks(val_tokens), 0.2 * seconds)
    return budget


def no_time(run: Run) -> str:
    """Why a time budget cannot buy a single training step, and what budget would."""
    b = run.budget
    left = b.deadline - time.monotonic()
    need = b.median_step() + 2 * b.eval_chunk_seconds + 1.5 * b.save_seconds + 0.6
    enough = (
        (run.cfg.train.time_budget or 0) + need - left + b.reserve(run.val_tokens_scored, run.state.tokens_per_step) + 5
    )
    scale = budget_scale()  # the budget given is multiplied by it
    scaled = f" ({BUDGET_SCALE} is {scale:g})" if scale != 1 else ""
    return (
        f"the time budget leaves {max(left, 0):.1f}s after setting up (tokenizing included), and one step with "
        f"the shortest final evaluation and the save needs about {need:.1f}s: no training step fits; give "
        f"--time-budget {math.ceil(enough / scale)}s or more{scaled}"
    )
