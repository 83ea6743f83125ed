"""The allocator's settings: a freed big block is reused instead of being faulted in afresh."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # real processes: see `pytest -m 'not slow'` for the quick loop

# A process that takes training steps of a 2x384 LSTM (fp32, 32 x 64 tokens) and prints the page
# faults of the last four: with glibc's defaults a step's big buffers are fresh mmaps each time
# (about 12,000 faults a step on the EPYC in bf16), with keep_freed_memory() they come back from
# the heap. Transparent huge pages, where a system turns them on for all memory, would fault
# the fresh mmaps in 2 MiB at a time and hide the difference, so the process turns them off.
PROGRAM = """
import ctypes, resource, sys, torch
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB faults, whatever the system's huge-page policy
from charrnn.runtime.allocator import keep_freed_memory
from charrnn.model.lm import RNNLM, ModelShape
took = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.manual_seed(0)
model = RNNLM(ModelShape(65, "lstm", 2, 384, 64, 0.0))
x = torch.randint(65, (32, 64))
for step in range(6):
    if step == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x, None, x)[1].backward()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True, env={**clean, **env}
    ).stdout.split()
    return out[0], int(out[1])


glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc only"
)


@glibc
def test_kept_memory_is_reused_instead_of_faulted_in_again():
    took, kept = _faults("keep")
    _, plain = _faults("plain")
    assert took == "True"
    assert kept < plain / 3, (kept, plain)


@glibc
def test_the_users_own_malloc_settings_win():
    took, _ = _faults("keep", MALLOC_TRIM_THRESHOLD_="0")
    assert took == "False"
