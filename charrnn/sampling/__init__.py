"""Sampling: engine.py (native kernel or torch, chosen once; the one generation loop), decode.py
(the next-token rule), torch_step.py (the torch step), text.py (decoding, stop strings),
batching.py (generations that share one multi-stream kernel: the server's continuous batching),
curate.py (is a sample a copy of the training data), native/ (the C kernel)."""
