"""The model: lm.py (embedding -> recurrent layers -> head, ``RNNLM``), loss.py (the training
loss, chunked over positions for large vocabularies). It does no I/O."""
