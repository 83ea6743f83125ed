"""charrnn.js's WebAssembly kernel: ``kernel.c`` (the product, the widening and packing of the
weights) and ``build.py``, which compiles it with clang and embeds it in ``web/charrnn.js``."""
