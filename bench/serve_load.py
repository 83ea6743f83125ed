"""`charrnn serve` under load: 16 clients at once, each streaming 500 characters from a 2x512
LSTM, against `charrnn sample -N 16` (the same 16x500 characters in one process, one batch).

Prints, per round and as medians over rounds: whether every request was served (status 200, 500
characters, the API's text for its seed), p50/p99 latency of a whole request, the time to its
first streamed character, and total characters/s, beside one stream of 8,000 characters, both
references in processes of their own; then the first streamed character of single requests on a
warm, idle server. The clients are threads of this process on the same CPU as the server, so the
server's figures include their cost. Figures vary with the machine's load: ``--before SRC``
serves another version of charrnn (a source tree, e.g. ``git archive main``) side by side, a
round of each in turn, for a before/after comparison under the same load.

    python bench/serve_load.py                  # about a minute, with a model trained first
    python bench/serve_load.py -c CHECKPOINT    # a 2x512 LSTM you have
    python bench/serve_load.py -c CHECKPOINT --before /tmp/charrnn-main
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import charrnn

CLIENTS, LENGTH, PROMPT = 16, 500, "ROMEO:"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def make_checkpoint(folder: str) -> str:
    """A 2x512 LSTM trained for a few steps: the speed of sampling does not depend on the weights."""
    text = CORPUS.read_text()[:300_000] if CORPUS.exists() else "".join(chr(32 + i % 90) for i in range(300_000))
    r = charrnn.train(text=text, out=f"{folder}/lstm512", layers=2, hidden=512, max_steps=5, eval_every=5, device="cpu")
    return r.checkpoint


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def start_server(checkpoint: str, source: str | None = None) -> tuple[subprocess.Popen, int]:
    """`charrnn serve` on a free port; ``source``: the charrnn source tree to run (default: this one)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", "-c", checkpoint, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env if source else None,
        cwd=source,
    )  # -m looks in cwd first
    for line in proc.stderr:
        if "serving at" in line:
            return proc, int(line.split("serving at ")[1].split()[0].rstrip("/").rsplit(":", 1)[1])
    raise SystemExit(f"charrnn serve did not start (exit code {proc.wait()})")


def stream(port: int, seed: int) -> dict:
    """One streamed request: its status, text, and times (s) to the first character and to the end."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps({"prompt": PROMPT, "length": LENGTH, "seed": seed, "stream": True})
    conn.request("POST", "/v1/sample", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    first, text = None, []
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data:") and b'"text"' in line:
            if first is None:
                first = time.perf_counter() - t0
            text.append(json.loads(line[5:])["text"])
    conn.close()
    return {"status": r.status, "text": "".join(text), "first": first, "total": time.perf_counter() - t0}


REFERENCE = """
import sys, threading, time, charrnn
m = charrnn.load(sys.argv[1])
n, length, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m.samples(n, "ROMEO:", length=20, seed=seed)  # warm: kernel or torch step ready
rates = []
def run():
    t0 = time.perf_counter()
    m.samples(n, "ROMEO:", length=length, seed=seed)
    rates.append(n * length / (time.perf_counter() - t0))
