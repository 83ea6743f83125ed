"""SIGKILL a small `charrnn train` at varied moments, resume it, and compare with a run never killed.

Each trial runs the real command in a subprocess under a small harness (this file, run with
--child) that SIGKILLs the process at one moment, chosen through the environment variable
CHARRNN_KILL_AT: after optimizer step N (a global optimizer step hook), in the middle of the
k-th checkpoint write, after its data is written but before the rename, or right after the
rename; two trials instead send SIGKILL from outside after a random delay. Then it checks:

- intact: every .pt left in the run folder loads (checksum and consistency checks of
  checkpoint.load), and no checkpoint is half written;
- resumed: the same command with --resume (or the plain command again, when the kill came
  before any last.pt) exits 0 and reaches the final step;
- bit-identical: the final last.pt's weights, optimizer state and step equal those of the
  reference run bit for bit, and metrics.jsonl holds each evaluation step once;
- stray files: temporaries a kill left, and anything left in the folder besides best.pt,
  last.pt, config.yaml, metrics.jsonl, samples.jsonl and .lock after the resumed run ends.

    python bench/kill_trials.py            # 10 trials, about a minute on two cores
    python bench/kill_trials.py --trials 20 --keep /tmp/kill-trials
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPECTED = {"best.pt", "last.pt", "config.yaml", "metrics.jsonl", "samples.jsonl", ".lock"}
STEPS, EVAL_EVERY = 60, 10
FLAGS = [
    "--hidden",
    "32",
    "--layers",
    "1",
    "--embed",
    "16",
    "--seq-len",
    "16",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--lr",
    "0.01",
    "--warmup-steps",
    "5",
    "--max-steps",
    str(STEPS),
    "--eval-every",
    str(EVAL_EVERY),
    "-q",
]
# The moments of the 10 default trials; later trials draw from the same kinds at random.
MOMENTS = [
    "step:3",
    "step:17",
    "step:44",
    "write:1",
    "write:4",
    "fsync:2",
    "fsync:7",
    "renamed:3",
    "outside",
    "outside",
]


def _child() -> None:
    """Run `charrnn ARGS` and SIGKILL this process at the moment CHARRNN_KILL_AT names."""
    import torch

    from charrnn import checkpoint

    kind, _, n = os.environ.get("CHARRNN_KILL_AT", "none:0").partition(":")
    n = int(n or 0)
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    counts = {"step": 0, "save": 0}

    if kind == "step":

        def hook(opt, args, kwargs):
            counts["step"] += 1
            if counts["step"] == n:
                die()

        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(hook)
    elif kind in ("write", "fsync", "renamed"):
        real_save, real_fsync, real_replace = torch.save, os.fsync, os.replace

        def save(obj, f, *a, **kw):  # torch.save inside checkpoint.save: the n-th one dies mid-write
            counts["save"] += 1
            if kind == "write" and counts["save"] == n:
                real_save(obj, f, *a, **kw)
                f.flush()
                os.ftruncate(f.fileno(), max(1, f.tell() // 2))  # half of it on disk, then the kill
                die()
            return real_save(obj, f, *a, **kw)

        def fsync(fd):
            real_fsync(fd)
            if kind == "fsync" and counts["save"] == n:
                die()  # data written and synced, not yet renamed

        def replace(src, dst, *a, **kw):
            real_replace(src, dst, *a, **kw)
            if kind == "renamed" and counts["save"] == n and str(dst).endswith(".pt"):
                die()  # renamed: the other checkpoint of this save not yet written

        torch.save = save
        checkpoint.os.fsync = fsync  # the module's os is the os module: patches apply to all
        checkpoint.os.replace = replace

    from charrnn.cli import main

    sys.argv = ["charrnn", *sys.argv[2:]]
    main()


def _run(args: list[str], kill_at: str | None, delay: float | None = None) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if kill_at:
        env["CHARRNN_KILL_AT"] = kill_at
    cmd = [sys.executable, __file__, "--child", *args]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if delay is not None:
        try:
            p.wait(delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    if p.returncode not in (0, -signal.SIGKILL):
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return p.returncode


def _intact(folder: Path) -> tuple[bool, str]:
    from charrnn import checkpoint
    from charrnn.errors import CharrnnError

    for pt in sorted(folder.glob("*.pt")):
        try:
            checkpoint.load(pt)
        except CharrnnError as e:
            return False, str(e)
    return True, ", ".join(p.name for p in sorted(folder.glob("*.pt"))) or "no checkpoint yet"


def _same(a: Path, b: Path) -> tuple[bool, str]:
    import torch

    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    if x["step"] != y["step"]:
        return False, f"step {x['step']} vs {y['step']}"
    for name in x["model"]:
        if not torch.equal(x["model"][name], y["model"][name]):
            return False, f"weight {name} differs"
    ox, oy = x["optimizer"]["state"], y["optimizer"]["state"]
    for k in ox:
        for m in ox[k]:
            if not torch.equal(torch.as_tensor(ox[k][m]), torch.as_tensor(oy[k][m])):
                return False, f"optimizer {k}.{m} differs"
    return True, "bit-identical"


def _metrics_once(folder: Path) -> bool:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return False
    steps = [json.loads(l)["step"] for l in path.read_text().splitlines() if l.strip()]
    return len(steps) == len(set(steps)) and steps == sorted(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="for the outside kills' delays and extra trials")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.keep or tempfile.mkdtemp(prefix="charrnn-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from conftest import make_corpus

    corpus = work / "corpus.txt"
    corpus.write_text(make_corpus(6000, seed=1), encoding="utf-8")
    t0 = time.monotonic()
    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    assert _run(["train", str(corpus), "--out", str(ref), *FLAGS], None) == 0, "the reference run failed"
    ref_run = time.monotonic() - t0

    moments = [MOMENTS[i] if i < len(MOMENTS) else rng.choice(MOMENTS) for i in range(args.trials)]
    tally = {"intact": 0, "resumed": 0, "identical": 0, "metrics once": 0, "tmp after kill": 0}
    stray_files: list[str] = []
    for i, moment in enumerate(moments):
        out = work / f"trial{i}"
        shutil.rmtree(out, ignore_errors=True)
        base = ["train", str(corpus), "--out", str(out), *FLAGS]
        delay = rng.uniform(0.3, 0.85) * ref_run if moment == "outside" else None
        code = _run(base, None if moment == "outside" else moment, delay)
        killed = code == -signal.SIGKILL
        ok, what = _intact(out)
        left_by_kill = [p.name for p in out.iterdir() if p.name.endswith(".tmp")] if out.exists() else []
        tally["tmp after kill"] += bool(left_by_kill)
        tally["intact"] += ok
        # A resume may change limits only: the same ones, so the schedule is the reference's.
        resume = ["train", str(corpus), "--out", str(out), "--resume", "--max-steps", str(STEPS), "-q"]
        again = resume if (out / "last.pt").exists() else base + ["--overwrite"]
        resumed = _run(again, None) == 0 and (out / "last.pt").exists()
        tally["resumed"] += resumed
        same, why = _same(out / "last.pt", ref / "last.pt") if resumed else (False, "not resumed")
        tally["identical"] += same
        once = _metrics_once(out)
        tally["metrics once"] += once
        stray = sorted(p.name for p in out.iterdir() if p.name not in EXPECTED) if out.exists() else []
        stray_files += [f"trial{i}/{s} ({(out / s).stat().st_size} B)" for s in stray]
        label = f"{moment}{f' after {delay:.1f}s' if delay else ''}"
        print(
            f"trial {i:2d}  kill at {label:<22} {'killed' if killed else f'exit {code}':<8} "
            f"intact: {'yes' if ok else 'NO'} ({what})  resumed: {'yes' if resumed else 'NO'}  "
            f"{why}  metrics once: {'yes' if once else 'NO'}  temporaries after the kill: {len(left_by_kill)}  "
            f"stray after the resume: {', '.join(stray) or 'none'}",
            flush=True,
        )
    n = args.trials
    print(
        f"\n{tally['intact']}/{n} intact, {tally['resumed']}/{n} resumed, {tally['identical']}/{n} bit-identical, "
        f"{tally['metrics once']}/{n} metrics.jsonl with each step once; {tally['tmp after kill']}/{n} kills left a "
        f"temporary file, which the resumed run removed; stray files left after the resume: {len(stray_files)}"
        + (f" ({'; '.join(stray_files)})" if stray_files else "")
    )
    print(f"(reference run {ref_run:.1f}s; {time.monotonic() - t0:.0f}s in all; work folder {work})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child()
    else:
        main()
