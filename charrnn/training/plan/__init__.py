"""The budget chooser: autosize.py (every default a run leaves to charrnn, from the corpus, the
budget and the device; the loss model and the plan it picks), probe.py (timing candidate shapes
on this machine at the start of a budgeted run)."""
