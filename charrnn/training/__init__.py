"""Training: loop.py (train(): setup, then the loop), autosize.py (defaults sized to the budget)."""
