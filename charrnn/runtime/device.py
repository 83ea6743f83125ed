"""Where and how precisely to compute: device choice, autocast precision, torchrun ranks."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charrnn.config import DEVICES, PRECISIONS, check_choice
from charrnn.errors import UsageError


@dataclass
class Env:
    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)


def pick_device(name: str) -> torch.device:
    check_choice("--device", name, DEVICES)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps asked for, but MPS is not available; use --device cpu or auto")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    check_choice("--precision", name, PRECISIONS)
    if name == "auto":
        if device.type == "cpu":
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
        if device.type == "cuda":
            # cuDNN's LSTM runs in fp16 under autocast whatever dtype is asked for.
            return "fp16"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 is not supported on CPU; use bf16 or fp32")
    return name


def setup_env(device_name: str, precision: str) -> Env:
    """Single process, or one process per GPU under torchrun (DistributedDataParallel)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = pick_device(device_name)  # a wrong --device fails here, under torchrun too
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if wanted.type == "cuda":
            torch.cuda.set_device(local)
            dist.init_process_group("nccl")
            device = torch.device("cuda", local)
        else:
            dist.init_process_group("gloo")
            device = torch.device("cpu")
        return Env(device, pick_precision(precision, device), dist.get_rank(), world)
    return Env(wanted, pick_precision(precision, wanted))
