"""charrnn: learn the style of a text with a recurrent network and write more of it.

    import charrnn
    model = charrnn.load("checkpoints/shakespeare")
    print(model.sample("ROMEO:", length=200, temperature=0.7, seed=1))
    charrnn.plot("checkpoints/shakespeare")               # loss curves, a matplotlib Figure (the plot extra)
    charrnn.serve("checkpoints/shakespeare", port=8000)   # the web page and API (the serve extra)

The public names are imported on first use (PEP 562), so ``import charrnn`` and
``charrnn --help`` never import torch.
"""

from __future__ import annotations

from charrnn.runtime.threads import quiet_waits

quiet_waits()  # before torch or the kernels load their OpenMP runtime

__version__ = "0.2.0"

_PUBLIC = {
    "load": "charrnn.api",
    "train": "charrnn.api",
    "CharRNN": "charrnn.api",
    "TrainResult": "charrnn.api",
    "plot": "charrnn.curves",
    "Sample": "charrnn.sampling.curate",
    "Draw": "charrnn.sampling.curate",
    "Score": "charrnn.evaluate",
    "LineScore": "charrnn.evaluate",
    "RunConfig": "charrnn.config",
    "SampleConfig": "charrnn.config",
    "CharrnnError": "charrnn.errors",
    "UsageError": "charrnn.errors",
    "app": "charrnn.server.app",
    "serve": "charrnn.server.app",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
