"""``charrnn export``: a checkpoint as files that sample without charrnn, Python or a server.

- ``web``: a folder that works from disk (file://) and from any static host: ``index.html`` (the
  playground, the page ``charrnn serve`` shows too), ``charrnn.js`` (the sampler, for a browser or
  Node 18+) and ``weights.js`` (the model). ``web.py`` writes it; ``web/`` holds the static files.
- ``onnx``: ``model.onnx``, one step of the network for any ONNX runtime, and ``tokenizer.json``
  (``onnx.py``).
- ``safetensors``: ``model.safetensors``, the weights and all that describes them (``weights.py``);
  the web export's weights are this file, base64-encoded.

The optional packages come with ``pip install 'charrnn[export]'`` (safetensors, onnx, onnxruntime).
"""

from __future__ import annotations

from pathlib import Path

from charrnn.errors import CharrnnError, UsageError

FORMATS = ("web", "onnx", "safetensors")
PRECISIONS = ("fp16", "fp32")
HINT = "charrnn export needs the export extra: pip install 'charrnn[export]'"
_NEEDS = {"web": ("safetensors",), "safetensors": ("safetensors",), "onnx": ("onnx",)}


def require(format: str) -> None:
    """Raises CharrnnError with the install hint when a package ``format`` needs is missing."""
    import importlib

    for name in _NEEDS[format]:
        try:
            importlib.import_module(name)
        except ImportError:
            raise CharrnnError(f"{HINT} ({name} is missing)") from None


def export(
    checkpoint: str | Path | None,
    out: str | Path,
    format: str = "web",
    precision: str = "fp16",
    step: int | None = None,
) -> list[Path]:
    """Write ``checkpoint`` (a .pt file, a run folder, None for the newest best.pt; ``step``: the
    run folder's checkpoint of that step) as ``format`` into the folder ``out`` (made if missing;
    files of the same names are replaced, each atomically). ``precision``: the stored weights,
    fp16 (half the size) or fp32 (the same text as ``charrnn sample --precision fp32``).
    Returns the files written. Raises UsageError for an unknown format or precision or an
    ``out`` that is a file, CharrnnError for a missing or damaged checkpoint, a missing extra,
    or a write the disk refuses."""
    from charrnn.checkpoint import load, resolve
    from charrnn.export import weights

    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be fp16 or fp32, not {precision!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder (it is made if missing)")
    require(format)
    src = weights.Source.from_checkpoint(load(resolve(checkpoint, step)))
    try:
        if format == "safetensors":
            return weights.write(src, out, precision)
        if format == "web":
            from charrnn.export import web

            return web.write(src, out, precision)
        from charrnn.export import onnx

        return onnx.write(src, out, precision)
    except OSError as e:
        raise CharrnnError(
            f"cannot write to {out}: {e.strerror or e}; choose another --out or free some space"
        ) from None


def default_out(checkpoint: str | Path | None, format: str, step: int | None = None) -> Path:
    """``<run name>-<format>`` in the current folder: the run folder's name (a .pt file's stem
    outside a run folder)."""
    from charrnn.checkpoint import resolve
    from charrnn.export.weights import run_name

    return Path(f"{run_name(resolve(checkpoint, step))}-{format}")
