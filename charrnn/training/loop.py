"""The trainer: ``train()`` sets a run up (config, device, tokens, model, optimizer, batches, run
folder) and then fits it: steps, evaluations, checkpoints, until a limit or Ctrl-C.

Progress goes to a ``Reporter`` (silent by default), never to stdout. What the run carries
from step to step lives in ``TrainState`` (state.py), the clock in ``Budget`` (budget.py), the
files in ``RunFolder`` (run_folder.py).
"""

from __future__ import annotations

import hashlib
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from charrnn import checkpoint
from charrnn.data import corpus
from charrnn.runtime import ranks
from charrnn.runtime.allocator import keep_freed_memory
from charrnn.config import RunConfig, resumed_config
from charrnn.data.batches import RecordBatches, make_batches, split, to_ids
from charrnn.runtime.device import Env, setup_env
from charrnn.errors import CharrnnError, UsageError
from charrnn.evaluate import Score, default_eval_tokens, chunk_seconds, chunks, evaluate, score_records, spaced_records
from charrnn.model.lm import RNNLM, ModelShape, detach
from charrnn.runtime.threads import ThreadTuner
from charrnn.data.tokenizer import Tokenizer, show_tokens
from charrnn.training.plan import probe
from charrnn.training.plan.autosize import autosize, corpus_hidden
from charrnn.training.budget import Budget, lr_at, warmup_steps
from charrnn.training.run_folder import RunFolder
from charrnn.training.state import TrainState, gather_ranks
from charrnn.training.watch import Watch

DEFAULT_BUDGET = 300
REPORT_EVERY = 10


class Reporter:
    """Receives progress; the CLI's subclass draws it on stderr."""

    def message(self, text: str) -> None: ...
    def start(self, total_steps: int | None, budget: float | None, step: int) -> None: ...
    def step(self, step: int, loss: float, tokens_per_second: float, elapsed: float) -> None: ...
    def evaluated(self, step: int, score: Score) -> None: ...
    def sampled(self, step: int, val_loss: float | None, text: str) -> None: ...
    def finish(self) -> None: ...


@dataclass
class Run:
    """A run set up and ready to fit."""

    cfg: RunConfig
    env: Env
    tok: Tokenizer
    train_ids: Any
    """(tokens,) integer ids: a memmap of the token cache."""
    val_ids: Any
    model: RNNLM
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: Any
    state: TrainState
    budget: Budget
    folder: RunFolder
    corpus: str
    corpus_sha: str
    reporter: Reporter
    t_start: float
    watch: Watch
    tokens_per_second: float = 0.0
    corpus_seconds: float = 0.0
    """Seconds spent finding or building the token ids."""
    started: float | None = None
    """time.monotonic() of the command's start (the budget's origin)."""
    evaluated_at: int | None = None
    """The step of this rank's last evaluation."""

    @property
    def eval_tokens(self) -> int | None:
        """Validation tokens an evaluation scores at most (None: all)."""
        return _eval_limit(self.cfg, len(self.tok))

    @property
    def val_tokens_scored(self) -> int:
        return min(len(self.val_ids), self.eval_tokens or len(self.val_ids))
    val_seqs: list[list[int]] | None = None
    """A records run's validation records that evaluations score (``spaced_records``), each on its own."""
    plan: dict[str, Any] | None = None
    """What the probe timed and chose (probe.py), for the summary."""
    first_step: int = 0
    """The step this command started from: a resumed run's saved step, else 0."""

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.data.batch_size * self.cfg.data.seq_len * self.env.world

    def payload(self, resumable: bool, train_seconds: float | None = None) -> dict[str, Any]:
        return self.state.payload(
            self.cfg, self.model, self.tok, self.corpus, self.corpus_sha, self.tokens_per_step,
            self.optimizer if resumable else None, self.scaler, train_seconds,
        )


