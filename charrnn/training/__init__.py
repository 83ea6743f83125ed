"""Training: setup.py (setting a run up in small named steps), loop.py (train(): setup, then fit),
state.py (all of best.pt/last.pt, saved and restored in one place), budget.py (the clock and
the learning-rate schedule), run_folder.py (the run's files and lock), watch.py (samples,
patience, kept checkpoints), report.py (what a run tells whoever watches it), plan/ (the
defaults sized to the budget: autosize.py, and probe.py, which times candidates)."""