run()
t = threading.Thread(target=run)
t.start()
t.join()
print(*rates)
"""


def reference(checkpoint: str, n: int, length: int, seed: int) -> float:
    """chars/s of ``n`` samples of ``length`` side by side, as `charrnn sample -N n` draws them,
    in a process of its own (start-up not counted), so that nothing of this one disturbs it.
    Timed on the main thread (as the CLI runs) and on another thread (as the server runs): on
    this loaded 2-core machine the kernel's two OpenMP threads ran several times faster when
    called from a thread other than the main one. The faster of the two is the reference."""
    out = subprocess.run(
        [sys.executable, "-c", REFERENCE, checkpoint, str(n), str(length), str(seed)],
        capture_output=True,
        text=True,
        check=True,
    )
    return max(float(x) for x in out.stdout.split())


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(-(-q * len(xs) // 100)) - 1))]


def load_round(port: int, want: dict[int, str], seed0: int) -> dict:
    results: dict[int, dict] = {}
    go = threading.Barrier(CLIENTS + 1)

    def client(seed: int) -> None:
        go.wait()
        results[seed] = stream(port, seed)

    threads = [threading.Thread(target=client, args=(seed0 + i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    served = sum(r["status"] == 200 and r["text"] == want[s] for s, r in results.items())
    totals, firsts = [r["total"] for r in results.values()], [r["first"] for r in results.values()]
    return {
        "served": served,
        "p50": pct(totals, 50),
        "p99": pct(totals, 99),
        "first_p50": pct(firsts, 50),
        "first_p99": pct(firsts, 99),
        "chars_per_s": sum(len(r["text"]) for r in results.values()) / wall,
    }


def report(name: str, rounds: list[dict]) -> None:
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(
        f"{name}: {CLIENTS} clients x {LENGTH} chars, medians of {len(rounds)} rounds: served "
        f"{min(r['served'] for r in rounds)}/{CLIENTS} in every round; p50/p99 latency {med['p50'] * 1e3:.0f}/"
        f"{med['p99'] * 1e3:.0f} ms; first character p50/p99 {med['first_p50'] * 1e3:.1f}/{med['first_p99'] * 1e3:.1f} ms; "
        f"{med['chars_per_s']:,.0f} chars/s against {med['batch']:,.0f} for `charrnn sample -N {CLIENTS}`: ratio "
        f"{med['ratio']:.2f} (goal: >= 0.5; rounds {min(r['ratio'] for r in rounds):.2f}-"
        f"{max(r['ratio'] for r in rounds):.2f}); one stream {med['single']:,.0f} chars/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--checkpoint", help="a 2x512 LSTM checkpoint (default: train one for a few steps)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", metavar="SRC", help="a charrnn source tree to serve side by side (before/after)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    checkpoint = args.checkpoint or make_checkpoint(tmp.name)
    model = charrnn.load(checkpoint)
    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; model: {model.info['layers']}x{model.info['hidden']} {model.info['cell']}"
    )

    servers = {"this": start_server(checkpoint)}
    if args.before:
        servers["before"] = start_server(checkpoint, args.before)
    try:
        for _, port in servers.values():
            stream(port, 0)  # warm
        rounds: dict[str, list[dict]] = {name: [] for name in servers}
        for i in range(args.rounds):
            seeds = range(1000 * (i + 1), 1000 * (i + 1) + CLIENTS)
            want = {s: model.sample(PROMPT, length=LENGTH, seed=s) for s in seeds}
            # The references, side by side with each round (the machine's load moves): the same
            # 16 x 500 characters as `charrnn sample -N 16` draws them, and one stream of 8,000.
            batch = reference(checkpoint, CLIENTS, LENGTH, i)
            single = reference(checkpoint, 1, CLIENTS * LENGTH, i)
            order = list(servers) if i % 2 == 0 else list(servers)[::-1]
            for name in order:
                r = load_round(servers[name][1], want, seeds[0])
                r["ratio"], r["batch"], r["single"] = r["chars_per_s"] / batch, batch, single
                rounds[name].append(r)
                print(
                    f"round {i + 1}, {name}: {r['served']}/{CLIENTS} served with the API's text; latency p50 "
                    f"{r['p50'] * 1e3:.0f} ms, p99 {r['p99'] * 1e3:.0f} ms; first character p50 {r['first_p50'] * 1e3:.1f} ms, "
                    f"p99 {r['first_p99'] * 1e3:.1f} ms; {r['chars_per_s']:,.0f} chars/s; "
                    f"sample -N {CLIENTS}: {batch:,.0f} chars/s (ratio {r['ratio']:.2f}); one stream: {single:,.0f}",
                    flush=True,
                )
        for name in servers:
            report(name, rounds[name])
        for name, (_, port) in servers.items():
            idle = [stream(port, 5000 + i)["first"] for i in range(30)]
            print(
                f"{name}: first streamed character, one request on a warm idle server: median "
                f"{statistics.median(idle) * 1e3:.1f} ms, p90 {pct(idle, 90) * 1e3:.1f} ms, max {max(idle) * 1e3:.1f} ms "
                f"(goal: <= 50 ms)"
            )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