def train(
    cfg: RunConfig,
    text: str | None = None,
    corpus_name: str = "corpus",
    *,
    inputs: list[str] | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | None = None,
    reporter: Reporter | None = None,
    started: float | None = None,
    stop: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """Train on ``text``, or else on the files ``inputs`` (see corpus.py; None: the default corpus),
    and return a summary (see ``TrainResult`` in api.py for its fields).

    A time budget counts from ``started`` (time.monotonic() of the command's start; default now).
    ``stop(step)`` returning True ends the run early like Ctrl-C. Raises UsageError for settings
    that cannot work, CharrnnError when training diverges."""
    keep_freed_memory()  # a step's big buffers come back from the heap, not from fresh pages (allocator.py)
    run = setup(cfg, text, corpus_name, inputs=inputs, resume=resume, overwrite=overwrite, init_from=init_from,
                reporter=reporter or Reporter(), started=started)
    finished = False
    try:
        interrupted = fit(run, stop)
        summary = summarize(run, interrupted)
        finished = True
        return summary
    finally:
        run.folder.release()
        if run.env.world > 1:
            if finished:
                ranks.barrier()  # no rank tears down while another still gathers (ranks.py: why not dist's)
            dist.destroy_process_group()


def corpus_hash(text: str) -> str:
    """The hash a run keeps of the text it trained on (``corpus_sha``), to notice another text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def setup(
    cfg: RunConfig, text: str | None, corpus_name: str, *, inputs=None, resume: bool, overwrite: bool,
    init_from: str | None, reporter: Reporter, started: float | None,
) -> Run:
    t_start = time.monotonic()
    rep = reporter
    if not (cfg.train.max_steps or cfg.train.epochs or cfg.train.time_budget or resume):
        cfg.train.time_budget = DEFAULT_BUDGET
        rep.message(f"no limit given: training for {DEFAULT_BUDGET // 60} minutes (set --time-budget, --max-steps or --epochs)")
    if text is None:
        corpus_name = corpus.resolve(inputs)[1]
    folder_path = cfg.train.out or checkpoint.DEFAULT_ROOT / corpus_name
    resumed = None
    new_budget = cfg.train.time_budget
    if resume:
        last = RunFolder(folder_path).last
        if not last.is_file():
            others = any((last.parent / f).exists() for f in ("best.pt", "metrics.jsonl"))
            raise UsageError(f"nothing to resume: {last} does not exist; drop --resume to start a new run"
                             + (" (with --overwrite: the folder holds a run's other files)" if others else ""))
        resumed = checkpoint.load(last)
        cfg = resumed_config(RunConfig.from_dict(resumed["config"]), cfg)
    env = setup_env(cfg.train.device, cfg.train.precision)
    folder = RunFolder(cfg.train.out or folder_path, writer=env.main)
    folder.claim(resume, overwrite)
    try:
        return _build(cfg, (inputs, text), corpus_name, env, folder, resumed, new_budget, init_from, rep, started, t_start)
    except BaseException:
        folder.release()
        raise


def _build(cfg, source_text, corpus_name, env, folder, resumed, new_budget, init_from, rep, started, t_start) -> Run:
    budget_s = cfg.train.time_budget
    if resumed and budget_s and new_budget is None:
        # The saved budget covered the whole run: what is left of it is this command's.
        if budget_s - resumed["train_seconds"] <= 0:
            raise UsageError(_budget_used_up(budget_s, 0.0))
        budget_s = max(budget_s - resumed["train_seconds"], 1.0)
    deadline = (started if started is not None else t_start) + budget_s if budget_s else None
    if env.world == 1 and env.device.type == "cpu":
        from charrnn.sampling.native import build

        build.lib()  # a first build of the sampling kernel happens now, not in the timed final save

    # Tokens: from the run being resumed, the model being fine-tuned (grown by the new text's), or the corpus.
    parent = checkpoint.load(init_from) if init_from else None
    source = resumed or parent
    tok = Tokenizer.from_dict(source["tokenizer"]) if source else None
    limit = cfg.tokenizer.max_vocab
    if parent is not None:
        cfg.tokenizer.level = tok.level
        parent_data = parent["config"].get("data") or {}
        if cfg.data.records is None and parent_data.get("records"):  # a records model stays one
            cfg.data.records, cfg.data.label_field = parent_data["records"], parent_data.get("label_field")
        limit = limit or (parent["config"].get("tokenizer") or {}).get("max_vocab")
    inputs, text = source_text
    val_seqs, added, corpus_seconds = None, [], 0.0
    if cfg.data.records:  # records are parsed from the whole text (lists of names, lines, JSON lines)
        t0 = time.monotonic()
        if text is None:
            text, _ = corpus.read_text(inputs)
        corpus_sha = corpus_hash(text)
        if parent is not None:
            tok, added = tok.grown(text, limit, cfg.tokenizer.min_count)
        tok, (train_ids, train_lengths), (val_ids, val_lengths) = _record_split(cfg, text, tok, source is None)
        del text
        # Each evaluation scores the same evenly spaced validation records, eval_tokens at most.
        starts = np.cumsum([0] + val_lengths)
        picked = spaced_records(val_lengths, _eval_limit(cfg, len(tok)))
        val_seqs = [val_ids[starts[i] : starts[i + 1]].tolist() for i in picked]
        corpus_seconds = time.monotonic() - t0
    else:
        data = corpus.load_ranked(
            env.main, env.world, inputs=inputs, text=text, level=cfg.tokenizer.level, max_vocab=limit,
            min_count=cfg.tokenizer.min_count, tokenizer=tok, unknown="grow" if parent else "unk",
            deadline=deadline, message=rep.message,
        )
        tok, added, corpus_sha, corpus_seconds = data.tokenizer, data.added, data.sha, data.seconds
        train_ids, val_ids = split(data.ids, cfg.data.val_fraction)
    if resumed and resumed["corpus_sha"] != corpus_sha:
        raise UsageError(f"the corpus differs from the one {folder.path} was trained on; to fine-tune on it, "
                         f"drop --resume and add --init-from {folder.path} --out NEW_FOLDER")
    if len(val_ids) < 2:
        rep.message("validation split is empty: reporting training loss only (raise --val-fraction)")

    shape_from = dict(source["shape"], vocab_size=len(tok)) if source else None
    plan = None
    if shape_from is None and deadline is not None:  # a budgeted run times its candidates (probe.py)
        plan = probe.plan_run(cfg, env, len(tok), deadline - time.monotonic(), corpus_hidden(len(train_ids)),
                              n_train=len(train_ids))
        if plan is not None:
            rep.message(plan.describe())
    if cfg.train.precision == "auto":  # config.yaml names what ran, as for the other settings 'auto' resolves
        cfg.train.precision = env.precision
    notes = autosize(cfg, len(train_ids), len(tok), env.device.type, shape_from, plan.epochs if plan else None)
    if not resumed:
        for n in notes:
            rep.message(n)
    torch.manual_seed(cfg.train.seed + env.rank)
    shape = ModelShape(**shape_from) if shape_from else ModelShape(
        len(tok), cfg.model.cell, cfg.model.layers, cfg.model.hidden, cfg.model.embed, cfg.model.dropout
    )
    shape.dropout = cfg.model.dropout
    model = RNNLM(shape)
    if parent is not None:
        model.load_parent(parent["model"])
        if added:
            what = "characters" if tok.level == "char" else "words"
            rep.message(f"fine-tuning adds {len(added)} new {what} to the vocabulary: {show_tokens(added, 20)}")
    model.to(env.device)
    net = torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model
    opt = torch.optim.AdamW(
        _param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr, betas=(0.9, 0.99),
        fused=env.device.type in ("cuda", "cpu"),
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=env.precision == "fp16")

    if cfg.data.records:
        batches = RecordBatches((train_ids, train_lengths), cfg.data.batch_size, cfg.data.seq_len, cfg.train.seed,
                                env.rank, env.world)
    else:
        batches = make_batches(cfg.data.batching, train_ids, cfg.data.batch_size, cfg.data.seq_len, cfg.train.seed, env.rank, env.world)
    max_steps = cfg.train.max_steps
    if cfg.train.epochs:
        max_steps = min(max_steps or math.inf, math.ceil(cfg.train.epochs * batches.steps_per_epoch))
    if max_steps is None and deadline is None:
        raise UsageError("give a limit: --max-steps, --epochs or --time-budget")
    cfg.train.warmup_steps = warmup_steps(cfg.train.warmup_steps, max_steps)  # saved resolved: a resume keeps it

    if resumed:
        state = TrainState.restore(resumed, model, opt, scaler, env.device, env.rank, env.world)
        state.eval_every = cfg.train.eval_every or state.eval_every
    else:
        state = TrainState(eval_every=cfg.train.eval_every)
    if state.carried is None:
        state.carried = model.zero_state(cfg.data.batch_size, env.device)
    # A save writes weights and two Adam moments; guess 200 MB/s until one is timed.
    budget = Budget(deadline, max_steps, state.train_seconds, 0.05 + 12 * model.num_parameters() / 2e8)
    run = Run(cfg, env, tok, train_ids, val_ids, model, net, opt, scaler, batches, state, budget, folder,
              corpus_name, corpus_sha, rep, t_start, Watch(cfg.train, folder, tok, rep), val_seqs=val_seqs,
              plan=plan.to_dict() if plan else None, started=started if started is not None else t_start,
              first_step=state.step)
    if deadline is not None and len(val_ids) >= 2:  # the reserve for the final evaluation, measured
        budget.eval_chunk_seconds = chunk_seconds(model, autocast=env.autocast())
        # At most a fifth of the budget: an evaluation that would take longer is cut to fit.
        budget.eval_seconds = min(budget.eval_chunk_seconds * chunks(run.val_tokens_scored), 0.2 * budget_s)
    if not budget.can_take_one_step():  # before the folder is touched
        if resumed and new_budget is None:
            raise UsageError(_budget_used_up(cfg.train.time_budget, budget_s))
        raise CharrnnError(_no_time(run))
    folder.start(cfg, state.history, fresh=resumed is None)
    if state.eval_every is None and deadline is None:
        state.eval_every = max(1, max_steps // 5)  # with a budget it is set from the first steps' speed
    run.corpus_seconds = corpus_seconds
    return run


def _budget_used_up(budget: float, left: float) -> str:
    """A resumed run whose saved time budget cannot buy another step."""
    return (f"this run's {budget:g}s time budget is used up ({left:.1f}s left, setting up included, fits no "
            f"training step); give this command a budget of its own: --resume --time-budget 5m")


def _no_time(run: Run) -> str:
    """Why a time budget cannot buy a single training step, and what budget would."""
    b = run.budget
    left = b.deadline - time.monotonic()
    need = b.median_step() + 2 * b.eval_chunk_seconds + 1.5 * b.save_seconds + 0.6
    enough = math.ceil((run.cfg.train.time_budget or 0) + need - left + b.reserve(run.val_tokens_scored, run.tokens_per_step) + 5)
    return (f"the time budget leaves {max(left, 0):.1f}s after setting up (tokenizing included), and one step with "
            f"the shortest final evaluation and the save needs about {need:.1f}s: no training step fits; give "
            f"--time-budget {enough}s or more")


def _eval_limit(cfg: RunConfig, vocab_size: int) -> int | None:
    """Validation tokens an evaluation scores at most (None: all): --eval-tokens, 0 for all, or
    the default for the vocabulary."""
    n = cfg.train.eval_tokens
    return default_eval_tokens(vocab_size) if n is None else (n or None)


def _record_split(cfg: RunConfig, text: str, tok: Tokenizer, new_vocab: bool) -> tuple[Tokenizer, tuple, tuple]:
    """A records run's tokenizer and its (start, tokens.., END) sequences, as (ids, lengths) of
    the training records and of the validation records: all of a split's sequences in one tensor
    of the smallest integer type, and each one's length (no object per record). The first
    1 - val_fraction of the records train, the rest validate. Without a seq_len, chunks fit
    95% of the records whole."""
    from charrnn.data.records import parse

    recs = parse(text, cfg.data.records, cfg.data.label_field)
    if new_vocab:
        tok = Tokenizer.build("\n".join(recs.texts), cfg.tokenizer.level, cfg.tokenizer.max_vocab, cfg.tokenizer.min_count)
        tok = tok.with_records(recs.labels)
    elif tok.end_id is None:
        tok = tok.with_records(recs.labels)
    labels = recs.labels or [None] * len(recs.texts)
    ids: list[int] = []
    lengths: list[int] = []
    for t, l in zip(recs.texts, labels):
        n = len(ids)
        ids.append(tok.record_start(l))
        ids.extend(tok.encode(t, unknown="unk"))
        ids.append(tok.end_id)
        lengths.append(len(ids) - n)
    del recs
    flat = to_ids(ids, len(tok))
    del ids
    n_train = max(1, int(len(lengths) * (1 - cfg.data.val_fraction) + 1e-9))
    if cfg.data.seq_len is None:
        preds = sorted(n - 1 for n in lengths)
        cfg.data.seq_len = min(128, max(8, -(-preds[int(0.95 * (len(preds) - 1))] // 8) * 8))
    cut = sum(lengths[:n_train])
    return tok, (flat[:cut], lengths[:n_train]), (flat[cut:], lengths[n_train:])


def fit(run: Run, stop: Callable[[int], bool] | None = None) -> bool:
    """Step until a limit, Ctrl-C or ``stop``; evaluate and save on the way and at the end.
    Returns True when interrupted (last.pt then holds the state to resume)."""
    st, budget, rep, env = run.state, run.budget, run.reporter, run.env
    st.loss_sum = torch.zeros((), device=env.device) + st.loss_sum
    rep.start(budget.max_steps, None if budget.deadline is None else budget.deadline - run.t_start, st.step)
    first_step, tokens_done, step_seconds = st.step, 0, 0.0
    # Every rank knows when it last evaluated (only rank 0 keeps the history as it grows), so all
    # ranks agree on the final evaluation, which gathers their states.
    run.evaluated_at = st.history[-1]["step"] if st.history else None
    budget.loop_start = time.monotonic()
    interrupted = False
    sigint = _SigintFlag()
    # One thread or all, whichever steps faster now (threads.py): other busy processes on the cores.
    threads = torch.get_num_threads()
    tuner = ThreadTuner(threads, apply=torch.set_num_threads) if env.device.type == "cpu" and env.world == 1 else None
    try:
        run.model.train()
        try:
            while budget.max_steps is None or st.step < budget.max_steps:
                t0 = time.monotonic()
                out_of_time, progress = budget.check(st.step, run.val_tokens_scored, run.tokens_per_step)
                if out_of_time and st.step == first_step:
                    # Every run trains at least one step, its final evaluation then cut to fit,
                    # unless not even that fits.
                    out_of_time = not budget.can_take_one_step()
                out_of_time = out_of_time or run.watch.stopped_early  # rank 0 decides for all, as for time
                if env.world > 1:
                    out_of_time, interrupted_anywhere, progress = _agree(env, out_of_time, sigint.raised, progress)
                    if interrupted_anywhere:
                        raise KeyboardInterrupt
                if out_of_time:
                    if st.step == first_step and not run.watch.stopped_early:
                        raise CharrnnError(_no_time(run))
                    break
                with tuner.timed() if tuner else nullcontext():
                    _train_step(run, progress)
                t1 = time.monotonic()
                budget.step_times.append(t1 - t0)
                step_seconds += t1 - t0
                tokens_done += run.tokens_per_step
                st.train_seconds = budget.elapsed_before + t1 - budget.loop_start
                if st.eval_every is None and st.step - first_step == 20:
                    st.eval_every = budget.auto_eval_every(st.step)
                if st.step % REPORT_EVERY == 0 or st.step == budget.max_steps:
                    _report_train_loss(run, tokens_done / max(step_seconds, 1e-9))
                if st.eval_every and st.step % st.eval_every == 0 and st.step != budget.max_steps:
                    evaluate_and_save(run, final=False)
                if (sigint.raised and env.world == 1) or (stop is not None and stop(st.step)):
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
            sigint.holding = True  # another Ctrl-C now waits for the save below instead of breaking it
        finally:
            if not interrupted:
                sigint.restore()
        if st.loss_n:
            st.train_loss = float(st.loss_sum) / st.loss_n
        if interrupted:
            try:
                if env.world > 1:
                    st.ranks = gather_ranks(st.carried)
                if env.main and not sigint.hard:  # after a second Ctrl-C the state may be mid-step
                    checkpoint.save(run.payload(True), run.folder.last)
            finally:
                sigint.restore()
        elif run.evaluated_at != st.step:
            evaluate_and_save(run, final=True)
        run.tokens_per_second = tokens_done / max(step_seconds, 1e-9)
        rep.step(st.step, st.train_loss, run.tokens_per_second, time.monotonic() - run.t_start)
    finally:
        torch.set_num_threads(threads)
        rep.finish()
    return interrupted


def _train_step(run: Run, progress: float) -> None:
    """One optimizer step on the next batch, the hidden state carried (zeroed in the rows the
    batches mark: epoch and record starts, a stream's turn for the zero state)."""
    st, cfg, env = run.state, run.cfg, run.env
    x, y, reset = run.batches.get(st.step)
    if isinstance(reset, torch.Tensor):  # zero the rows that start afresh
        keep = (~reset).to(env.device, st.carried[0].dtype)[None, :, None]
        st.carried = tuple(s * keep for s in st.carried)
    elif reset:
        st.carried = run.model.zero_state(cfg.data.batch_size, env.device)
    lr = lr_at(st.step, progress, cfg.train.lr, cfg.train.warmup_steps, cfg.train.min_lr_ratio)
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
    with env.autocast():
        _, loss, carried = run.net(x, st.carried, y)
    st.carried = detach(carried)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.train.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    st.step += 1
    st.loss_sum += loss.detach()
    st.loss_n += 1


def _report_train_loss(run: Run, tokens_per_second: float) -> None:
    st = run.state
    st.train_loss = float(st.loss_sum) / st.loss_n
    st.loss_sum.zero_()
    st.loss_n = 0
    if not math.isfinite(st.train_loss):
        raise CharrnnError(f"training diverged at step {st.step} (loss {st.train_loss}); lower --lr")
    run.reporter.step(st.step, st.train_loss, tokens_per_second, time.monotonic() - run.t_start)


def evaluate_and_save(run: Run, final: bool) -> None:
    """Score the validation split, log it to metrics.jsonl, save best.pt when it improved (or at
    the end of a run that cannot evaluate) and last.pt always; time both for the budget."""
    st, env, budget = run.state, run.env, run.budget
    run.evaluated_at = st.step
    t0 = time.monotonic()
    score = None
    if run.val_seqs:
        score = score_records(run.model, run.val_seqs, run.tok.char_lengths(), env.autocast())
    elif len(run.val_ids) >= 2:
        score = evaluate(run.model, run.val_ids, run.tok.char_lengths(), batch_size=64, seq_len=256, warmup=256,
                         autocast=env.autocast(), max_tokens=run.eval_tokens, deadline=budget.eval_deadline())
    budget.eval_seconds = time.monotonic() - t0
    if score is not None and not math.isfinite(score.loss):
        raise CharrnnError(f"training diverged by step {st.step} (validation loss {score.loss}); lower --lr")
    if env.world > 1:
        st.ranks = gather_ranks(st.carried)
    if not env.main:
        return
    t0 = time.monotonic()
    recent = float(st.loss_sum) / st.loss_n if st.loss_n else st.train_loss
    record = {"step": st.step, "tokens": st.step * run.tokens_per_step,
              "train_loss": round(recent, 5) if math.isfinite(recent) else None,
              "seconds": round(time.monotonic() - run.t_start, 2)}
    if score is not None:
        record.update({f"val_{k}": v for k, v in score.to_dict().items() if k != "left_out"})
        run.reporter.evaluated(st.step, score)
    st.history.append(record)
    run.folder.append_metrics(record)
    improved = score is not None and score.loss < st.best_val_loss
    if improved:
        st.best_val_loss = score.loss
    if improved or (score is None and final):
        checkpoint.save(run.payload(False), run.folder.best)
        if final and env.world == 1 and env.device.type == "cpu":
            from charrnn.sampling.engine import Engine

            # The first `charrnn sample` of this run then starts without importing torch.
            Engine(run.tok, model=run.model, path=run.folder.best).kernel(1)
    run.watch.evaluated(run.model, st.history, st.train_seconds - budget.elapsed_before,
                        lambda path: checkpoint.save(run.payload(False), path))
    checkpoint.save(run.payload(True), run.folder.last)
    budget.save_seconds = time.monotonic() - t0


def summarize(run: Run, interrupted: bool) -> dict[str, Any]:
    st, model, env = run.state, run.model, run.env
    best = run.folder.best
    return {
        "best_val_loss": st.best_val_loss if math.isfinite(st.best_val_loss) else None,
        "final_val_loss": st.history[-1].get("val_loss") if st.history else None,
        "train_loss": st.train_loss if math.isfinite(st.train_loss) else None,
        "steps": st.step,
        "resumed_from_step": run.first_step,
        "tokens": st.step * run.tokens_per_step,
        "tokens_per_second": round(run.tokens_per_second, 1),
        "train_seconds": round(st.train_seconds - run.budget.elapsed_before, 2),
        "seconds": round(time.monotonic() - run.t_start, 2),
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(non_embedding=True),
        "precision": env.precision,
        "device": str(env.device),
        "checkpoint": str(best if best.exists() else run.folder.last),
        "out": str(run.folder.path),
        "interrupted": interrupted,
        "setup_seconds": round(run.budget.loop_start - run.started, 2),
        "eval_seconds": None if run.budget.eval_seconds is None else round(run.budget.eval_seconds, 3),
        "tokenize_seconds": round(run.corpus_seconds, 2),
        "stopped_early": run.watch.stopped_early,
        "sample_seconds": round(run.watch.sample_seconds, 3),
        "save_seconds": round(run.budget.save_seconds, 3),
        # Seconds of the time budget left when the run ended (negative: past it); the command's
        # exit comes after this.
        "budget_left_seconds": None if run.budget.deadline is None else round(run.budget.deadline - time.monotonic(), 2),
    } | ({"plan": run.plan} if run.plan else {})


def _param_groups(model: RNNLM, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases and the embedding table are left alone."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith("emb") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _SigintFlag:
    """The first Ctrl-C ends the run at the next step boundary (so last.pt is consistent);
    a second one interrupts at once, unless the interrupt's own save is under way (``holding``):
    then it is noted and the save completes."""

    def __init__(self) -> None:
        self.raised = self.hard = self.holding = False
        self._old = None
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def _handle(self, signum, frame) -> None:
        if self.holding:
            return
        if self.raised:
            self.hard = True
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _agree(env: Env, out_of_time: bool, interrupted: bool, progress: float) -> tuple[bool, bool, float]:
    """Every rank takes the same step: rank 0's clock decides when time is up and where the
    schedule stands; a Ctrl-C seen by any rank stops them all."""
    mine = [float(out_of_time), float(interrupted), progress] if env.main else [0.0, float(interrupted), 0.0]
    t = torch.tensor(mine, dtype=torch.float64, device=env.device)
    ranks.all_reduce(t)
    return bool(t[0] > 0), bool(t[1] > 0), float(t[2])
