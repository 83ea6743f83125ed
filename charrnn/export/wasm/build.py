"""Build kernel.c into WebAssembly and embed it in web/charrnn.js (the line ``const WASM = ...``).

    python charrnn/export/wasm/build.py           # rebuild and embed
    python charrnn/export/wasm/build.py --check   # exit 1 if charrnn.js holds another build

Needs clang and wasm-ld (Debian: apt-get install clang lld). Nothing builds this at install or
export time: charrnn.js carries the module, and tests/test_export_web.py checks that it is this
source's build where the same clang is at hand.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
JS = HERE.parent / "web" / "charrnn.js"
LINE = re.compile(r'^  const WASM = "([A-Za-z0-9+/=]*)"; // (.*)$', re.M)
FLAGS = [
    "--target=wasm32",
    "-O3",
    "-msimd128",
    "-nostdlib",
    "-Wl,--no-entry",
    "-Wl,--import-memory",
    "-Wl,--strip-all",
    "-Wl,--export=__heap_base",
]


def clang_version(clang: str = "clang") -> str:
    """The first line of ``clang --version``; raises OSError where there is no clang."""
    return subprocess.run([clang, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


def build(clang: str = "clang") -> bytes:
    """kernel.c as a WebAssembly module. Raises CalledProcessError where the build fails."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "kernel.wasm"
        subprocess.run([clang, *FLAGS, "-o", str(out), str(HERE / "kernel.c")], check=True)
        return out.read_bytes()


def embedded(js: str | None = None) -> tuple[bytes, str]:
    """(the module charrnn.js holds, the clang version it says built it)."""
    m = LINE.search(js if js is not None else JS.read_text(encoding="utf-8"))
    if m is None:
        raise ValueError(f"{JS} has no 'const WASM = \"...\"; // ...' line")
    return base64.b64decode(m.group(1)), m.group(2).removeprefix("built from kernel.c by ")


def main() -> int:
    wasm, version = build(), clang_version()
    if "--check" in sys.argv:
        held, by = embedded()
        same = held == wasm
        print(f"charrnn.js holds {'this' if same else 'another'} build ({by}; here: {version})")
        return 0 if same else 1
    js = JS.read_text(encoding="utf-8")
    line = f'  const WASM = "{base64.b64encode(wasm).decode()}"; // built from kernel.c by {version}'
    JS.write_text(LINE.sub(lambda _: line, js, count=1), encoding="utf-8")
    print(f"embedded {len(wasm)} bytes in {JS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
