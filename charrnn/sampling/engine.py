"""The sampling engine: a loaded model that draws tokens for N streams, in the native kernel or
with torch ops, chosen here and nowhere else; and the one generation loop over either.

The prompt is fed once; after that each step feeds one sampled token per stream back in, with
the recurrent state kept, so a token costs the same at any length (O(1) per token). An LSTM on
CPU runs in the native kernel (native/) where it can run that many streams in that precision;
GPUs, GRU and RNN cells, and machines without a C compiler step with ``Stepper`` (torch ops).
Both draw with the same rule and the same uniform numbers (decode.py).

``Engine.open`` reads a checkpoint's cached pack when there is one, without importing torch;
the model itself is loaded only when a call needs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from charrnn.checkpoint import resolve
from charrnn.config import SampleConfig
from charrnn.data.tokenizer import Tokenizer, banned_tokens
from charrnn.sampling.batching import SharedSteps
from charrnn.sampling.native import build
from charrnn.sampling.native.abi import make_sampler
from charrnn.sampling.native.cache import contents_key, load_pack, pack_path
from charrnn.sampling.native.kernel import Kernel
from charrnn.sampling.text import decode_streams

if TYPE_CHECKING:
    import torch

    from charrnn.model.lm import RNNLM

Pack = tuple[dict[str, Any], bytearray, int]

SHARED_TIERS = (1, 8, 16, 32)
"""Row counts of the kernels that shared generations step in (``Engine.chunks(shared=True)``,
``SharedSteps``): at most 32 rows at once; more generations step alone, in turns."""


class Streams(Protocol):
    """B streams that draw tokens: ``prefill`` feeds the prompt from the zero state, ``draw(n)``
    returns the next n tokens of each stream (B lists of n ids)."""

    def prefill(self, prompt_ids: list[int]) -> None: ...
    def draw(self, n: int) -> list[list[int]]: ...
    def next_logits(self) -> list[float]: ...


class KernelStreams:
    """Streams in the native kernel: n tokens per C call, Python untouched per token."""

    def __init__(self, kernel: Kernel, cfg: SampleConfig, banned: list[int]):
        self.kernel = kernel
        self.sampler, self._keep = make_sampler(cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed, banned)

    def prefill(self, prompt_ids: list[int]) -> None:
        self.kernel.prefill([prompt_ids] * self.kernel.B)

    def draw(self, n: int) -> list[list[int]]:
        return self.kernel.generate(self.sampler, n)

    def next_logits(self) -> list[float]:
        """Stream 0's next-token logits (V,), after ``prefill`` (before any ``draw``)."""
        return self.kernel.logits[: self.kernel.V]


class TorchStreams:
    """Streams stepped by ``Stepper`` (torch ops), drawn by ``Chooser``."""

    def __init__(self, model: RNNLM, cfg: SampleConfig, banned: list[int], dtype: torch.dtype):
        from charrnn.sampling.decode import Chooser
        from charrnn.sampling.torch_step import Stepper

        self.stepper = Stepper(model, cfg.num_samples, dtype)
        self.chooser = Chooser(cfg, banned)
        self.B, self.logits, self.last = cfg.num_samples, None, None

    def prefill(self, prompt_ids: list[int]) -> None:
        import torch

        self.logits = self.stepper.prefill(torch.tensor(prompt_ids, dtype=torch.long).expand(self.B, -1))

    def draw(self, n: int) -> list[list[int]]:
        import torch

        out = []
        for _ in range(n):
            if self.logits is None:  # stepped lazily: the last token drawn is never fed in for nothing
                self.logits = self.stepper.step(self.last.to(self.stepper.table.device))
            self.last = self.chooser(self.logits)
            self.logits = None
            out.append(self.last)
        return torch.stack(out, dim=1).tolist()

    def next_logits(self) -> list[float]:
        """Stream 0's next-token logits (V,), after ``prefill`` (before any ``draw``)."""
        return self.logits[0].float().tolist()


def generate_chunks(streams: Streams, prompt_ids: list[int], length: int) -> Iterator[list[list[int]]]:
    """The generation loop: every stream's next ``length`` tokens, in chunks (B lists each).
    Chunks grow to about 20 ms of work, so the first token shows at once and text still streams."""
    streams.prefill(prompt_ids)
    done, n = 0, 1
    while done < length:
        n = min(n, length - done)
        t0 = time.perf_counter()
        yield streams.draw(n)
        done += n
        n = max(1, min(4 * n, 1024, int(0.02 * n / max(time.perf_counter() - t0, 1e-9))))


