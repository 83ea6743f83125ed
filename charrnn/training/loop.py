"""The trainer: ``train()`` sets a run up (setup.py) and fits it: steps, evaluations and
checkpoints until a limit, Ctrl-C or ``stop``.

Progress goes to a ``Reporter`` (report.py; silent by default), never to stdout. What the run
carries from step to step lives in ``TrainState`` (state.py), the clock in ``Budget``
(budget.py), the files in ``RunFolder`` (run_folder.py).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.distributed as dist

from charrnn import checkpoint
from charrnn.config import RunConfig
from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate, score_records
from charrnn.model.lm import detach
from charrnn.runtime import ranks
from charrnn.runtime.allocator import keep_freed_memory
from charrnn.runtime.threads import ThreadTuner
from charrnn.training.budget import lr_at
from charrnn.training.report import Reporter
from charrnn.training.setup import Run, no_time, setup
from charrnn.training.state import gather_ranks

REPORT_EVERY = 10
"""Steps between training-loss reports."""


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
    """Train on ``text``, or else on the files ``inputs`` (see data/corpus.py; None: the default
    corpus), and return a summary (see ``TrainResult`` in api.py for its fields).

    A time budget counts from ``started`` (time.monotonic() of the command's start; default now).
    ``stop(step)`` returning True ends the run early like Ctrl-C. Raises UsageError for settings
    that cannot work, CharrnnError when training diverges."""
    keep_freed_memory()  # a step's big buffers come back from the heap, not from fresh pages (allocator.py)
    run = setup(
        cfg,
        text,
        corpus_name,
        inputs=inputs,
        resume=resume,
        overwrite=overwrite,
        init_from=init_from,
        reporter=reporter or Reporter(),
        started=time.monotonic() if started is None else started,
    )
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


def fit(run: Run, stop: Callable[[int], bool] | None = None) -> bool:
    """Step until a limit, Ctrl-C or ``stop``; evaluate and save on the way and at the end.
    Returns True when interrupted (last.pt then holds the state to resume)."""
    st, budget = run.state, run.budget
    st.loss_sum = torch.zeros((), device=run.env.device) + st.loss_sum
    run.reporter.start(budget.max_steps, None if budget.deadline is None else budget.deadline - run.started, st.step)
    budget.loop_start = time.monotonic()
    try:
        with _ctrl_c() as sigint, _threads(run) as timed:
            interrupted = _steps(run, sigint, timed, stop)
            if not interrupted:
                sigint.restore()  # a Ctrl-C during the final evaluation stops the command at once
            if st.loss_n:
                st.train_loss = float(st.loss_sum) / st.loss_n
            if interrupted:
                _save_interrupted(run, sigint)
            elif run.progress.evaluated_at != st.step:
                evaluate_and_save(run, final=True)
        run.reporter.step(st.step, st.train_loss, run.progress.tokens_per_second, time.monotonic() - run.started)
    finally:
        run.reporter.finish()
    return interrupted


def _steps(run: Run, sigint: _SigintFlag, timed: Callable[[], Any], stop: Callable[[int], bool] | None) -> bool:
    """The training steps, each followed by its reports, evaluations and saves; True when a
    Ctrl-C or ``stop`` ended them (``sigint.holding`` is then set)."""
    st, budget = run.state, run.budget
    run.model.train()
    try:
        while budget.max_steps is None or st.step < budget.max_steps:
            t0 = time.monotonic()
            out_of_time, schedule = _out_of_time(run, sigint)
            if out_of_time:
                return False
            with timed():
                _train_step(run, schedule)
            _after_step(run, t0)
            if (sigint.raised and run.env.world == 1) or (stop is not None and stop(st.step)):
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        sigint.holding = True  # another Ctrl-C now waits for the save below instead of breaking it
        return True
    return False


def _out_of_time(run: Run, sigint: _SigintFlag) -> tuple[bool, float]:
    """(whether to stop before the next step, where the schedule stands in [0, 1]). Every run
    trains at least one step, its final evaluation then cut to fit, unless not even that fits
    (CharrnnError). Under torchrun every rank takes rank 0's decision, and a Ctrl-C seen by any
    rank stops them all."""
    st, budget, first_step = run.state, run.budget, run.progress.first_step
    out_of_time, schedule = budget.check(st.step, run.val_tokens_scored, st.tokens_per_step)
    if out_of_time and st.step == first_step:
        out_of_time = not budget.can_take_one_step()
    out_of_time = out_of_time or run.watch.stopped_early  # rank 0 decides for all, as for time
    if run.env.world > 1:
        out_of_time, interrupted_anywhere, schedule = _agree(
            run.env.main, out_of_time, sigint.raised, schedule, run.env.device
        )
        if interrupted_anywhere:
            raise KeyboardInterrupt
    if out_of_time and st.step == first_step and not run.watch.stopped_early:
        raise CharrnnError(no_time(run))
    return out_of_time, schedule


def _after_step(run: Run, t0: float) -> None:
    """Account for the step that began at ``t0``; report, evaluate and save when their turn comes."""
    st, budget, progress = run.state, run.budget, run.progress
    t1 = time.monotonic()
    budget.step_times.append(t1 - t0)
    progress.seconds += t1 - t0
    progress.tokens += st.tokens_per_step
    st.train_seconds = budget.elapsed_before + t1 - budget.loop_start
    if st.eval_every is None and st.step - progress.first_step == 20:
        st.eval_every = budget.auto_eval_every(st.step)
    if st.step % REPORT_EVERY == 0 or st.step == budget.max_steps:
        _report_train_loss(run, progress.tokens_per_second)
    if st.eval_every and st.step % st.eval_every == 0 and st.step != budget.max_steps:
        evaluate_and_save(run, final=False)


def _train_step(run: Run, schedule: float) -> None:
    """One optimizer step on the next batch, the hidden state carried (zeroed in the rows the
    batches mark: epoch and record starts, a stream's turn for the zero state)."""
    st, cfg, env = run.state, run.cfg, run.env
    x, y, reset = run.batches.get(st.step)
    if isinstance(reset, torch.Tensor):  # zero the rows that start afresh
        keep = (~reset).to(env.device, st.carried[0].dtype)[None, :, None]
        st.carried = tuple(s * keep for s in st.carried)
    elif reset:
        st.carried = run.model.zero_state(cfg.data.batch_size, env.device)
    lr = lr_at(st.step, schedule, cfg.train.lr, cfg.train.warmup_steps, cfg.train.min_lr_ratio)
    for g in st.optimizer.param_groups:
        g["lr"] = lr
    x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
    with env.autocast():
        _, loss, carried = run.net(x, st.carried, y)
    st.carried = detach(carried)
    st.optimizer.zero_grad(set_to_none=True)
    st.scaler.scale(loss).backward()
    if cfg.train.grad_clip > 0:
        st.scaler.unscale_(st.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
    st.scaler.step(st.optimizer)
    st.scaler.update()
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
    run.reporter.step(st.step, st.train_loss, tokens_per_second, time.monotonic() - run.started)


def evaluate_and_save(run: Run, final: bool) -> None:
    """Score the validation split, log it to metrics.jsonl, save best.pt when it improved (or at
    the end of a run that cannot evaluate) and last.pt always; time both for the budget."""
    st, env, budget = run.state, run.env, run.budget
    run.progress.evaluated_at = st.step
    t0 = time.monotonic()
    score = validate(run)
    budget.eval_seconds = time.monotonic() - t0
    if score is not None and not math.isfinite(score.loss):
        raise CharrnnError(f"training diverged by step {st.step} (validation loss {score.loss}); lower --lr")
    if env.world > 1:
        st.ranks = gather_ranks(st.carried)
    if not env.main:
        return
    t0 = time.monotonic()
    record = _record(run, score)
    st.history.append(record)
    run.folder.append_metrics(record)
    improved = score is not None and score.loss < st.best_val_loss
    if improved:
        st.best_val_loss = score.loss
    if improved or (score is None and final):
        checkpoint.save(st.state_dict(resumable=False), run.folder.best)
        if final and env.world == 1 and env.device.type == "cpu":
            _cache_sampling_pack(run)
    run.watch.evaluated(
        run.model,
        st.history,
        st.train_seconds - budget.elapsed_before,
        lambda path: checkpoint.save(st.state_dict(resumable=False), path),
    )
    checkpoint.save(st.state_dict(), run.folder.last)
    budget.save_seconds = time.monotonic() - t0


def validate(run: Run):
    """The validation split's ``Score`` (None when it is empty): a records run's records each on
    its own, else evenly spaced windows of at most ``eval_tokens`` tokens, cut short where the
    budget's deadline needs the time for the save."""
    tok, env = run.tokens.tokenizer, run.env
    if run.tokens.val_records:
        return score_records(run.model, run.tokens.val_records, tok.char_lengths(), env.autocast())
    if len(run.tokens.val) >= 2:
        return evaluate(
            run.model,
            run.tokens.val,
            tok.char_lengths(),
            batch_size=64,
            seq_len=256,
            warmup=256,
            autocast=env.autocast(),
            max_tokens=run.eval_tokens,
            deadline=run.budget.eval_deadline(),
        )
    return None


def _record(run: Run, score) -> dict[str, Any]:
    """An evaluation's line of metrics.jsonl (and the history): losses in nats/token, the seconds
    since the command started."""
    st = run.state
    recent = float(st.loss_sum) / st.loss_n if st.loss_n else st.train_loss
    record = {
        "step": st.step,
        "tokens": st.step * st.tokens_per_step,
        "train_loss": round(recent, 5) if math.isfinite(recent) else None,
        "seconds": round(time.monotonic() - run.started, 2),
    }
    if score is not None:
        record.update({f"val_{k}": v for k, v in score.to_dict().items() if k != "left_out"})
        run.reporter.evaluated(st.step, score)
    return record


def _cache_sampling_pack(run: Run) -> None:
    """Pack the final best.pt's weights for the sampling kernel now, so the run's first
    `charrnn sample` starts without importing torch."""
    from charrnn.sampling.engine import Engine

    Engine(run.tokens.tokenizer, model=run.model, path=run.folder.best).kernel(1)


def _save_interrupted(run: Run, sigint: _SigintFlag) -> None:
    """last.pt, so that --resume continues exactly (skipped after a second Ctrl-C, which may
    have come mid-step)."""
    st = run.state
    if run.env.world > 1:
        st.ranks = gather_ranks(st.carried)
    if run.env.main and not sigint.hard:
        checkpoint.save(st.state_dict(), run.folder.last)


def summarize(run: Run, interrupted: bool) -> dict[str, Any]:
    st, model, env, progress = run.state, run.model, run.env, run.progress
    best = run.folder.best
    return {
        "best_val_loss": st.best_val_loss if math.isfinite(st.best_val_loss) else None,
        "final_val_loss": st.history[-1].get("val_loss") if st.history else None,
        "train_loss": st.train_loss if math.isfinite(st.train_loss) else None,
        "steps": st.step,
        "resumed_from_step": progress.first_step,
        "tokens": st.step * st.tokens_per_step,
        "tokens_per_second": round(progress.tokens_per_second, 1),
        "train_seconds": round(st.train_seconds - run.budget.elapsed_before, 2),
        "seconds": round(time.monotonic() - run.started, 2),
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(non_embedding=True),
        "precision": env.precision,
        "device": str(env.device),
        "checkpoint": str(best if best.exists() else run.folder.last),
        "out": str(run.folder.path),
        "interrupted": interrupted,
        "setup_seconds": round(run.budget.loop_start - run.started, 2),
        "eval_seconds": None if run.budget.eval_seconds is None else round(run.budget.eval_seconds, 3),
        "tokenize_seconds": round(run.tokens.seconds, 2),
        "stopped_early": run.watch.stopped_early,
        "sample_seconds": round(run.watch.sample_seconds, 3),
        "save_seconds": round(run.budget.save_seconds, 3),
        "thread_tuning": run.progress.thread_tuning,
        # Seconds of the time budget left when the run ended (negative: past it); the command's
        # exit comes after this.
        "budget_left_seconds": None
        if run.budget.deadline is None
        else round(run.budget.deadline - time.monotonic(), 2),
    } | ({"plan": run.plan.to_dict()} if run.plan else {})


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


@contextmanager
def _ctrl_c() -> Iterator[_SigintFlag]:
    """Ctrl-C as a flag the loop reads between steps, for the loop's life and its final save."""
    flag = _SigintFlag()
    try:
        yield flag
    finally:
        flag.restore()


@contextmanager
def _threads(run: Run) -> Iterator[Callable[[], Any]]:
    """``timed()`` contexts for the steps. On one CPU process, one thread or all, whichever steps
    faster now (runtime/threads.py: other busy processes on the cores), where the thread count
    changes no number the step computes on this machine; else all threads throughout, so that the
    same seed trains the same model. The thread count is restored at the end."""
    threads = torch.get_num_threads()
    tuner = None
    if (
        run.env.device.type == "cpu"
        and run.env.world == 1
        and threads > 1
        and thread_count_changes_nothing(run, threads)
    ):
        tuner = ThreadTuner(threads, apply=torch.set_num_threads)
    run.progress.thread_tuning = tuner is not None
    try:
        yield (lambda: tuner.timed()) if tuner else nullcontext
    finally:
        torch.set_num_threads(threads)


def thread_count_changes_nothing(run: Run, most: int) -> bool:
    """Whether a training step computes the same numbers with one thread as with ``most``: the
    loss, the gradient norm and every gradient after clipping, bit for bit, of the step's forward
    and backward on the run's next batch. Reductions split across threads round differently
    (the gradient norm of a large layer, bf16 products on some CPUs), and then a run that
    switched between counts would not repeat. The run's weights, gradients and random state are
    left as they were."""
    model, st, env, clip = run.model, run.state, run.env, run.cfg.train.grad_clip
    x, y, _ = run.batches.get(st.step)
    x, y = x.to(env.device), y.to(env.device)
    results = []
    with torch.random.fork_rng(devices=[]):
        for n in (1, most):
            torch.set_num_threads(n)
            torch.manual_seed(0)  # the same dropout masks for both
            model.zero_grad(set_to_none=True)
            with env.autocast():
                _, loss, _ = model(x, st.carried, y)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else math.inf)
            results.append([loss.detach(), norm] + [p.grad for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    torch.set_num_threads(most)
    return all(torch.equal(a, b) for a, b in zip(*results))


def _agree(
    main: bool, out_of_time: bool, interrupted: bool, schedule: float, device: torch.device
) -> tuple[bool, bool, float]:
    """Every rank takes the same step: rank 0's clock decides when time is up and where the
    schedule stands; a Ctrl-C seen by any rank stops them all."""
    mine = [float(out_of_time), float(interrupted), schedule] if main else [0.0, float(interrupted), 0.0]
    t = torch.tensor(mine, dtype=torch.float64, device=device)
    ranks.all_reduce(t)
    return bool(t[0] > 0), bool(t[1] > 0), float(t[2])
