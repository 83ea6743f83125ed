"""The native sampling kernel: build.py compiles kernels.c, abi.py declares it, kernel.py runs it,
pack.py packs a model for it (the only torch import here), cache.py keeps packs on disk."""
