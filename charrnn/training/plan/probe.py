"""Sizing by measurement: time a few real training steps of candidate shapes and precisions on
this machine, at the start of a budgeted run on one CPU or one GPU, and let
``autosize.choose_plan`` pick.

A table of sizes measured on one CPU is wrong on the next: bf16 products run 6x faster than
fp32 on a CPU with AMX and barely faster on one without, and the same shape trains at half the
tokens per second on one 2-core machine as on another. So the run times its own steps (a fresh model, the real batch shape, one
warm-up step and the median of five timed ones, a second or two in all, inside the budget),
smallest candidate first, and stops when bigger ones stop paying or the probe's share of the
budget is spent. The random state of the run is left as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from charrnn.model.lm import RNNLM, ModelShape
from charrnn.runtime.device import Env
from charrnn.training.plan.autosize import (
    Plan,
    batch_shape,
    candidates,
    choose_plan,
    dropout_for,
    embed_for,
    planned_tokens,
    predicted_plan_loss,
    step_limit_tokens,
)

Measured = dict[tuple[int, int, str], float]
MIN_BUDGET = 20.0  # seconds: below this the probe would eat too much of the run
PROBE_SHARE = 0.02  # of the time left, at most
PROBE_MAX = 3.0  # seconds, at most


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def tokens_per_second(
    layers: int,
    hidden: int,
    embed: int,
    vocab: int,
    batch: int,
    seq: int,
    precision: str,
    device: torch.device,
    steps: int = 5,
    dropout: float = 0.0,
    grad_clip: float = 5.0,
    max_seconds: float = 1.0,
) -> float:
    """Training tokens/s of one shape: forward, backward, gradient clipping and a fused AdamW step
    on random tokens, the median of ``steps`` timed steps after one warm-up (the fastest step
    overstates what training sustains by up to a third). ``dropout`` and ``grad_clip`` (0: none):
    the run's.
    Timing stops early once the timed steps took ``max_seconds``, after one at least: a big shape
    given in full (seconds a step) costs a few of its steps, not ``steps`` of them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = RNNLM(ModelShape(vocab, "lstm", layers, hidden, embed, dropout)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type in ("cuda", "cpu"))
        x = torch.randint(vocab, (batch, seq), device=device)
        env = Env(device, precision)
        times = []
        for i in range(steps + 1):
            _synchronize(device)
            t0 = time.perf_counter()
            with env.autocast():
                _, loss, _ = model(x, None, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            _synchronize(device)
            if i:
                times.append(time.perf_counter() - t0)
                if sum(times) >= max_seconds:
                    break
    return batch * seq / sorted(times)[len(times) // 2]


def measure(
    precisions: list[str],
    vocab: int,
    embed: Callable[[int], int],
    batch: int,
    seq: int,
    device: torch.device,
    seconds_left: float,
    shapes: list[tuple[int, int]],
    limit: float = PROBE_MAX,
    dropout: Callable[[int, int, float], float] = lambda layers, hidden, tokens: 0.0,
    grad_clip: float = 5.0,
    max_tokens: float | None = None,
    unique: float | None = None,
) -> Measured:
    """tokens/s per (layers, hidden, precision) of ``shapes``, smallest first. ``precisions``: the
    ones to time, a low one ("bf16", or "fp16" on a GPU) and "fp32", or just one; both are timed
    until the low one is clearly faster (by 10%), then only it. Stops after
    ``limit`` seconds (not counting the first shape, which pays the process's one-time warm-ups:
    about 2 s on our CPU, which the first training step would pay otherwise), or once two
    candidates in a row predict a worse loss than the best so far
    (bigger ones only run slower). Each shape is timed with all of torch's threads and, for as
    long as one thread keeps winning, with one (another busy process on the cores halved every
    figure timed with two threads, where training then ran one); the faster counts.
    ``dropout(layers, hidden, tokens)``: the dropout the run gives a shape that trains on
    ``tokens``. Each shape is timed with the dropout of a short run (``tokens`` 0), and again with
    its own where the tokens that timing buys call for another (a long run that repeats a small
    corpus: ``autosize.regularised``). ``max_tokens`` and ``unique`` (the corpus' training tokens)
    as for ``autosize.choose_plan``."""
    measured: Measured = {}
    t0 = time.monotonic()
    best, worse = float("inf"), 0
    threads = torch.get_num_threads()
    # Training steps with one thread where that is faster (threads.py: another busy process on
    # the cores, or products too small to split), so each shape is timed with one thread too, as
    # long as one thread keeps winning: wider products only split better.
    counts = [threads, 1] if threads > 1 and device.type == "cpu" else [threads]
    try:
        for i, (layers, hidden) in enumerate(shapes):
            if i == 1:  # the first shape paid the process's one-time warm-ups, which training would pay anyway
                t_first = time.monotonic()
            elif i > 1 and time.monotonic() - t_first > limit:
                break

            def timed(
                n: int, drop: float, layers=layers, hidden=hidden, precisions=precisions
            ) -> Measured:  # each precision, n threads
                torch.set_num_threads(n)
                return {
                    (layers, hidden, p): tokens_per_second(
                        layers, hidden, embed(hidden), vocab, batch, seq, p, device, dropout=drop, grad_clip=grad_clip
                    )
                    for p in precisions
                }

            short = dropout(layers, hidden, 0.0)
            rates = {n: timed(n, short) for n in counts}
            won = max(rates, key=lambda n: sum(rates[n].values()))
            tokens = planned_tokens(max(rates[won].values()), seconds_left - (time.monotonic() - t0), max_tokens)
            own = dropout(layers, hidden, tokens)
            if own != short:  # its dropout's masks slow each step (by about a tenth at 1x384)
                rates[won] = timed(won, own)
            measured.update(rates[won])
            if won == threads:
                counts = [threads]
            low = precisions[0]
            if len(precisions) > 1 and measured[(layers, hidden, low)] > 1.1 * measured[(layers, hidden, "fp32")]:
                # bf16's advantage grows with the width of the products: once it wins clearly, fp32
                # is not timed again. Losing at a narrow shape says nothing about wider ones (on an
                # EPYC without AMX fp32 wins at 128 and bf16 from 256 on), so both are kept then.
                precisions = [low]
            loss = predicted_plan_loss(
                measured,
                layers,
                hidden,
                seconds_left - (time.monotonic() - t0),
                vocab,
                embed(hidden),
                max_tokens,
                unique,
            )
            worse = worse + 1 if loss > best else 0
            best = min(best, loss)
            if worse >= 2:
                break
    finally:
        torch.set_num_threads(threads)
    return measured


def plan_run(
    cfg,
    env: Env,
    vocab: int,
    seconds_left: float | None,
    max_hidden: int = 1024,
    shapes: list[tuple[int, int]] | None = None,
    n_train: int | None = None,
) -> Plan | None:
    """Measure and choose where it applies: an LSTM in one process (a CPU, or one GPU: CUDA or
    MPS) with a time budget of MIN_BUDGET seconds or more. With its layers and hidden size both
    given only that shape is timed: its precision (when 'auto') and the passes over the corpus its
    steps buy (which set its regularisation) are still measured. Under torchrun each rank would
    time its own device and could choose another shape, so such runs keep the corpus-sized
    defaults (``autosize``). Returns the plan (None where nothing was measured): its layers, hidden
    size, precision (the one timed fastest where ``cfg`` says 'auto', else the given one) and peak
    lr (the given one where ``cfg`` has one). ``cfg`` and ``env`` are left as they are.
    ``max_hidden``: the widest layer the corpus can feed; ``shapes``: the candidates (default
    ``autosize.candidates``); ``n_train``: the training tokens, which with the tokens a shape's
    steps buy set its dropout as ``autosize`` will (None: no dropout)."""
    m, t = cfg.model, cfg.train
    kind = env.device.type
    if env.world > 1 or m.cell != "lstm" or seconds_left is None or seconds_left < MIN_BUDGET:
        return None
    shapes = shapes or [(m.layers or l, h) for l, h in candidates(seconds_left, kind)]
    shapes = [(l, h) for l, h in shapes if m.layers in (None, l) and m.hidden in (None, h) and h <= max_hidden]
    if m.hidden is not None and not shapes:
        shapes = [(m.layers or l, m.hidden) for l in dict.fromkeys(l for l, _ in candidates(seconds_left, kind))]
    if not shapes:
        return None
    embed = lambda hidden: m.embed or embed_for(hidden, vocab)  # noqa: E731
    # 'auto' races its low precision (bf16 on a CPU that has it, fp16 on CUDA) against fp32.
    precisions = [env.precision, "fp32"] if t.precision == "auto" and env.precision != "fp32" else [env.precision]
    t0 = time.monotonic()
    epochs: dict[tuple[int, int], float] = {}  # per shape: the passes its dropout was decided on

    def dropout(layers: int, hidden: int, tokens: float) -> float:
        if n_train is None:
            return m.dropout or 0.0
        epochs[(layers, hidden)] = tokens / max(n_train, 1)
        if m.dropout is not None:
            return m.dropout
        return dropout_for(n_train, layers, hidden, embed(hidden), vocab, epochs[(layers, hidden)])

    default_batch, default_seq = batch_shape(kind)
    batch, seq = cfg.data.batch_size or default_batch, cfg.data.seq_len or default_seq
    # A step limit that ends the run before the budget caps the tokens every candidate gets.
    max_tokens = step_limit_tokens(n_train, batch * seq, t.max_steps, t.epochs)
    measured = measure(
        precisions,
        vocab,
        embed,
        batch,
        seq,
        env.device,
        seconds_left,
        shapes,
        min(PROBE_MAX, PROBE_SHARE * seconds_left),
        dropout,
        t.grad_clip,
        max_tokens,
        n_train,
    )
    plan = choose_plan(measured, seconds_left - (time.monotonic() - t0), vocab, embed, max_tokens, n_train, kind)
    plan.epochs = epochs.get((plan.layers, plan.hidden))
    if t.lr is not None:
        plan.lr = t.lr  # what it prints is what runs: --lr given wins
    return plan
