"""Sampling: engine.py (native kernel or torch, chosen once; the generation loop), decode.py (the
next-token rule), torch_step.py (the torch step), text.py (decoding, stop strings), native/ (the C kernel)."""
