"""Generations that share one multi-stream kernel: continuous batching for the server.

Each generation holds rows of its own in one B-stream ``Kernel``; every ``step`` runs the kernel
once for all B rows, then each active row either takes its next prompt token (its logits unused)
or draws its next token with its own sampler (seed, stream index, step counter: the ones
``charrnn sample --seed S`` gives stream i), so a generation's tokens are those it would draw
alone: a row of a batch equals the lone stream bit for bit (tests/test_native.py). Rows that no
generation holds idle (fed token 0; their state is zeroed when a generation takes them).

A step costs about the same for 2 to 8 rows, and twice that for 9 to 16 (the kernel computes
whole tiles of 8), so the rows in use live in the smallest of several kernels (1, 8, 16, 32
rows: ``TIERS``) that holds them all: a lone request steps as fast as it would alone. Rows in use
are kept at the lowest indices; when generations come and go, rows move (their state copied,
which changes no number: every kernel computes a row as the lone stream does).

Steps are driven by whichever generation is pulled: pulling one runs steps (advancing all) until
it has a chunk of new tokens, and the others then find tokens waiting. One lock keeps the
kernel to one thread at a time (the server steps on its one worker thread anyway).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator

from charrnn.config import SampleConfig
from charrnn.sampling.native.abi import Sampler, make_sampler
from charrnn.sampling.native.kernel import Kernel

CHUNK_SECONDS = 0.02
"""About how long one pull steps before it hands its tokens over (text still streams)."""


class _Row:
    """One stream of a generation in one row of the kernel: the prompt still to feed, its
    sampler, and the tokens drawn since the last ``take``."""

    def __init__(self, prompt_ids: list[int], length: int, sampler: Sampler, keep: object, sample, work: int):
        self.prompt, self.fed = prompt_ids, 1  # prompt_ids[0] goes in at the next step
        self.left = length  # tokens still to draw
        self.sampler, self._keep, self._sample, self._work = sampler, keep, sample, work
        self._ref = ctypes.byref(sampler)
        self._out = (ctypes.c_int64 * 1)()
        self._args: tuple = ()
        self.drawn: list[int] = []

    def place(self, V: int, logits: int, ld: int) -> None:
        """Where this row's logits lie (``logits``: the address of its row, ``ld`` floats apart)."""
        self._args = (1, V, logits, ld, self._ref, self._out, self._work)

    def steps_to(self, k: int) -> int:
        """Steps until this row has ``k`` tokens drawn and not taken (prompt tokens first)."""
        return max(0, len(self.prompt) - self.fed + k - len(self.drawn))

    def after_step(self) -> int:
        """The token this row feeds at the next step: its next prompt token, or a token drawn
        from the logits the step left in its row (0 once it has drawn its length: it idles)."""
        if self.fed < len(self.prompt):
            self.fed += 1
            return self.prompt[self.fed - 1]
        if self.left == 0:
            return 0
        self.left -= 1
        self._sample(*self._args)
        self.sampler.step += 1
        token = self._out[0]
        self.drawn.append(token)
        return token


class Generation:
    """``n`` rows of a ``SharedSteps`` drawing ``length`` tokens each; iterate ``chunks()``."""

    def __init__(self, shared: SharedSteps, rows: list[_Row], length: int):
        self.shared, self.rows, self.length = shared, rows, length
        self.taken = 0  # tokens per row handed over so far

    def chunks(self) -> Iterator[list[list[int]]]:
        """Each row's next tokens (n lists per chunk) until ``length``; the rows are given back
        when this ends, fails or is closed."""
        want = 1
        try:
            while self.taken < self.length:
                with self.shared.lock:
                    self.shared.run(self.rows[0].steps_to(min(want, self.length - self.taken)))
                    chunk = self._take()
                yield chunk
                want = max(1, min(4 * want, 1024, int(CHUNK_SECONDS / max(self.shared.step_seconds, 1e-6))))
        finally:
            self.shared.leave(self.rows)
            self.rows = []

    def _take(self) -> list[list[int]]:
        out = []
        for row in self.rows:
            out.append(row.drawn[: self.length - self.taken])
            row.drawn = []
        self.taken += len(out[0])
        if self.taken >= self.length:  # drawn in full: the rows may serve another generation now
            self.shared.leave(self.rows)
            self.rows = []
        return out


