"""Training: loop.py (train(): setup, then fit), state.py (best.pt/last.pt, saved and restored in
one place), budget.py (the clock and the schedule), run_folder.py (the run's files and lock),
autosize.py and probe.py (defaults sized to the budget by measurement), watch.py (samples,
patience, kept checkpoints)."""
