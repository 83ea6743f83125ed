"""Everything a run carries from step to step, and what best.pt and last.pt hold: written here
and restored here, nowhere else (``TrainState``).

A checkpoint is a plain dict of tensors, numbers, strings and lists (loadable with
``weights_only=True``). best.pt holds what sampling and scoring need: the run config, the model
shape and weights, the tokenizer, the step and the history. last.pt adds what an exact resume
needs: the optimizer (AdamW moments), the grad scaler (fp16), the RNG states, the hidden state
carried between batches, the seconds trained, the evaluation cadence and the training-loss window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from charrnn import checkpoint
from charrnn.config import RunConfig
from charrnn.data.tokenizer import Tokenizer
from charrnn.model.lm import RNNLM, State


def rng_state() -> dict[str, Any]:
    s = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["cpu"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def gather_ranks(carried: State) -> list[dict[str, Any]]:
    """Every rank's carried state and RNG, on every rank (a collective: all ranks must call it).
    Pickled to bytes and gathered as uint8 tensors, as ``all_gather_object`` does, through
    ranks.py, which keeps the gathers' work objects (an abort at exit otherwise)."""
    import pickle

    import torch.distributed as dist

    from charrnn.runtime import ranks

    mine = {"state": [s.detach().cpu() for s in carried], "rng": rng_state()}
    data = torch.frombuffer(bytearray(pickle.dumps(mine)), dtype=torch.uint8)
    world = dist.get_world_size()
    size = torch.tensor([data.numel()], dtype=torch.long)
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    ranks.all_gather(sizes, size)
    padded = torch.zeros(max(int(n) for n in sizes), dtype=torch.uint8)
    padded[: data.numel()] = data
    gathered = [torch.empty_like(padded) for _ in range(world)]
    ranks.all_gather(gathered, padded)
    return [pickle.loads(g[: int(n)].numpy().tobytes()) for g, n in zip(gathered, sizes)]


@dataclass
class TrainState:
    """All that last.pt holds: what the run is (its settings, tokenizer, corpus), the objects it
    trains (model, optimizer, grad scaler), and the loop's counters and carried values. Loss
    figures are in nats/token. ``state_dict`` writes it, ``from_checkpoint`` restores it."""

    cfg: RunConfig
    tokenizer: Tokenizer
    corpus: str
    """The corpus' name (the first input's, for the default run folder)."""
    corpus_sha: str
    """The first 16 hex digits of the SHA-256 of the text trained on: a resume refuses another text."""
    model: RNNLM
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    tokens_per_step: int
    """Tokens of one optimizer step over all ranks."""
    step: int = 0
    """Optimizer steps taken in the whole run."""
    train_seconds: float = 0.0
    """Seconds spent in the training loop, by every command of the run (resumes add up)."""
    best_val_loss: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per evaluation, as in metrics.jsonl."""
    eval_every: int | None = None
    loss_sum: float | torch.Tensor = 0.0
    """Sum of the per-step losses since the last report (every 10 steps); a tensor on the device
    while training, so that no step waits for the device to sync."""
    loss_n: int = 0
    train_loss: float = float("nan")
    """The last reported mean training loss."""
    carried: State | None = None
    """The hidden state carried from one batch to the next (truncated BPTT), (layers, B, H) each."""
    ranks: list[dict[str, Any]] | None = None
    """Under torchrun: each rank's carried state and RNG (``gather_ranks``), saved in last.pt so
    that every rank resumes its own streams exactly."""

    def state_dict(self, resumable: bool = True) -> dict[str, Any]:
        """The checkpoint dict: best.pt (``resumable`` False) holds what sampling and scoring
        need; last.pt adds the optimizer, the grad scaler (fp16), the RNG states, the carried
        state, the seconds trained, the evaluation cadence and the training-loss window."""
        from charrnn import __version__

        d = {
            "format": checkpoint.FORMAT,
            "charrnn_version": __version__,
            "config": self.cfg.to_dict(),
            "shape": self.model.shape_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "step": self.step,
            "tokens_seen": self.step * self.tokens_per_step,
            "best_val_loss": self.best_val_loss,
            "history": self.history,
            "corpus": self.corpus,
            "corpus_sha": self.corpus_sha,
        }
        if resumable:
            d.update(
                optimizer=self.optimizer.state_dict(),
                rng=rng_state(),
                state=[s.detach().cpu() for s in self.carried] if self.carried is not None else None,
                train_seconds=self.train_seconds,
                eval_every=self.eval_every,
                loss_window=[float(self.loss_sum), self.loss_n, self.train_loss],
            )
            if self.scaler.is_enabled():
                d["scaler"] = self.scaler.state_dict()
            if self.ranks is not None:
                d["ranks"] = self.ranks
        return d

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: dict[str, Any],
        *,
        cfg: RunConfig,
        tokenizer: Tokenizer,
        corpus: str,
        corpus_sha: str,
        model: RNNLM,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        tokens_per_step: int,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ) -> TrainState:
        """The state of a run resumed from its last.pt ``ckpt``: its weights, optimizer, scaler and
        RNG are loaded into ``model``, ``optimizer``, ``scaler`` and torch. Rank ``rank`` of
        ``world`` takes its own carried state and RNG when the run had as many ranks."""
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        ranks = ckpt.get("ranks")
        mine = (
            ranks[rank]
            if ranks is not None and len(ranks) == world
            else {"rng": ckpt["rng"], "state": ckpt.get("state")}
        )
        set_rng_state(mine["rng"])
        loss_sum, loss_n, train_loss = ckpt["loss_window"]
        carried = mine["state"]
        return cls(
            cfg,
            tokenizer,
            corpus,
            corpus_sha,
            model,
            optimizer,
            scaler,
            tokens_per_step,
            step=ckpt["step"],
            train_seconds=ckpt["train_seconds"],
            best_val_loss=ckpt["best_val_loss"],
            history=list(ckpt["history"]),
            eval_every=ckpt["eval_every"],
            loss_sum=float(loss_sum),
            loss_n=int(loss_n),
            train_loss=float(train_loss),
            carried=None if carried is None else tuple(s.to(device) for s in carried),
        )
