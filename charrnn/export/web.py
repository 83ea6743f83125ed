"""The web export: a folder that samples a model in the browser, from disk or any static host.

    index.html         the playground (the page ``charrnn serve`` shows, here without a server)
    static/app.js      the page's script; static/style.css
    charrnn.js         the sampler: a global ``charrnn`` in a browser, ``module.exports`` in Node 18+
    weights.js         the model: its model.safetensors (weights.py), base64, in a script

Browsers refuse ``fetch`` and XHR of file:// URLs, but run scripts: so the weights arrive as a
script that sets ``globalThis.CHARRNN_WEIGHTS`` (and is ``module.exports`` under Node's
``require``), which works the same from disk and over http(s). The static files are the ones in
``web/``, copied as they are; nothing is fetched from elsewhere.
"""

from __future__ import annotations

import base64
from pathlib import Path

from charrnn.export.weights import Source, to_bytes

WEB = Path(__file__).parent / "web"
"""The page and charrnn.js, as ``charrnn serve`` and the export both use them."""
PAGE = ["index.html", "charrnn.js", "static/app.js", "static/style.css"]


def weights_script(data: bytes, name: str, precision: str) -> bytes:
    """``weights.js``: the bytes of a model.safetensors as a base64 string in a classic script."""
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f"// {_comment(name)} for charrnn.js: model.safetensors ({precision}) in base64. Written by charrnn export.\n"
        '(function (w) { if (typeof module === "object" && module.exports) module.exports = w;'
        " else globalThis.CHARRNN_WEIGHTS = w; })(\n"
        f'"{b64}");\n'
    ).encode("ascii")


def _comment(name: str) -> str:
    """The model's name, safe inside a // comment of an ASCII file."""
    return "The weights of " + "".join(c if " " <= c <= "~" else "?" for c in name)[:80]


def write(src: Source, out: Path, precision: str) -> list[Path]:
    """The folder's files, each written atomically (an open page keeps working while they change)."""
    from charrnn.files import atomic_write

    files = []
    for name in PAGE:
        data = (WEB / name).read_bytes()
        atomic_write(out / name, lambda f, data=data: f.write(data), sync=False)
        files.append(out / name)
    script = weights_script(to_bytes(src, precision), src.info.get("name") or "a model", precision)
    atomic_write(out / "weights.js", lambda f: f.write(script), sync=False)
    return files + [out / "weights.js"]
