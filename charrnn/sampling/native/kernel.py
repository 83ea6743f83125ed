"""LSTM streams in the native kernel over packed weights; no torch here.

Sampling's hot loop runs in C (kernels.c): a chunk of tokens per call, every stream advanced as
one batch. ``Kernel`` owns its buffers and the C ``Net`` that points into them. Its weights come
as one blob of packed arrays (``pack.pack_model`` makes it from a model; ``cache.py`` keeps it on
disk). The prompt always goes through the kernel's own step, so a cached and an uncached run
compute exactly the same numbers.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

from charrnn.runtime.threads import ThreadTuner, cpu_count
from charrnn.sampling.native.abi import Net, Sampler


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def aligned_buffer(nbytes: int) -> tuple[bytearray, int]:
    """A bytearray and the offset in it where 64-byte-aligned storage of nbytes starts."""
    buf = bytearray(nbytes + 64)
    return buf, -ctypes.addressof(ctypes.c_char.from_buffer(buf)) % 64


class Kernel:
    """``streams`` LSTM streams over packed weights: ``header`` says where each array lies in ``blob``
    (from ``offset`` on, 64-byte aligned)."""

    def __init__(
        self, lib: ctypes.CDLL, header: dict[str, Any], blob: bytearray, offset: int, streams: int = 1, amx: bool = True
    ):
        """``amx``: several bf16 streams may run in AMX tiles where the CPU has them (faster; they
        round otherwise than the lone stream's dot products, so a batch row then parts from the
        lone stream's text)."""
        if not self.supports(lib, header, streams, amx):
            raise ValueError(f"the kernel cannot run {streams} streams of this pack on this CPU")
        self.lib, self.blob, self.B, self.amx = lib, blob, streams, amx  # blob: kept alive for the kernel's pointers
        self._source = (header, blob, offset)
        L, H, V, rows, K = header["layers"], header["hidden"], header["vocab"], header["rows"], header["K"]
        check_sizes(header)
        self.V, self.K = V, K
        base = ctypes.addressof(ctypes.c_char.from_buffer(blob)) + offset
        at = {name: base + off for name, (off, _) in header["arrays"].items()}
        Bp = 1 if streams == 1 else round_up(streams, 16)
        self.head_rows = round_up(V, 16)
        f32 = ctypes.c_float
        # 32 spare zeros: the head reads the last layer's h through a K padded to 32.
        self.xh = [(f32 * (Bp * k + 32))() for k in K]
        self.c = [(f32 * (streams * H))() for _ in range(L)]
        self.gates = (f32 * (Bp * rows))()
        self.logits = (f32 * (Bp * self.head_rows))()
        self.scratch = (f32 * (Bp * max(K)))()
        self.work = (f32 * (4 * V))()
        P = ctypes.c_void_p
        self._arrays = (
            (P * L)(*[at[f"w{l}"] for l in range(L)]),
            (ctypes.c_int32 * L)(*K),
            (P * L)(None, *[at[f"b{l}"] for l in range(1, L)]),
            (P * L)(*[ctypes.addressof(x) for x in self.xh]),
            (P * L)(*[ctypes.addressof(x) for x in self.c]),
        )
        w, Ka, bias, xh, c = self._arrays
        self.net = Net(
            L,
            H,
            V,
            int(header["bf16"]),
            int(amx and lib.amx),
            cpu_count(),
            rows,
            self.head_rows,
            streams,
            Bp,
            at["table"],
            w,
            Ka,
            bias,
            at["head_w"],
            at["head_b"],
            round_up(H, 32),
            xh,
            c,
            ctypes.addressof(self.gates),
            ctypes.addressof(self.logits),
            ctypes.addressof(self.scratch),
            ctypes.addressof(self.work),
        )
        self._toks = (ctypes.c_int64 * streams)()
        self.tuner = ThreadTuner(cpu_count())

    @staticmethod
    def supports(lib: ctypes.CDLL, header: dict[str, Any], streams: int, amx: bool = True) -> bool:
        """One stream always. Several in bf16 where bf16 dot products (or AMX tiles, ``amx``) run
        them, in fp32 where the CPU has vector multiply-adds (AVX2 or AVX-512); elsewhere torch's
        products win."""
        if streams == 1:
            return True
        return bool((amx and lib.amx) or lib.bf16_dot) if header["bf16"] else bool(lib.fp32_vector)

    def twin(self) -> Kernel:
        """A kernel over the same weights (shared, not copied) with a state of its own: two
        generations side by side each need one, as a kernel keeps its streams' state in its buffers."""
        return Kernel(self.lib, *self._source, self.B, self.amx)

    def shares_weights(self, other: Kernel) -> bool:
        """True when ``other`` computes over the very same packed weights (twins, or kernels made
        from one pack): a stream then gives the same numbers in either."""
        return self._source[1] is other._source[1] and self._source[2] == other._source[2]

    def step(self, tokens: list[int]) -> None:
        """Feed one token per stream; the next-token logits are then in ``self.logits``."""
        if len(tokens) != self.B or not all(0 <= t < self.V for t in tokens):
            raise ValueError(f"step needs {self.B} token ids below {self.V}, not {tokens}")
        self._toks[:] = tokens
        self.lib.charrnn_lstm_step(ctypes.byref(self.net), self._toks)

    def prefill(self, prompts: list[list[int]]) -> None:
        """Start every stream from the zero state and feed it its prompt (all of equal length)."""
        for buf in self.xh + self.c:
            ctypes.memset(buf, 0, ctypes.sizeof(buf))
        for t in range(len(prompts[0])):
            self.step([p[t] for p in prompts])

    def generate(self, sampler: Sampler, n: int) -> list[list[int]]:
        """Draw n tokens per stream, feeding each back in: one list per stream. The thread count
        follows ``self.tuner`` (a trial of the other count takes an eighth of the tokens); the
        tokens do not depend on it."""
        pieces, done = [], 0
        while done < n:
            threads, trial = self.tuner.choose()
            k = max(1, (n - done) // 8) if trial else n - done
            piece = (ctypes.c_int64 * (self.B * k))()
            self.net.nthreads = threads
            t0 = time.perf_counter()
            self.lib.charrnn_lstm_generate(ctypes.byref(self.net), ctypes.byref(sampler), k, piece)
            self.tuner.record(threads, k, time.perf_counter() - t0, trial)
            pieces.append((piece, k))
            done += k
        self.net.nthreads = self.tuner.best  # for prompt steps
        return [[t for piece, k in pieces for t in piece[b * k : (b + 1) * k]] for b in range(self.B)]


def check_header(header: dict[str, Any]) -> None:
    """A pack's header as the kernel needs it (ValueError otherwise): a sane shape, the padded
    widths the shape implies (narrower ones would read and write past the kernel's buffers),
    aligned arrays that lie whole in the blob, and a tokenizer of exactly ``vocab`` tokens."""

    def count(x: Any, high: int) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= high

    L, H, V, K = header["layers"], header["hidden"], header["vocab"], header["K"]
    if not (count(L, 64) and count(H, 16384) and count(V, 2**31 - 1) and isinstance(header["bf16"], bool)):
        raise ValueError("the pack's shape is out of range")
    if not isinstance(K, list) or K != [round_up(H if l == 0 else 2 * H, 32) for l in range(L)]:
        raise ValueError("the pack's widths do not match its shape")
    arrays = header["arrays"]
    if not isinstance(arrays, dict) or not all(
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        and v[0] % 64 == 0
        for v in arrays.values()
    ):
        raise ValueError("the pack's arrays are malformed")
    tok = header.get("tokenizer")
    if tok is not None and not (
        isinstance(tok, dict) and isinstance(tok.get("vocab"), list) and len(tok["vocab"]) == V
    ):
        raise ValueError("the pack's tokenizer does not match its vocabulary")
    check_sizes(header)


def check_sizes(header: dict[str, Any]) -> None:
    """Every array the kernel will read lies whole in the blob, at the size the shape implies."""
    L, H, V, rows, K = header["layers"], header["hidden"], header["vocab"], header["rows"], header["K"]
    wbytes = 2 if header["bf16"] else 4
    want = {"table": V * rows * 4, "head_w": round_up(V, 16) * round_up(H, 32) * 4, "head_b": round_up(V, 16) * 4}
    for l in range(L):
        want[f"w{l}"] = rows * K[l] * wbytes
        if l > 0:
            want[f"b{l}"] = rows * 4
    arrays = header["arrays"]
    if (
        rows != round_up(4 * H, 16)
        or len(K) != L
        or set(arrays) != set(want)
        or any(arrays[k][1] != n or arrays[k][0] < 0 or arrays[k][0] + n > header["nbytes"] for k, n in want.items())
    ):
        raise ValueError("the pack's arrays do not match its shape")
