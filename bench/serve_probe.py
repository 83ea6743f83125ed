"""Malformed requests against a live `charrnn serve` on loopback: every one must be answered with a
4xx JSON error that names the field or the body (never a 5xx, never a hang).

    python bench/serve_probe.py -c CHECKPOINT

Starts the server on 127.0.0.1 and a free port, sends each request once (bounded: one request
per case, a 30 s timeout each), prints a line per case (status, field, the first words of the
message) and a last line counting them; exits 1 when any answer was not a 4xx JSON error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys

J = {"content-type": "application/json"}

CASES: list[tuple[str, str, str, bytes, dict]] = [
    ("not JSON", "POST", "/v1/sample", b"{nope", J),
    ("empty body", "POST", "/v1/sample", b"", J),
    ("not UTF-8", "POST", "/v1/sample", b'{"prompt": "\xff"}', J),
    ("a list, not an object", "POST", "/v1/sample", b"[1, 2]", J),
    ("a string, not an object", "POST", "/v1/score", b'"text"', J),
    ("nested 2000 deep", "POST", "/v1/sample", b"[" * 2000 + b"]" * 2000, J),
    ("objects nested 2000 deep", "POST", "/v1/next", b'{"a":' * 2000 + b"1" + b"}" * 2000, J),
    ("an integer of 5000 digits", "POST", "/v1/sample", b'{"length": ' + b"9" * 5000 + b"}", J),
    ("NaN", "POST", "/v1/sample", b'{"temperature": NaN}', J),
    ("Infinity", "POST", "/v1/sample", b'{"temperature": Infinity}', J),
    ("a lone surrogate as a field name", "POST", "/v1/sample", b'{"\\ud800": 1}', J),
    ("a lone surrogate in a prompt", "POST", "/v1/sample", b'{"prompt": "To be\\ud800"}', J),
    (
        "a lone surrogate in a text to score, per line",
        "POST",
        "/v1/score",
        b'{"text": "To be\\ud800\\nor not", "per_line": true}',
        J,
    ),
    (
        "the same, unknown skip",
        "POST",
        "/v1/score",
        b'{"text": "To be\\ud800\\nor not", "per_line": true, "unknown": "skip"}',
        J,
    ),
    ("a lone surrogate in a stop string", "POST", "/v1/sample", b'{"stop": "\\udfff"}', J),
    ("a lone surrogate in a model name", "POST", "/v1/next", b'{"model": "\\ud800"}', J),
    ("an unknown field", "POST", "/v1/sample", b'{"promt": "x"}', J),
    ("a negative length", "POST", "/v1/sample", b'{"length": -1}', J),
    ("a length over the limit", "POST", "/v1/sample", b'{"length": 100000000}', J),
    ("a seed of 2^64", "POST", "/v1/sample", b'{"seed": 18446744073709551616}', J),
    ("a boolean for n", "POST", "/v1/sample", b'{"n": true}', J),
    ("top_p 0", "POST", "/v1/sample", b'{"top_p": 0}', J),
    ("an empty stop", "POST", "/v1/sample", b'{"stop": ""}', J),
    ("an unknown model", "POST", "/v1/sample", b'{"model": "nope"}', J),
    ("a label on a free-text model", "POST", "/v1/sample", b'{"label": "x"}', J),
    ("no text to score", "POST", "/v1/score", b"{}", J),
    ("k of 0", "POST", "/v1/next", b'{"k": 0}', J),
    ("an unseen prompt character", "POST", "/v1/next", b'{"prompt": "\\u0e01"}', J),
    ("form data", "POST", "/v1/sample", b"prompt=x", {"content-type": "application/x-www-form-urlencoded"}),
    ("no content type", "POST", "/v1/sample", b"{}", {}),
    ("a declared body over the limit", "POST", "/v1/sample", b"{}", {**J, "content-length": str(10**9)}),
    ("GET on a POST route", "GET", "/v1/sample", b"", {}),
    ("an unknown path", "GET", "/v2/nothing", b"", {}),
    ("a foreign Host", "GET", "/v1/models", b"", {"host": "evil.example"}),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--checkpoint", required=True)
    args = ap.parse_args()
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", "-c", args.checkpoint, "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    bad = 0
    try:
        line = ""
        while "serving at" not in line:
            line = proc.stderr.readline()
            if not line:
                sys.exit("charrnn serve did not start")
        port = int(line.split("serving at ")[1].split()[0].rstrip("/").rsplit(":", 1)[1])
        for name, method, path, body, headers in CASES:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.putrequest(method, path, skip_host="host" in headers, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            if "content-length" not in headers:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders()
            if body and "content-length" not in headers:
                conn.send(body)
            r = conn.getresponse()
            raw = r.read()
            conn.close()
            try:
                err = json.loads(raw.decode("ascii"))["error"]
                ok = 400 <= r.status < 500 and err.get("message")
                shown = f"field {err.get('field')!r}: {err.get('message', '')[:70]}"
            except (ValueError, KeyError, TypeError):
                ok, shown = False, f"not a JSON error: {raw[:70]!r}"
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {r.status} {name:<48} {shown}")
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"{len(CASES) - bad} of {len(CASES)} malformed requests answered with a 4xx JSON error")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