def step_dtype(precision: str, model: RNNLM) -> torch.dtype:
    """The weights' dtype of the step: bf16 or fp32 as asked; auto, one dtype for any number of
    streams, so that sample i of a seed is the same text whatever -N: bf16 where the native kernel
    runs one stream and a batch in bf16 with the same rounding (an LSTM on a CPU with AVX512-BF16
    dot products, where training autocasts to bf16; AMX tiles round otherwise and serve
    --precision bf16 alone), fp32 elsewhere."""
    import torch

    from charrnn.runtime.device import pick_precision
    from charrnn.sampling.native.pack import NativeLSTM

    if precision == "auto":
        bf16 = torch.bfloat16
        same = NativeLSTM.supports(model, 1, bf16) and NativeLSTM.supports(model, 2, bf16, amx=False)
        return bf16 if same and pick_precision("auto", model.emb.weight.device) == "bf16" else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


class Engine:
    """One model ready to sample: the tokenizer, and the native kernel or torch per stream count.

    ``precision``: 'auto', 'fp32' or 'bf16' weights for the step (see ``step_dtype``)."""

    def __init__(
        self,
        tokenizer: Tokenizer | None,
        *,
        model: RNNLM | None = None,
        path: Path | None = None,
        device: str = "cpu",
        precision: str = "auto",
        pack: Pack | None = None,
        pack_files: tuple[Path, Path] | None = None,
    ):
        self.tokenizer, self.path, self.device, self.precision = tokenizer, path, device, precision
        # Where this checkpoint's packs are cached, for one stream and for several (their dtypes may
        # differ), keyed by the file as it was when its weights were read (see ``open``).
        self._pack_files = pack_files or (_pack_files(path, precision) if path is not None else None)
        self._model, self._pack = model, pack
        self._kernels: dict[int, Kernel | None] = {}
        self._idle: dict[int, list[Kernel]] = {}  # twins of _kernels that no generation holds now
        self._lock = threading.Lock()
        self._shared: SharedSteps | None | bool = None  # False: this engine cannot share steps
        self.banned = banned_tokens(tokenizer) if tokenizer is not None else []

    @classmethod
    def open(cls, checkpoint: str | Path | None, device: str = "cpu", precision: str = "auto") -> Engine:
        """From a checkpoint (a .pt file, a run folder, or None for the newest): its cached pack
        where one exists for this precision (no torch import), else the model itself.
        Raises CharrnnError for a missing or unreadable checkpoint."""
        path = resolve(checkpoint)
        files = _pack_files(path, precision)  # before the weights are read
        if device == "cpu" and build.lib() is not None:
            found = load_pack(files[0]) if files else None
            tok = _pack_tokenizer(found)
            if tok is not None:
                return cls(tok, path=path, precision=precision, pack=found, pack_files=files)
        from charrnn.checkpoint import load_model
        from charrnn.runtime.device import pick_device

        model, tok, _ = load_model(path, pick_device(device))
        return cls(
            tok, model=model, path=path, device=model.emb.weight.device.type, precision=precision, pack_files=files
        )

    @property
    def model(self) -> RNNLM:
        """The torch model, loaded from the checkpoint on first use."""
        if self._model is None:
            from charrnn.checkpoint import load_model

            self._model, _, _ = load_model(self.path, "cpu")
        return self._model

    def chunks(self, prompt_ids: list[int], cfg: SampleConfig, shared: bool = False) -> Iterator[list[list[int]]]:
        """``cfg.num_samples`` streams' next ``cfg.length`` tokens, in chunks (see ``generate_chunks``).
        The same seed gives the same tokens on the same engine; greedy ignores the seed. Each call
        has streams of its own: several generations may be stepped in turn, one thread at a time.

        ``shared``: step in rows of one multi-stream kernel together with this engine's other
        shared generations (``SharedSteps``; the same tokens), where the kernel runs that many
        streams with the weights ``cfg.num_samples`` streams use and rows are free; else alone.
        Its steps run under ``SharedSteps.lock``: one thread at a time."""
        steps = self._shared_steps(cfg.num_samples) if shared else None
        if steps is not None:
            return self._shared_chunks(steps, prompt_ids, cfg)
        return self._own_chunks(prompt_ids, cfg)

    def _own_chunks(self, prompt_ids: list[int], cfg: SampleConfig) -> Iterator[list[list[int]]]:
        """Streams of this generation's own, taken once iterated (one never started holds none)."""
        streams, release = self._streams(cfg)
        yield from _released(generate_chunks(streams, prompt_ids, cfg.length), release)

    def _shared_chunks(self, steps: SharedSteps, prompt_ids: list[int], cfg: SampleConfig) -> Iterator[list[list[int]]]:
        """Rows of ``steps`` once iterated (one never started holds none), or streams of its own
        when every row is taken."""
        generation = steps.join(prompt_ids, cfg)
        if generation is not None:
            yield from generation.chunks()
        else:
            yield from self._own_chunks(prompt_ids, cfg)

    def texts(
        self, prompt_ids: list[int], cfg: SampleConfig, stop: str | None = None, shared: bool = False
    ) -> Iterator[list[str]]:
        """``chunks`` as text: per chunk, each of the ``cfg.num_samples`` samples' text that became
        final (``text.decode_streams``: a sample ends at ``stop`` or at a record's end)."""
        tok = self.tokenizer
        return decode_streams(self.chunks(prompt_ids, cfg, shared), tok.vocab, cfg.num_samples, stop, tok.end_id)

    def next_logits(self, prompt_ids: list[int]) -> list[float]:
        """The logits (V,) of the token after ``prompt_ids`` fed from the zero state, computed as
        sampling computes them (the same kernel or torch step, the same precision)."""
        streams, release = self._streams(SampleConfig(length=0, temperature=1.0, seed=0, precision=self.precision))
        try:
            streams.prefill(prompt_ids)
            return streams.next_logits()
        finally:
            release()

    def _streams(self, cfg: SampleConfig) -> tuple[Streams, Callable[[], None]]:
        """Streams for one generation, and what to call when it ends. A kernel keeps its streams'
        state in its buffers, so each generation takes one that no other holds: an idle twin,
        or a new twin of ``kernel(B)`` (its buffers only; the weights are shared)."""
        B = cfg.num_samples
        with self._lock:
            idle = self._idle.get(B)
            kernel = idle.pop() if idle else None
            if kernel is None:
                first = self.kernel(B)
                kernel = None if first is None else first.twin()
        if kernel is None:
            dtype = step_dtype(self.precision, self.model)
            return TorchStreams(self.model, cfg, self.banned, dtype), lambda: None

        def release() -> None:
            with self._lock:
                self._idle.setdefault(B, []).append(kernel)

        return KernelStreams(kernel, cfg, self.banned), release

    def _shared_steps(self, streams: int) -> SharedSteps | None:
        """The engine's ``SharedSteps`` (made on first use), where its kernel computes ``streams``
        streams exactly as ``kernel(streams)`` does (the same packed weights); else None."""
        with self._lock:
            if self._shared is None:
                big = self.kernel(SHARED_TIERS[-1])
                kernels = [self.kernel(b) for b in SHARED_TIERS] if big is not None else []
                kernels = [k.twin() for k in kernels if k is not None and k.shares_weights(big)]
                self._shared = SharedSteps(kernels, self.banned) if kernels else False
            alone = self.kernel(streams)
        if not self._shared or alone is None or not alone.shares_weights(self._shared.kernel):
            return None
        return self._shared

    def kernel(self, streams: int) -> Kernel | None:
        """The native kernel for ``streams`` streams, or None where torch steps instead. Made once:
        from the cached pack where it can run them, else from the model (and the pack cached)."""
        if streams in self._kernels:
            return self._kernels[streams]
        lib = build.lib()
        kernel = None
        amx = self.precision == "bf16"  # AMX tiles round otherwise than one stream: asked for, not auto
        if lib is not None and self.device == "cpu":
            if self._pack is None or not Kernel.supports(lib, self._pack[0], streams, amx):
                from charrnn.sampling.native.pack import cache_pack

                dtype = step_dtype(self.precision, self.model)
                pack_file = self._pack_files[0 if streams == 1 else 1] if self._pack_files else None
                packed = cache_pack(pack_file, self.model, self.tokenizer, dtype, streams, amx)
                self._pack = packed or self._pack
            if self._pack is not None and Kernel.supports(lib, self._pack[0], streams, amx):
                kernel = Kernel(lib, *self._pack, streams, amx)
        self._kernels[streams] = kernel
        return kernel


