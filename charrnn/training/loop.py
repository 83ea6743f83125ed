"""The training loop: device, precision, optimizer, schedule, evaluation, checkpoint cadence.

``train()`` is the library entry point; the CLI only builds its arguments. Progress goes to a
``Reporter`` (silent by default), never to stdout.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from charrnn import checkpoint
from charrnn.config import RunConfig, resumed_config
from charrnn.data import make_batches, split, to_ids
from charrnn.device import Env, setup_env
from charrnn.errors import CharrnnError, UsageError
from charrnn.evaluate import Score, evaluate
from charrnn.model import RNNLM, ModelShape, detach
from charrnn.sampling.native import build
from charrnn.tokenizer import Tokenizer
from charrnn.training.autosize import autosize


DEFAULT_BUDGET = 300


class Reporter:
    """Receives progress; the CLI's subclass draws it on stderr."""

    def message(self, text: str) -> None: ...
    def start(self, total_steps: int | None, budget: float | None, step: int) -> None: ...
    def step(self, step: int, loss: float, tokens_per_second: float, elapsed: float) -> None: ...
    def evaluated(self, step: int, score: Score) -> None: ...
    def finish(self) -> None: ...


def lr_at(step: int, progress: float, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then linear decay to ``peak * min_ratio`` at progress 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (1 - (1 - min_ratio) * min(max(progress, 0.0), 1.0))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _rng_state() -> dict[str, Any]:
    s = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["cpu"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def train(
    cfg: RunConfig,
    text: str,
    corpus_name: str = "corpus",
    *,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | None = None,
    reporter: Reporter | None = None,
    started: float | None = None,
    stop: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """Train on ``text`` and return a summary. A time budget counts from ``started`` (time.monotonic
    of the command's start; default now). ``stop(step)`` returning True ends the run early like Ctrl-C."""
    rep = reporter or Reporter()
    t_start = time.monotonic()
    if not (cfg.train.max_steps or cfg.train.epochs or cfg.train.time_budget or resume):
        cfg.train.time_budget = DEFAULT_BUDGET
        rep.message(f"no limit given: training for {DEFAULT_BUDGET // 60} minutes (set --time-budget, --max-steps or --epochs)")
    out = Path(cfg.train.out or checkpoint.DEFAULT_ROOT / corpus_name)
    corpus_sha = _sha(text)
    resumed = None
    if not resume and (out / "last.pt").exists():
        if not overwrite:
            raise UsageError(f"{out} already holds a run: --resume continues it, --overwrite starts over, --out picks another folder")
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise UsageError(f"nothing to resume: {last} does not exist; drop --resume to start a new run")
        resumed = checkpoint.load(last)
        if resumed["corpus_sha"] != corpus_sha:
            raise UsageError(f"the corpus differs from the one {out} was trained on; use --init-from to fine-tune")
        new_budget = cfg.train.time_budget
        cfg = resumed_config(RunConfig.from_dict(resumed["config"]), cfg)
    budget = cfg.train.time_budget
    if resumed and budget and new_budget is None:
        # The saved budget covered the whole run: what is left of it is this command's.
        budget = max(budget - resumed["train_seconds"], 1.0)
    deadline = (started if started is not None else t_start) + budget if budget else None
    env = setup_env(cfg.train.device, cfg.train.precision)
    if env.world == 1 and env.device.type == "cpu":
        build.lib()  # a first build of the sampling kernel happens now, not in the timed final save

    # Tokenizer: from the run being resumed, the model being fine-tuned, or the corpus.
    parent = checkpoint.load(init_from) if init_from else None
    source = resumed or parent
    tok = Tokenizer.from_dict(source["tokenizer"]) if source else Tokenizer.build(
        text, cfg.tokenizer.level, cfg.tokenizer.max_vocab, cfg.tokenizer.min_count
    )
    if source and source is parent:
        cfg.tokenizer.level = tok.level
    ids = to_ids(tok.encode(text, unknown="unk"), len(tok))
    train_ids, val_ids = split(ids, cfg.data.val_fraction)
    if len(val_ids) < 2:
        rep.message("validation split is empty: reporting training loss only (raise --val-fraction)")

    shape_from = source["shape"] if source else None
    notes = autosize(cfg, len(train_ids), len(tok), env.device.type, shape_from)
    if not resumed:
        for n in notes:
            rep.message(n)
    torch.manual_seed(cfg.train.seed + env.rank)
    shape = ModelShape(**shape_from) if shape_from else ModelShape(
        len(tok), cfg.model.cell, cfg.model.layers, cfg.model.hidden, cfg.model.embed, cfg.model.dropout
    )
    shape.dropout = cfg.model.dropout
    model = RNNLM(shape)
    if source:
        model.load_state_dict(source["model"])
    model.to(env.device)
    net = torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model
    opt = torch.optim.AdamW(
        _param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr, betas=(0.9, 0.99),
        fused=env.device.type in ("cuda", "cpu"),
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=env.precision == "fp16")

    batches = make_batches(cfg.data.batching, train_ids, cfg.data.batch_size, cfg.data.seq_len, cfg.train.seed, env.rank, env.world)
    spe = batches.steps_per_epoch
    max_steps = cfg.train.max_steps
    if cfg.train.epochs:
        max_steps = min(max_steps or math.inf, math.ceil(cfg.train.epochs * spe))
    if max_steps is None and deadline is None:
        raise UsageError("give a limit: --max-steps, --epochs or --time-budget")

    step, elapsed_before, best, history = 0, 0.0, math.inf, []
    state = model.zero_state(cfg.data.batch_size, env.device)
    eval_every = cfg.train.eval_every
    if resumed:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        if "scaler" in resumed:
            scaler.load_state_dict(resumed["scaler"])
        step, elapsed_before = resumed["step"], resumed["train_seconds"]
        best, history = resumed["best_val_loss"], resumed["history"]
        eval_every = cfg.train.eval_every or resumed["eval_every"]
        state = tuple(s.to(env.device) for s in resumed["state"])
        _set_rng_state(resumed["rng"])
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(cfg.to_yaml(), out / "config.yaml")

    token_chars = tok.char_lengths()
    B, T = cfg.data.batch_size, cfg.data.seq_len

    def run_eval() -> Score | None:
        if len(val_ids) < 2:
            return None
        return evaluate(model, val_ids, token_chars, batch_size=64, seq_len=256, warmup=256, autocast=env.autocast())

    def payload(with_optimizer: bool) -> dict[str, Any]:
        d = {
            "format": checkpoint.FORMAT,
            "charrnn_version": _version(),
            "config": cfg.to_dict(),
            "shape": model.shape_dict(),
            "tokenizer": tok.to_dict(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "step": step,
            "tokens_seen": step * B * T * env.world,
            "best_val_loss": best,
            "history": history,
            "corpus": corpus_name,
            "corpus_sha": corpus_sha,
        }
        if with_optimizer:
            d.update(
                optimizer=opt.state_dict(), rng=_rng_state(), state=[s.detach().cpu() for s in state],
                train_seconds=elapsed_before + train_time, eval_every=eval_every,
                loss_window=[float(loss_sum), loss_n, train_loss],
            )
            if env.precision == "fp16":
                d["scaler"] = scaler.state_dict()
        return d

    def do_eval_and_save(final: bool) -> None:
        nonlocal best
        t0 = time.monotonic()
        score = run_eval()
        timing["eval"] = time.monotonic() - t0
        if score is not None and not math.isfinite(score.loss):
            raise CharrnnError(f"training diverged by step {step} (validation loss {score.loss}); lower --lr")
        if not env.main:
            return
        t0 = time.monotonic()
        recent = float(loss_sum) / loss_n if loss_n else train_loss
        record = {"step": step, "tokens": step * B * T * env.world,
                  "train_loss": round(recent, 5) if math.isfinite(recent) else None,
                  "seconds": round(time.monotonic() - t_start, 2)}
        if score is not None:
            record.update({f"val_{k}": v for k, v in score.to_dict().items()})
            rep.evaluated(step, score)
        history.append(record)
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        improved = score is not None and score.loss < best
        if improved:
            best = score.loss
        if improved or (score is None and final):
            checkpoint.save(payload(False), out / "best.pt")
            if final and env.world == 1 and env.device.type == "cpu":
                # The first `charrnn sample` of this run then starts without importing torch.
                from charrnn.sampling.engine import Engine

                Engine(tok, model=model, path=out / "best.pt").kernel(1)
        checkpoint.save(payload(True), out / "last.pt")
        timing["save"] = time.monotonic() - t0

    # Reserve time at the end for the final evaluation and save (estimated, then measured).
    # A save writes weights and two Adam moments; guess 200 MB/s until one is timed.
    timing = {"eval": None, "save": 0.05 + 12 * model.num_parameters() / 2e8}
    train_time, train_loss, tokens_done = 0.0, float("nan"), 0
    loss_sum, loss_n = torch.zeros((), device=env.device), 0
    if resumed:
        window_sum, loss_n, train_loss = resumed["loss_window"]
        loss_sum += window_sum
    if eval_every is None and deadline is None:
        eval_every = max(1, max_steps // 5)  # with a budget it is set from the first steps' speed
    rep.start(max_steps, None if deadline is None else deadline - t_start, step)
    interrupted = False
    sigint = _SigintFlag()
    t_loop = time.monotonic()
    step_times: deque[float] = deque(maxlen=50)
    first_step, step_seconds = step, 0.0
    try:
        model.train()
        try:
            while max_steps is None or step < max_steps:
                now = time.monotonic()
                progress = step / max_steps if max_steps else 0.0
                out_of_time = False
                if deadline is not None:
                    reserve = _reserve(timing, step_times, len(val_ids), B * T)
                    out_of_time = now + reserve >= deadline
                    left = deadline - t_loop - reserve
                    progress = max(progress, (elapsed_before + now - t_loop) / max(elapsed_before + left, 1e-6))
                if env.world > 1:
                    out_of_time, interrupted_anywhere, progress = _agree(env, out_of_time, sigint.raised, progress)
                    if interrupted_anywhere:
                        raise KeyboardInterrupt
                if out_of_time:
                    break
                x, y, reset = batches.get(step)
                if reset:
                    state = model.zero_state(B, env.device)
                lr = lr_at(step, progress, cfg.train.lr, cfg.train.warmup_steps, cfg.train.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
                with env.autocast():
                    _, loss, state = net(x, state, y)
                state = detach(state)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.train.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(opt)
                scaler.update()
                step += 1
                loss_sum += loss.detach()
                loss_n += 1
                t_now = time.monotonic()
                step_times.append(t_now - now)
                step_seconds += t_now - now
                tokens_done += B * T * env.world
                train_time = t_now - t_loop
                if eval_every is None and deadline is not None and step - first_step == 20:
                    eval_every = _auto_eval_every(step_times, deadline - t_now, max_steps, step)
                if step % 10 == 0 or step == max_steps:
                    train_loss = float(loss_sum) / loss_n
                    loss_sum.zero_()
                    loss_n = 0
                    if not math.isfinite(train_loss):
                        raise CharrnnError(f"training diverged at step {step} (loss {train_loss}); lower --lr")
                    rep.step(step, train_loss, tokens_done / max(step_seconds, 1e-9), time.monotonic() - t_start)
                if eval_every and step % eval_every == 0 and step != max_steps:
                    do_eval_and_save(final=False)
                if (sigint.raised and env.world == 1) or (stop is not None and stop(step)):
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sigint.restore()
        if loss_n:
            train_loss = float(loss_sum) / loss_n
        if interrupted:
            if env.main and not sigint.hard:  # after a second Ctrl-C the state may be mid-step
                checkpoint.save(payload(True), out / "last.pt")
        elif not history or history[-1]["step"] != step:
            do_eval_and_save(final=True)
        rep.step(step, train_loss, tokens_done / max(step_seconds, 1e-9), time.monotonic() - t_start)
    finally:
        rep.finish()
    summary = {
        "best_val_loss": best if math.isfinite(best) else None,
        "final_val_loss": history[-1].get("val_loss") if history else None,
        "train_loss": train_loss if math.isfinite(train_loss) else None,
        "steps": step,
        "tokens": step * B * T * env.world,
        "tokens_per_second": round(tokens_done / max(step_seconds, 1e-9), 1),
        "train_seconds": round(train_time, 2),
        "seconds": round(time.monotonic() - t_start, 2),
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(non_embedding=True),
        "precision": env.precision,
        "device": str(env.device),
        "checkpoint": str(out / ("best.pt" if (out / "best.pt").exists() else "last.pt")),
        "out": str(out),
        "interrupted": interrupted,
    }
    if env.world > 1:
        dist.destroy_process_group()
    return summary


def saved_corpus(out: str | None) -> str | None:
    """The corpus a run in ``out`` (default: the default corpus' run) was trained on, from its config.yaml."""
    from charrnn.config import load_yaml
    from charrnn.data import DEFAULT_CORPUS

    path = Path(out or checkpoint.DEFAULT_ROOT / DEFAULT_CORPUS) / "config.yaml"
    if not path.is_file():
        raise UsageError(f"nothing to resume: {path} does not exist; give --out the run folder")
    return (load_yaml(path).get("data") or {}).get("corpus")


def _param_groups(model: RNNLM, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases and the embedding table are left alone."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith("emb") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _reserve(timing: dict, step_times: deque[float], val_tokens: int, tokens_per_step: int) -> float:
    """Seconds to keep for the final evaluation and save."""
    ev = timing["eval"]
    if ev is None:
        # Before the first evaluation, guess: a forward pass costs about a third of a training step.
        per_step = sorted(step_times)[len(step_times) // 2] if step_times else 0.05
        ev = val_tokens / tokens_per_step * per_step / 3 + 0.3
    # The margin covers the interpreter's exit, which unloading torch makes slow.
    return 1.15 * ev + 1.5 * timing["save"] + 0.6


def _auto_eval_every(step_times: deque[float], time_left: float, max_steps: int | None, step: int) -> int:
    """About four evaluations over the run."""
    per_step = sorted(step_times)[len(step_times) // 2]
    expected = time_left / per_step
    if max_steps is not None:
        expected = min(expected, max_steps - step)
    return max(1, int(expected / 4))


class _SigintFlag:
    """The first Ctrl-C ends the run at the next step boundary (so last.pt is consistent);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.raised = self.hard = False
        self._old = None
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def _handle(self, signum, frame) -> None:
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
    dist.all_reduce(t)
    return bool(t[0] > 0), bool(t[1] > 0), float(t[2])


def _version() -> str:
    from charrnn import __version__

    return __version__
