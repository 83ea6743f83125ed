"""Process tuning, apart from the flow: device.py (device and precision), threads.py (OpenMP
waits and the 1-or-all thread choice), allocator.py (glibc malloc thresholds), ranks.py (torchrun
collectives). Nothing here knows about corpora, models or checkpoints."""