def _pack_files(path: Path, precision: str) -> tuple[Path, Path] | None:
    """The cache files of a checkpoint's packs for one stream and for several, as it is now."""
    try:
        contents = contents_key(path)
    except OSError:
        return None
    return pack_path(contents, precision), pack_path(contents, precision + "+batch")


def _released(chunks: Iterator[list[list[int]]], release: Callable[[], None]) -> Iterator[list[list[int]]]:
    """``chunks``, then ``release`` once they end, fail or are closed."""
    try:
        yield from chunks
    finally:
        release()


def _pack_tokenizer(found: Pack | None) -> Tokenizer | None:
    """The tokenizer a cached pack carries; None where it has none that works (the pack is then
    rebuilt from the checkpoint)."""
    if found is None:
        return None
    try:
        return Tokenizer.from_dict(found[0]["tokenizer"])
    except Exception:  # a cache: whatever is wrong with it, the checkpoint is the truth
        return None


def generate(
    model: RNNLM, prompt_ids: list[int], cfg: SampleConfig, banned: list[int] | None = None
) -> Iterator[torch.Tensor]:
    """The next tokens of every stream of a model in memory, as (num_samples, n) tensors,
    ``cfg.length`` in all. ``banned`` tokens (the word model's <unk>) are never emitted."""
    import torch

    engine = Engine(None, model=model, device=model.emb.weight.device.type, precision=cfg.precision)
    engine.banned = list(banned or [])
    for chunk in engine.chunks(prompt_ids, cfg):
        yield torch.tensor(chunk, dtype=torch.long)