class SharedSteps:
    """Kernels of growing row counts over one set of weights, whose rows generations take and
    give back (see the module's text); the largest one's rows are the most that run at once."""

    def __init__(self, kernels: list[Kernel], banned: list[int]):
        self.kernels = sorted(kernels, key=lambda k: k.B)
        self.banned, self.B = list(banned), self.kernels[-1].B
        self.kernel = self.kernels[0]  # the one that steps now: the smallest that holds every row in use
        self.rows: list[_Row] = []  # row b of self.kernel is self.rows[b]
        self.tokens = [0] * self.kernel.B
        self.step_seconds = 1e-3  # seconds a step took lately: sizes the pulls' chunks
        self._work = (ctypes.c_float * (4 * self.kernel.V))()
        self.lock = threading.RLock()  # held by join, leave and each pull's steps

    @property
    def free(self) -> int:
        return self.B - len(self.rows)

    def join(self, prompt_ids: list[int], cfg: SampleConfig) -> Generation | None:
        """Rows for ``cfg.num_samples`` streams (stream i samples as ``charrnn sample`` stream i
        of ``cfg.seed``), from the zero state with ``prompt_ids`` (not empty) to feed; None when
        fewer rows are free."""
        with self.lock:
            return self._join(prompt_ids, cfg)

    def _join(self, prompt_ids: list[int], cfg: SampleConfig) -> Generation | None:
        n = cfg.num_samples
        if n > self.free or not prompt_ids:
            return None
        self._fit(len(self.rows) + n)
        mine, sample, work = [], self.kernel.lib.charrnn_sample, ctypes.addressof(self._work)
        for i in range(n):
            sampler, keep = make_sampler(cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed, self.banned)
            sampler.index = i
            row = _Row(prompt_ids, cfg.length, sampler, keep, sample, work)
            b = len(self.rows)
            self.rows.append(row)
            _zero_row(self.kernel, b)
            self._place(b, prompt_ids[0])
            mine.append(row)
        return Generation(self, mine, cfg.length)

    def leave(self, rows: list[_Row]) -> None:
        """Give ``rows`` back: the rows above take their places, into a smaller kernel if one holds them."""
        gone = {id(r) for r in rows}
        if gone:
            with self.lock:
                self._leave(gone)

    def _leave(self, gone: set[int]) -> None:
        keep = [(b, r) for b, r in enumerate(self.rows) if id(r) not in gone]
        self.rows = [r for _, r in keep]
        for b, (old, _) in enumerate(keep):
            if old != b:
                _copy_row(self.kernel, old, self.kernel, b)
                self._place(b, self.tokens[old])
        for b in range(len(self.rows), self.kernel.B):
            self.tokens[b] = 0
        self._fit(len(self.rows))

    def run(self, steps: int) -> None:
        """``steps`` kernel steps for every row, each followed by each row's next token; the
        thread count follows the stepping kernel's tuner (as ``Kernel.generate`` does)."""
        if steps <= 0:
            return
        kernel = self.kernel
        threads, trial = kernel.tuner.choose()
        kernel.net.nthreads = threads
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        seconds = time.perf_counter() - t0
        kernel.tuner.record(threads, steps, seconds, trial)
        self.step_seconds = seconds / steps

    def step(self) -> None:
        """One kernel step for every row, then each row's next token."""
        self.kernel.step(self.tokens)
        tokens = self.tokens
        for b, row in enumerate(self.rows):
            tokens[b] = row.after_step()

    def _fit(self, rows: int) -> None:
        """Step in the smallest kernel with ``rows`` rows: the rows in use move there."""
        kernel = next(k for k in self.kernels if k.B >= rows)
        if kernel is self.kernel:
            return
        for b in range(len(self.rows)):
            _copy_row(self.kernel, b, kernel, b)
        old, self.kernel = self.tokens, kernel
        self.tokens = [0] * kernel.B
        for b in range(len(self.rows)):
            self._place(b, old[b])

    def _place(self, b: int, token: int) -> None:
        """Row b of the stepping kernel: its next input ``token``, and where its logits lie."""
        k = self.kernel
        self.tokens[b] = token
        self.rows[b].place(k.V, ctypes.addressof(k.logits) + 4 * b * k.head_rows, k.head_rows)


def _state(kernel: Kernel, b: int) -> list[tuple[int, int]]:
    """(address, bytes) of each piece of row b's recurrent state: every layer's xh row and c row."""
    H = len(kernel.c[0]) // kernel.B
    return [(ctypes.addressof(buf) + 4 * b * width, 4 * width) for buf, width in zip(kernel.xh, kernel.K)] + [
        (ctypes.addressof(buf) + 4 * b * H, 4 * H) for buf in kernel.c
    ]


def _zero_row(kernel: Kernel, b: int) -> None:
    """Row b's state to zero, as ``Kernel.prefill`` starts every stream."""
    for at, size in _state(kernel, b):
        ctypes.memset(at, 0, size)


def _copy_row(src: Kernel, b: int, dst: Kernel, b2: int) -> None:
    """Row b's state of ``src`` into row b2 of ``dst`` (the same shape of network)."""
    for (a, size), (d, _) in zip(_state(src, b), _state(dst, b2)):
        ctypes.memmove(d, a, size)
