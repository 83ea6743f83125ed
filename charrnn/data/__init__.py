"""The first stages of the flow, corpus -> tokens -> batches: corpus.py (inputs to token ids,
streamed), cache.py (the token cache on disk), tokenizer.py (the vocabulary, encode and decode),
vectorized.py (the tokenizers in numpy, for texts of any size), records.py (records and labels),
batches.py (the train/validation split and the (B, T) batches)."""
