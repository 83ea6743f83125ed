"""The C structs and function signatures of kernels.c, as ctypes declares them.

Keep in step with kernels.c: the field order and types of ``Sampler`` and ``Net`` are its ABI.
"""

from __future__ import annotations

import ctypes
from typing import Any

P, i32 = ctypes.c_void_p, ctypes.c_int32


class Sampler(ctypes.Structure):
    """The next-token rule of kernels.c: temperature (0: greedy), top-p (1: off), top-k (0: off),
    banned ids, and the counter-based random stream (seed, step, index of row 0)."""

    _fields_ = [
        ("temperature", ctypes.c_double),
        ("top_p", ctypes.c_double),
        ("top_k", i32),
        ("nbanned", i32),
        ("banned", P),
        ("seed", ctypes.c_uint64),
        ("step", ctypes.c_int64),
        ("index", ctypes.c_int64),
    ]


class Net(ctypes.Structure):
    """An LSTM's packed weights and its state buffers, as the kernel's step reads them."""

    _fields_ = [
        ("layers", i32),
        ("H", i32),
        ("V", i32),
        ("bf16", i32),
        ("amx", i32),
        ("nthreads", i32),
        ("rows", i32),
        ("head_rows", i32),
        ("B", i32),
        ("Bp", i32),
        ("table", P),
        ("w", ctypes.POINTER(P)),
        ("K", ctypes.POINTER(i32)),
        ("bias", ctypes.POINTER(P)),
        ("head_w", P),
        ("head_b", P),
        ("head_K", i32),
        ("xh", ctypes.POINTER(P)),
        ("c", ctypes.POINTER(P)),
        ("gates", P),
        ("logits", P),
        ("scratch", P),
        ("work", P),
    ]


def declare(so: ctypes.CDLL) -> ctypes.CDLL:
    """Give each exported function its argument and result types; note what several streams can
    use here: AMX tiles (``amx``), bf16 dot products (``bf16_dot``), vector fp32 (``fp32_vector``)."""
    so.charrnn_uniform.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
    so.charrnn_uniform.restype = ctypes.c_double
    so.charrnn_sample.argtypes = [i32, i32, P, i32, ctypes.POINTER(Sampler), P, P]
    so.charrnn_sample.restype = None
    so.charrnn_lstm_cell.argtypes = [i32, i32, P, i32, P, i32, P, i32, P, i32, i32]
    so.charrnn_lstm_cell.restype = None
    so.charrnn_lstm_step.argtypes = [ctypes.POINTER(Net), P]
    so.charrnn_lstm_step.restype = None
    so.charrnn_lstm_generate.argtypes = [ctypes.POINTER(Net), ctypes.POINTER(Sampler), i32, P]
    so.charrnn_lstm_generate.restype = None
    so.charrnn_amx_init.argtypes = []
    so.charrnn_amx_init.restype = ctypes.c_int
    so.charrnn_batch_caps.argtypes = []
    so.charrnn_batch_caps.restype = ctypes.c_int
    so.amx = bool(so.charrnn_amx_init())
    caps = so.charrnn_batch_caps()
    so.bf16_dot = bool(caps & 2)  # AVX512-BF16 dot products
    so.fp32_vector = bool(caps & 4)  # AVX-512 or AVX2 multiply-adds
    return so


def make_sampler(
    temperature: float, top_k: int | None, top_p: float | None, seed: int | None, banned: list[int]
) -> tuple[Sampler, Any]:
    """The C sampler, and the banned-token array it points to (keep it alive as long as the sampler)."""
    ban = (ctypes.c_int64 * max(1, len(banned)))(*banned)
    seed64 = (seed or 0) & (2**64 - 1)
    return Sampler(
        temperature, 1.0 if top_p is None else top_p, top_k or 0, len(banned), ctypes.addressof(ban), seed64, 0, 0
    ), ban
